// Canonical correlation analysis of two streams from their second moments
// (core/MATH.md, "CCA").
//
// Layout and errors: see pair_moments.h. Thread-safe; pure function.
#ifndef CKA_CORE_MEASURES_CCA_H_
#define CKA_CORE_MEASURES_CCA_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"

namespace cka::core {

struct CcaSimilarity {
  double r2 = 0;            // R²_CCA = Σ ρ_i² / p
  double mean_rho = 0;      // ρ̄_CCA = Σ ρ_i / p
  std::vector<double> rho;  // p canonical correlations, descending
  int64_t rank_x = 0;       // r_x, eigenvalues of Cxx kept by the rank rule
  int64_t rank_y = 0;       // r_y; p = min(r_x, r_y)
  // max(0, r_x + r_y − (N − 1)): this many ρ are 1 whatever the data, because
  // the centred columns of both streams span subspaces of one (N − 1)-space
  // that must meet. Non-zero means the value says little about the streams.
  int64_t forced_unit = 0;
};

// Returns the canonical correlations of X and Y: the singular values ρ of
// T = Cxx^{-1/2}·Cxy·Cyy^{-1/2}, inverse roots over the kept eigenpairs only.
// InvalidArgument for malformed moments; FailedPrecondition when X or Y has no
// variance (rank 0).
absl::StatusOr<CcaSimilarity> Cca(const PairMoments& moments);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_CCA_H_
