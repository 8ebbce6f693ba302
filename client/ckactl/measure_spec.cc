#include "ckactl/measure_spec.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cka::ckactl {
namespace {

// The comparison family by spec name (core/MATH.md).
constexpr std::pair<const char*, v1::MeasureKind> kKinds[] = {
    {"cca_r2", v1::CCA_R2},
    {"cca_mean_rho", v1::CCA_MEAN_RHO},
    {"svcca", v1::SVCCA},
    {"pwcca", v1::PWCCA},
    {"regression_r2", v1::REGRESSION_R2},
    {"procrustes", v1::PROCRUSTES},
};

}  // namespace

absl::StatusOr<v1::Measure> ParseMeasureSpec(const std::string& spec) {
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  auto bad = [&spec](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("--measure '", spec, "': ", what,
                     " (expected name:kernel:estimator[:threshold], e.g. "
                     "lin:linear:unbiased or rbf05:rbf:biased:0.5, or "
                     "name:kind with kind cca_r2, cca_mean_rho, svcca, pwcca, "
                     "regression_r2 or procrustes)"));
  };
  if (parts.size() < 2 || parts.size() > 4)
    return bad("wrong number of ':'-separated parts");
  v1::Measure measure;
  if (parts[0].empty()) return bad("empty name");
  measure.set_name(parts[0]);
  const std::string kernel = absl::AsciiStrToLower(parts[1]);
  for (const auto& [name, kind] : kKinds) {
    if (kernel != name) continue;
    if (parts.size() != 2) {
      return bad(absl::StrCat("kind '", parts[1],
                              "' takes no kernel, estimator or threshold"));
    }
    measure.set_kernel(v1::LINEAR);
    measure.set_estimator(v1::EXACT);
    measure.set_kind(kind);
    return measure;
  }
  if (kernel == "linear") {
    measure.set_kernel(v1::LINEAR);
  } else if (kernel == "rbf") {
    measure.set_kernel(v1::RBF);
  } else {
    return bad(absl::StrCat("kernel '", parts[1],
                            "' is not linear or rbf, nor a measure kind"));
  }
  const std::string estimator =
      parts.size() > 2 ? absl::AsciiStrToLower(parts[2]) : "unbiased";
  if (estimator == "unbiased") {
    measure.set_estimator(v1::UNBIASED);
  } else if (estimator == "biased") {
    measure.set_estimator(v1::BIASED);
  } else if (estimator == "exact") {
    measure.set_estimator(v1::EXACT);
  } else if (estimator == "exact_debiased") {
    measure.set_estimator(v1::EXACT_DEBIASED);
  } else {
    return bad(
        absl::StrCat("estimator '", parts[2],
                     "' is not unbiased, biased, exact or exact_debiased"));
  }
  if (parts.size() == 4) {
    double threshold = 0;
    if (!absl::SimpleAtod(parts[3], &threshold) || !std::isfinite(threshold) ||
        threshold <= 0) {
      return bad(
          absl::StrCat("threshold '", parts[3], "' is not a positive number"));
    }
    measure.set_rbf_threshold(threshold);
  } else if (measure.kernel() == v1::RBF) {
    return bad("an rbf measure needs a threshold");
  }
  return measure;
}

std::string MeasureSpec(const v1::Measure& measure) {
  for (const auto& [name, kind] : kKinds) {
    if (measure.kind() == kind) return absl::StrCat(measure.name(), ":", name);
  }
  std::string kernel = measure.kernel() == v1::RBF ? "rbf" : "linear";
  std::string estimator;
  switch (measure.estimator()) {
    case v1::BIASED:
      estimator = "biased";
      break;
    case v1::EXACT:
      estimator = "exact";
      break;
    case v1::EXACT_DEBIASED:
      estimator = "exact_debiased";
      break;
    default:
      estimator = "unbiased";
  }
  std::string out = absl::StrCat(measure.name(), ":", kernel, ":", estimator);
  if (measure.kernel() == v1::RBF)
    absl::StrAppend(&out, ":", measure.rbf_threshold());
  return out;
}

}  // namespace cka::ckactl
