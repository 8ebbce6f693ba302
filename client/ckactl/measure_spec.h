// Parsing of ckactl's --measure specs: "name:kernel:estimator[:threshold]",
// e.g. "lin:linear:unbiased", "rbf05:rbf:biased:0.5", "ex:linear:exact"; and
// "name:kind" for the comparison family, e.g. "cca:cca_r2",
// "reg:regression_r2".
#ifndef CKA_CLIENT_CKACTL_MEASURE_SPEC_H_
#define CKA_CLIENT_CKACTL_MEASURE_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "cka/v1/similarity.pb.h"

namespace cka::ckactl {

// Returns the measure of `spec`. kernel: linear|rbf; estimator:
// unbiased|biased|exact| exact_debiased (default unbiased); threshold: required
// for rbf, a positive number. Or "name:kind" with kind one of cca_r2,
// cca_mean_rho, svcca, pwcca, regression_r2, procrustes (kernel linear,
// estimator exact; the session needs declared streams). InvalidArgument naming
// the spec and the part that is wrong.
absl::StatusOr<v1::Measure> ParseMeasureSpec(const std::string& spec);

// Returns the spec text of `measure` ("name:kernel:estimator[:threshold]", or
// "name:kind" for the comparison family).
std::string MeasureSpec(const v1::Measure& measure);

}  // namespace cka::ckactl

#endif  // CKA_CLIENT_CKACTL_MEASURE_SPEC_H_
