#include "cka/core/measures/procrustes.h"

#include <cmath>

#include "Eigen/SVD"
#include "measures/moment_algebra.h"

namespace cka::core {

using measures_internal::CentredPair;
using measures_internal::CentreWithSpectra;

absl::StatusOr<double> ProcrustesSimilarity(const PairMoments& moments) {
  // The spectra only apply the rank rule's no-variance test, as in every
  // measure of the family.
  absl::StatusOr<CentredPair> c =
      CentreWithSpectra(moments, "orthogonal Procrustes");
  if (!c.ok()) return c.status();
  const double nuclear =
      Eigen::BDCSVD<Eigen::MatrixXd>(c->moments.xy).singularValues().sum();
  return nuclear / std::sqrt(c->moments.xx.trace() * c->moments.yy.trace());
}

}  // namespace cka::core
