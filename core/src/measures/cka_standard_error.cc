#include "cka/core/measures/cka_standard_error.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cka::core {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

void CkaBatchSums::Add(double a, double u, double v) {
  ++batches;
  sum_a += a;
  sum_u += u;
  sum_v += v;
  sum_aa += a * a;
  sum_uu += u * u;
  sum_vv += v * v;
  sum_au += a * u;
  sum_av += a * v;
  sum_uv += u * v;
}

void CkaBatchSums::Merge(const CkaBatchSums& o) {
  batches += o.batches;
  sum_a += o.sum_a;
  sum_u += o.sum_u;
  sum_v += o.sum_v;
  sum_aa += o.sum_aa;
  sum_uu += o.sum_uu;
  sum_vv += o.sum_vv;
  sum_au += o.sum_au;
  sum_av += o.sum_av;
  sum_uv += o.sum_uv;
}

double CkaOfSums(const CkaBatchSums& s) {
  if (s.batches < 1 || !(s.sum_u > 0) || !(s.sum_v > 0)) return kNaN;
  return s.sum_a / std::sqrt(s.sum_u * s.sum_v);
}

double CkaStandardError(const CkaBatchSums& s) {
  if (s.batches < 2 || !(s.sum_u > 0) || !(s.sum_v > 0)) return kNaN;
  const double m = static_cast<double>(s.batches);
  const double a = s.sum_a / m, u = s.sum_u / m, v = s.sum_v / m;
  // Sample covariances, divisor m − 1: (Σpq − m·p̄·q̄) / (m − 1).
  auto cov = [&](double sum_pq, double p, double q) {
    return (sum_pq - m * p * q) / (m - 1.0);
  };
  const double root = std::sqrt(u * v);
  const double ga = 1.0 / root;
  const double gu = -a / (2.0 * u * root);
  const double gv = -a / (2.0 * v * root);
  const double form =
      ga * ga * cov(s.sum_aa, a, a) + gu * gu * cov(s.sum_uu, u, u) +
      gv * gv * cov(s.sum_vv, v, v) +
      2.0 * (ga * gu * cov(s.sum_au, a, u) + ga * gv * cov(s.sum_av, a, v) +
             gu * gv * cov(s.sum_uv, u, v));
  return std::sqrt(std::max(form, 0.0) / m);
}

}  // namespace cka::core
