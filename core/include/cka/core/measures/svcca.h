// SVCCA of two streams from their second moments (core/MATH.md, "SVCCA").
//
// Layout and errors: see pair_moments.h. Thread-safe; pure function.
#ifndef CKA_CORE_MEASURES_SVCCA_H_
#define CKA_CORE_MEASURES_SVCCA_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"

namespace cka::core {

struct SvccaSimilarity {
  double value = 0;         // Σ ρ_i / min(k, m)
  std::vector<double> rho;  // min(k, m) canonical correlations, descending
  int64_t kept_x = 0;       // k: leading directions of Cxx kept
  int64_t kept_y = 0;       // m: leading directions of Cyy kept
};

// Returns SVCCA: on each side, keeps the fewest leading eigen-directions of
// the centred moment (λ descending) whose eigenvalues sum to at least
// kSvccaVarianceShare of the eigenvalues the rank rule keeps, then takes the
// canonical correlations of the kept directions. InvalidArgument for malformed
// moments; FailedPrecondition when X or Y has no variance.
absl::StatusOr<SvccaSimilarity> Svcca(const PairMoments& moments);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_SVCCA_H_
