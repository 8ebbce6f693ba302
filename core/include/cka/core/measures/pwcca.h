// Projection-weighted CCA of two streams from their second moments
// (core/MATH.md, "PWCCA").
//
// Layout and errors: see pair_moments.h. Thread-safe; pure function.
#ifndef CKA_CORE_MEASURES_PWCCA_H_
#define CKA_CORE_MEASURES_PWCCA_H_

#include <vector>

#include "absl/status/statusor.h"
#include "cka/core/measures/pair_moments.h"

namespace cka::core {

// Canonical correlations that differ by at most this are one multiple
// correlation, whose canonical variates are not unique (core/MATH.md,
// "PWCCA"): PWCCA weighs their span as a whole.
inline constexpr double kPwccaCoincident = 1e-6;

struct PwccaSimilarity {
  double value = 0;            // Σ α_i·ρ_i / Σ α_i
  std::vector<double> rho;     // p canonical correlations, descending
  std::vector<double> alpha;   // p weights, α_i for ρ_i
  bool weights_from_x = true;  // the side whose neurons give the weights
};

// Returns PWCCA after Morcos et al.: the canonical correlations ρ_i of CCA,
// weighted by α_i = Σ_j |⟨h_i, z_j⟩| where z_j are the centred neurons
// (columns) of the side with fewer kept dimensions (X when the ranks are
// equal) and h_i its unit-norm canonical variates. A run of correlations
// within kPwccaCoincident of each other shares the weight Σ_j ‖H_cᵀ·z_j‖₂
// of its variates H_c equally. InvalidArgument for malformed moments;
// FailedPrecondition when X or Y has no variance.
absl::StatusOr<PwccaSimilarity> Pwcca(const PairMoments& moments);

}  // namespace cka::core

#endif  // CKA_CORE_MEASURES_PWCCA_H_
