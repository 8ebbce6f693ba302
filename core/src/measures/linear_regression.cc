#include "cka/core/measures/linear_regression.h"

#include "absl/status/status.h"
#include "measures/lapack.h"
#include "measures/moment_algebra.h"

namespace cka::core {

namespace measures_internal {

double RegressionOf(const Eigen::MatrixXd& cross, const KeptSpectrum* p,
                    const KeptSpectrum& q) {
  if (p == nullptr) return 0.0;
  // tr(C_QP·C_PP⁺·C_PQ) = ‖Λ_P^{-1/2}·U_Pᵀ·C_PQ‖²_F over the kept eigenpairs,
  // with Q, like P, seen through its kept directions (tr C_QQ = Σ kept λ).
  Eigen::MatrixXd explained =
      Multiply(Multiply(p->vectors, /*transpose_a=*/true, cross, false), false,
               q.vectors, false);
  explained.array().colwise() *= p->values.cwiseSqrt().cwiseInverse().array();
  return explained.squaredNorm() / q.total;
}

}  // namespace measures_internal

using measures_internal::Centre;
using measures_internal::CentredMoments;
using measures_internal::KeptSpectrum;
using measures_internal::Spectrum;

absl::StatusOr<double> LinearRegressionR2(const PairMoments& moments,
                                          RegressionDirection direction) {
  const bool x_predicts = direction == RegressionDirection::kXPredictsY;
  const char* measure = x_predicts ? "linear regression R²(X → Y)"
                                   : "linear regression R²(Y → X)";
  absl::StatusOr<CentredMoments> c = Centre(moments, measure);
  if (!c.ok()) return c.status();
  // Predictor P, predicted Q: cross is C_PQ (d_P × d_Q).
  const Eigen::MatrixXd& cpp = x_predicts ? c->xx : c->yy;
  const Eigen::MatrixXd& cqq = x_predicts ? c->yy : c->xx;
  const double floor_p = x_predicts ? c->floor_x : c->floor_y;
  const double floor_q = x_predicts ? c->floor_y : c->floor_x;
  const Eigen::MatrixXd cross =
      x_predicts ? Eigen::MatrixXd(c->xy) : Eigen::MatrixXd(c->xy.transpose());
  absl::StatusOr<KeptSpectrum> q =
      Spectrum(cqq, floor_q, measure, x_predicts ? "Y" : "X");
  if (!q.ok()) return q.status();
  absl::StatusOr<KeptSpectrum> p =
      Spectrum(cpp, floor_p, measure, x_predicts ? "X" : "Y");
  if (absl::IsFailedPrecondition(p.status())) return 0.0;
  if (!p.ok()) return p.status();
  return measures_internal::RegressionOf(cross, &*p, *q);
}

}  // namespace cka::core
