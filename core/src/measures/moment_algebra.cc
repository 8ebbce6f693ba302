#include "measures/moment_algebra.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "measures/lapack.h"

namespace cka::core::measures_internal {
namespace {

absl::Status CheckSize(std::string_view measure, const char* field,
                       const std::vector<double>& v, int64_t a, int64_t b,
                       const char* expected) {
  int64_t want = 0;
  if (__builtin_mul_overflow(a, b, &want) ||
      static_cast<uint64_t>(want) != v.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s has %d values, expected %s = %d·%d", measure,
                        field, v.size(), expected, a, b));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s[%d] = %g, expected a finite value", measure, field, i, v[i]));
    }
  }
  return absl::OkStatus();
}

// The symmetric centred moment S − s·sᵀ/N from the upper triangle of the
// row-major d × d `sum` and the d-vector `mean_sum` = s.
Eigen::MatrixXd CentredSymmetric(const std::vector<double>& sum,
                                 const std::vector<double>& s, int64_t d,
                                 double rows) {
  Eigen::MatrixXd c(d, d);
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = i; j < d; ++j) {
      const double v = sum[i * d + j] - s[i] * s[j] / rows;
      c(i, j) = v;
      c(j, i) = v;
    }
  }
  return c;
}

double MaxDiagonal(const std::vector<double>& sum, int64_t d) {
  double m = 0.0;
  for (int64_t i = 0; i < d; ++i) m = std::max(m, sum[i * d + i]);
  return m;
}

}  // namespace

absl::StatusOr<CentredMoments> Centre(const PairMoments& m,
                                      std::string_view measure) {
  if (m.rows < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: rows = %d, expected at least 1 example", measure, m.rows));
  }
  if (m.dx < 1 || m.dy < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: widths dx = %d, dy = %d, expected both >= 1",
                        measure, m.dx, m.dy));
  }
  for (absl::Status s :
       {CheckSize(measure, "sum_x", m.sum_x, m.dx, 1, "dx"),
        CheckSize(measure, "sum_y", m.sum_y, m.dy, 1, "dy"),
        CheckSize(measure, "sum_xx", m.sum_xx, m.dx, m.dx, "dx·dx"),
        CheckSize(measure, "sum_yy", m.sum_yy, m.dy, m.dy, "dy·dy"),
        CheckSize(measure, "sum_xy", m.sum_xy, m.dx, m.dy, "dx·dy")}) {
    if (!s.ok()) return s;
  }
  const double rows = static_cast<double>(m.rows);
  CentredMoments c;
  c.rows = m.rows;
  c.xx = CentredSymmetric(m.sum_xx, m.sum_x, m.dx, rows);
  c.yy = CentredSymmetric(m.sum_yy, m.sum_y, m.dy, rows);
  c.xy.resize(m.dx, m.dy);
  for (int64_t i = 0; i < m.dx; ++i) {
    for (int64_t j = 0; j < m.dy; ++j) {
      c.xy(i, j) = m.sum_xy[i * m.dy + j] - m.sum_x[i] * m.sum_y[j] / rows;
    }
  }
  // Finite sums can still overflow when centred (Σx_i·Σx_j / N beyond 1e308).
  const std::pair<const char*, const Eigen::MatrixXd*> centred[] = {
      {"C_xx", &c.xx}, {"C_yy", &c.yy}, {"C_xy", &c.xy}};
  for (const auto& [name, matrix] : centred) {
    if (!matrix->allFinite()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the centred second moment %s overflows float64 (sums too large "
          "for N = %d rows)",
          measure, name, m.rows));
    }
  }
  c.floor_x = kCancellationFloor * MaxDiagonal(m.sum_xx, m.dx);
  c.floor_y = kCancellationFloor * MaxDiagonal(m.sum_yy, m.dy);
  return c;
}

absl::StatusOr<KeptSpectrum> Decompose(const Eigen::MatrixXd& c, double floor) {
  Eigen::MatrixXd eigenvectors = c;
  Eigen::VectorXd ascending;
  if (absl::Status s = SymmetricEigen(&eigenvectors, &ascending); !s.ok()) {
    return absl::InternalError(absl::StrCat(
        "the eigendecomposition of the centred moment failed: ", s.message()));
  }
  const int64_t d = ascending.size();
  KeptSpectrum s;
  s.largest = ascending(d - 1);
  s.zero = std::max(kRankTolerance * s.largest, floor);
  int64_t r = 0;
  while (r < d && ascending(d - 1 - r) > s.zero) ++r;
  s.vectors.resize(d, r);
  s.values.resize(r);
  for (int64_t k = 0; k < r; ++k) {
    s.vectors.col(k) = eigenvectors.col(d - 1 - k);
    s.values(k) = ascending(d - 1 - k);
  }
  s.total = s.values.sum();
  return s;
}

absl::Status CheckVariance(const KeptSpectrum& s, std::string_view measure,
                           std::string_view side) {
  if (s.values.size() > 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s: stream %s has no variance: the largest eigenvalue of its "
      "centred second moment, %g, is at most the zero threshold %g "
      "(core/MATH.md, \"Rank rule and invariances\")",
      measure, side, s.largest, s.zero));
}

absl::StatusOr<KeptSpectrum> Spectrum(const Eigen::MatrixXd& c, double floor,
                                      std::string_view measure,
                                      std::string_view side) {
  absl::StatusOr<KeptSpectrum> s = Decompose(c, floor);
  if (!s.ok()) {
    return absl::Status(s.status().code(),
                        absl::StrFormat("%s: stream %s: %s", measure, side,
                                        s.status().message()));
  }
  if (absl::Status v = CheckVariance(*s, measure, side); !v.ok()) return v;
  return s;
}

absl::StatusOr<CentredPair> CentreWithSpectra(const PairMoments& m,
                                              std::string_view measure) {
  absl::StatusOr<CentredMoments> c = Centre(m, measure);
  if (!c.ok()) return c.status();
  absl::StatusOr<KeptSpectrum> x = Spectrum(c->xx, c->floor_x, measure, "X");
  if (!x.ok()) return x.status();
  absl::StatusOr<KeptSpectrum> y = Spectrum(c->yy, c->floor_y, measure, "Y");
  if (!y.ok()) return y.status();
  return CentredPair{*std::move(c), *std::move(x), *std::move(y)};
}

KeptSpectrum Leading(const KeptSpectrum& s, int64_t r) {
  KeptSpectrum out;
  out.vectors = s.vectors.leftCols(r);
  out.values = s.values.head(r);
  out.largest = s.largest;
  out.total = s.total;
  return out;
}

absl::StatusOr<Canonical> CanonicalCorrelations(const KeptSpectrum& x,
                                                const KeptSpectrum& y,
                                                const Eigen::MatrixXd& cxy,
                                                bool vectors) {
  // Uxᵀ·Cxy·Uy by dgemm (the O(d³) part), then each row and column scaled.
  Eigen::MatrixXd t =
      Multiply(Multiply(x.vectors, /*transpose_a=*/true, cxy, false), false,
               y.vectors, false);
  t.array().colwise() *= x.values.cwiseSqrt().cwiseInverse().array();
  t.array().rowwise() *=
      y.values.cwiseSqrt().cwiseInverse().transpose().array();
  absl::StatusOr<Svd> svd = SingularValueDecomposition(&t, vectors);
  if (!svd.ok()) return svd.status();
  return Canonical{std::move(svd->values), std::move(svd->u),
                   std::move(svd->v)};
}

}  // namespace cka::core::measures_internal
