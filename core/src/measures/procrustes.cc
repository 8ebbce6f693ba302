#include "cka/core/measures/procrustes.h"

#include <cmath>

#include "Eigen/SVD"
#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;

namespace measures_internal {

double ProcrustesOf(const CentredPair& c) {
  // Both streams as the rank rule sees them: C_xy projected onto the kept
  // directions, traces as sums of kept eigenvalues.
  const Eigen::MatrixXd cross =
      c.x.vectors.transpose() * c.moments.xy * c.y.vectors;
  const double nuclear =
      Eigen::BDCSVD<Eigen::MatrixXd>(cross).singularValues().sum();
  return nuclear / std::sqrt(c.x.total * c.y.total);
}

}  // namespace measures_internal

absl::StatusOr<double> ProcrustesSimilarity(const PairMoments& moments) {
  absl::StatusOr<CentredPair> c =
      CentreWithSpectra(moments, "orthogonal Procrustes");
  if (!c.ok()) return c.status();
  return measures_internal::ProcrustesOf(*c);
}

}  // namespace cka::core
