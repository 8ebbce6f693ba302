#include "cka/core/measures/pwcca.h"

#include <cstdint>

#include "measures/lapack.h"
#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::Canonical;
using measures_internal::CanonicalCorrelations;
using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;
using measures_internal::KeptSpectrum;

namespace measures_internal {

absl::StatusOr<PwccaSimilarity> PwccaOf(const CentredPair& c) {
  absl::StatusOr<Canonical> solved =
      CanonicalCorrelations(c.x, c.y, c.moments.xy, /*vectors=*/true);
  if (!solved.ok()) return solved.status();
  const Canonical& canonical = *solved;
  PwccaSimilarity out;
  out.weights_from_x = c.x.values.size() <= c.y.values.size();
  const KeptSpectrum& side = out.weights_from_x ? c.x : c.y;
  const Eigen::MatrixXd& u = out.weights_from_x ? canonical.a : canonical.b;
  // ⟨h_i, z_j⟩ = (C^{1/2}·u_i)_j with u_i = U·a_i in the stream's coordinates:
  // row j, column i (d × p).
  const Eigen::MatrixXd projections = Multiply(
      side.vectors, false, side.values.cwiseSqrt().asDiagonal() * u, false);
  // Correlations that coincide share one weight, Σ_j ‖row j of their
  // columns‖₂, which no choice of their singular vectors changes; for a
  // correlation of its own it is the paper's α_i = Σ_j |⟨h_i, z_j⟩|.
  const Eigen::VectorXd& rho = canonical.rho;
  const int64_t p = rho.size();
  Eigen::VectorXd alpha(p);
  for (int64_t begin = 0; begin < p;) {
    int64_t end = begin + 1;
    while (end < p && rho(end - 1) - rho(end) <= kPwccaCoincident) ++end;
    const double weight =
        projections.middleCols(begin, end - begin).rowwise().norm().sum();
    alpha.segment(begin, end - begin).setConstant(weight / (end - begin));
    begin = end;
  }
  out.value = alpha.dot(rho) / alpha.sum();
  out.rho.assign(canonical.rho.data(),
                 canonical.rho.data() + canonical.rho.size());
  out.alpha.assign(alpha.data(), alpha.data() + alpha.size());
  return out;
}

}  // namespace measures_internal

absl::StatusOr<PwccaSimilarity> Pwcca(const PairMoments& moments) {
  absl::StatusOr<CentredPair> c = CentreWithSpectra(moments, "PWCCA");
  if (!c.ok()) return c.status();
  return measures_internal::PwccaOf(*c);
}

}  // namespace cka::core
