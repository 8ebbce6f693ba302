#include "cka/core/measures/procrustes.h"

#include <cmath>

#include "measures/lapack.h"
#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;

namespace measures_internal {

absl::StatusOr<double> ProcrustesOf(const CentredPair& c) {
  // Both streams as the rank rule sees them: C_xy projected onto the kept
  // directions, traces as sums of kept eigenvalues.
  Eigen::MatrixXd cross =
      Multiply(Multiply(c.x.vectors, /*transpose_a=*/true, c.moments.xy, false),
               false, c.y.vectors, false);
  absl::StatusOr<Svd> svd = SingularValueDecomposition(&cross, false);
  if (!svd.ok()) return svd.status();
  return svd->values.sum() / std::sqrt(c.x.total * c.y.total);
}

}  // namespace measures_internal

absl::StatusOr<double> ProcrustesSimilarity(const PairMoments& moments) {
  absl::StatusOr<CentredPair> c =
      CentreWithSpectra(moments, "orthogonal Procrustes");
  if (!c.ok()) return c.status();
  return measures_internal::ProcrustesOf(*c);
}

}  // namespace cka::core
