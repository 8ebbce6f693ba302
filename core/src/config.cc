#include "cka/core/config.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cka::core {

bool IsExact(Estimator estimator) {
  return estimator == Estimator::kExact ||
         estimator == Estimator::kExactDebiased;
}

bool IsMomentKind(MeasureKind kind) { return kind != MeasureKind::kCka; }

const char* MeasureKindName(MeasureKind kind) {
  switch (kind) {
    case MeasureKind::kCka:
      return "cka";
    case MeasureKind::kCcaR2:
      return "cca_r2";
    case MeasureKind::kCcaMeanRho:
      return "cca_mean_rho";
    case MeasureKind::kSvcca:
      return "svcca";
    case MeasureKind::kPwcca:
      return "pwcca";
    case MeasureKind::kRegressionR2:
      return "regression_r2";
    case MeasureKind::kProcrustes:
      return "procrustes";
  }
  return "unknown";
}

const char* KernelName(Kernel kernel) {
  switch (kernel) {
    case Kernel::kLinear:
      return "linear";
    case Kernel::kRbf:
      return "rbf";
  }
  return "unknown";
}

const char* EstimatorName(Estimator estimator) {
  switch (estimator) {
    case Estimator::kUnbiased:
      return "unbiased";
    case Estimator::kBiased:
      return "biased";
    case Estimator::kExact:
      return "exact";
    case Estimator::kExactDebiased:
      return "exact_debiased";
  }
  return "unknown";
}

bool operator==(const Measure& a, const Measure& b) {
  return a.name == b.name && a.kernel == b.kernel &&
         a.estimator == b.estimator && a.kind == b.kind &&
         (a.kernel != Kernel::kRbf || a.rbf_threshold == b.rbf_threshold);
}

bool operator==(const SessionConfig& a, const SessionConfig& b) {
  return a.measures == b.measures && a.streams == b.streams &&
         a.stream_widths == b.stream_widths && a.step_bucket == b.step_bucket &&
         a.expected_sources == b.expected_sources &&
         a.join_window == b.join_window;
}

std::vector<Measure> DefaultMeasures() {
  return {Measure{"linear", Kernel::kLinear, 0.0, Estimator::kUnbiased}};
}

SessionConfig WithDefaults(SessionConfig config) {
  if (config.measures.empty()) config.measures = DefaultMeasures();
  if (config.streams.empty() && config.join_window == 0) {
    config.join_window = kDefaultJoinWindow;
  }
  return config;
}

absl::Status ValidateName(const char* what, const std::string& name) {
  if (name.empty())
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s '%s...' is %d bytes long, more than the limit of %d", what,
        name.substr(0, 32), name.size(), kMaxNameBytes));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s '%s' contains the control character 0x%02x", what,
                          absl::CEscape(name), c));
    }
  }
  return absl::OkStatus();
}

std::string StreamName(const std::string& source, const std::string& layer) {
  return source.empty() ? layer : absl::StrCat(source, "/", layer);
}

absl::Status ValidateConfig(const SessionConfig& config) {
  if (config.measures.empty()) {
    return absl::InvalidArgumentError("config.measures is empty");
  }
  if (config.measures.size() > kMaxMeasures) {
    return absl::InvalidArgumentError(
        absl::StrFormat("config.measures has %d measures, more than the limit "
                        "of %d per session",
                        config.measures.size(), kMaxMeasures));
  }
  absl::flat_hash_set<std::string> names;
  bool has_exact = false;
  for (const Measure& m : config.measures) {
    if (absl::Status s = ValidateName("measure name", m.name); !s.ok())
      return s;
    if (!names.insert(m.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("measure name '", m.name, "' appears more than once"));
    }
    if (m.kernel != Kernel::kLinear && m.kernel != Kernel::kRbf) {
      return absl::InvalidArgumentError(
          absl::StrCat("measure '", m.name, "': unknown kernel ",
                       static_cast<int>(m.kernel)));
    }
    if (m.estimator < Estimator::kUnbiased ||
        m.estimator > Estimator::kExactDebiased) {
      return absl::InvalidArgumentError(
          absl::StrCat("measure '", m.name, "': unknown estimator ",
                       static_cast<int>(m.estimator)));
    }
    if (m.kernel == Kernel::kRbf &&
        !(m.rbf_threshold > 0 && std::isfinite(m.rbf_threshold))) {
      return absl::InvalidArgumentError(
          absl::StrCat("measure '", m.name, "': rbf_threshold ",
                       m.rbf_threshold, " must be a finite number > 0"));
    }
    if (m.kind < MeasureKind::kCka || m.kind > kLastMeasureKind) {
      return absl::InvalidArgumentError(absl::StrCat(
          "measure '", m.name, "': unknown kind ", static_cast<int>(m.kind),
          "; expected 1 to ", static_cast<int>(kLastMeasureKind)));
    }
    if (IsMomentKind(m.kind) && m.kernel != Kernel::kLinear) {
      return absl::InvalidArgumentError(absl::StrCat(
          "measure '", m.name, "': kind ", MeasureKindName(m.kind),
          " is computed from the feature-space second moments and needs "
          "kernel linear, not ",
          KernelName(m.kernel)));
    }
    if (IsMomentKind(m.kind) && m.estimator != Estimator::kExact) {
      return absl::InvalidArgumentError(absl::StrCat(
          "measure '", m.name, "': kind ", MeasureKindName(m.kind),
          " is computed from the feature-space sums over every row and needs "
          "estimator exact, not ",
          EstimatorName(m.estimator)));
    }
    if (IsExact(m.estimator)) {
      has_exact = true;
      if (m.kernel != Kernel::kLinear) {
        return absl::InvalidArgumentError(absl::StrCat(
            "measure '", m.name, "': estimator ", EstimatorName(m.estimator),
            " is feature-space linear CKA and needs kernel linear, not ",
            KernelName(m.kernel)));
      }
    }
  }
  if (has_exact && config.streams.empty()) {
    return absl::InvalidArgumentError(
        "config.streams is empty, but the exact estimators and the moment "
        "measures (CCA, SVCCA, PWCCA, regression, Procrustes) need the "
        "session's streams declared");
  }
  absl::flat_hash_set<std::string> streams;
  for (const std::string& s : config.streams) {
    if (absl::Status st = ValidateName("stream", s); !st.ok()) return st;
    if (!streams.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("stream '", s, "' is declared more than once"));
    }
  }
  if (!config.stream_widths.empty()) {
    if (config.stream_widths.size() != config.streams.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config.stream_widths has %d entries but "
                          "config.streams has %d; give one width per "
                          "stream or none",
                          config.stream_widths.size(), config.streams.size()));
    }
    for (size_t i = 0; i < config.stream_widths.size(); ++i) {
      if (config.stream_widths[i] < 0 ||
          config.stream_widths[i] > (int64_t{1} << 40)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config.stream_widths: stream '", config.streams[i], "' has width ",
            config.stream_widths[i], "; expected 0 (unknown) to 2^40"));
      }
    }
  }
  if (config.step_bucket < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.step_bucket is ", config.step_bucket,
                     "; expected >= 0 (0 = one bucket)"));
  }
  if (!config.expected_sources.empty() && !config.streams.empty()) {
    return absl::InvalidArgumentError(
        "config.expected_sources is set, but so are config.streams: declared "
        "streams already say what every batch waits for; give one or the "
        "other");
  }
  absl::flat_hash_set<std::string> sources;
  for (const std::string& s : config.expected_sources) {
    if (!s.empty()) {
      if (absl::Status st = ValidateName("expected source", s); !st.ok())
        return st;
      if (s.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expected source '", s,
            "' contains '/'; a source is the part of a stream name before it"));
      }
    }
    if (!sources.insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected source '", s, "' is named more than once"));
    }
  }
  if (config.streams.empty() &&
      (config.join_window < 1 || config.join_window > kMaxJoinWindow)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "config.join_window is %d; expected 1 to %d batches (0 in a request: "
        "the default, %d)",
        config.join_window, kMaxJoinWindow, kDefaultJoinWindow));
  }
  if (!config.streams.empty() && config.join_window != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "config.join_window is %d, but the session declares its streams, whose "
        "batches wait until all of them arrived; leave it 0",
        config.join_window));
  }
  return absl::OkStatus();
}

}  // namespace cka::core
