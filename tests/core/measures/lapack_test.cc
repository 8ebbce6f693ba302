// The LAPACK and BLAS wrappers of the comparison family
// (core/src/measures/lapack.h) against Eigen's own solvers and products:
// eigenvalues, singular values and reconstructions (never the vectors
// themselves, which are unique only up to sign and, for repeated values, up to
// a rotation), their refusal of non-finite input, the workspace bounds that
// MomentMeasureBytes prices, and equal bits for equal input.
#include "measures/lapack.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "Eigen/Dense"
#include "absl/status/status.h"
#include "cka/core/measures/pair_moments.h"
#include "gtest/gtest.h"
#include "measures/moment_algebra.h"

namespace cka::core::measures_internal {
namespace {

// Backward-stable O(n³) solvers err by a small multiple of n·ε·‖A‖ (ε =
// 2.2e-16, n <= 160 here: about 4e-14); a wrong eigenvalue or factor is off
// by O(‖A‖).
constexpr double kRel = 1e-11;

constexpr unsigned kSeed = 20261207;

Eigen::MatrixXd Random(int64_t rows, int64_t cols, std::mt19937_64* rng) {
  std::normal_distribution<double> normal;
  Eigen::MatrixXd m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = normal(*rng);
  return m;
}

// An n × n orthogonal matrix (Q of a random matrix's QR).
Eigen::MatrixXd Orthogonal(int64_t n, std::mt19937_64* rng) {
  return Eigen::HouseholderQR<Eigen::MatrixXd>(Random(n, n, rng))
      .householderQ();
}

struct SymmetricCase {
  std::string name;
  Eigen::MatrixXd a;
};

// Full rank, rank-deficient (B·Bᵀ with B n × k), repeated eigenvalues (Q·Λ·Qᵀ
// with multiplicities 5, 3 and 4) and the edge orders 1 and 2.
std::vector<SymmetricCase> SymmetricCases(std::mt19937_64* rng) {
  std::vector<SymmetricCase> cases;
  for (int64_t n : {1, 2, 7, 64, 160}) {
    const Eigen::MatrixXd b = Random(n, n, rng);
    cases.push_back({"full rank n = " + std::to_string(n), b + b.transpose()});
  }
  for (int64_t k : {1, 10}) {
    const Eigen::MatrixXd b = Random(80, k, rng);
    cases.push_back(
        {"rank " + std::to_string(k) + " of 80", b * b.transpose()});
  }
  Eigen::VectorXd lambda(12);
  lambda << 2, 2, 2, 2, 2, -1, -1, -1, 0, 0, 0, 0;
  const Eigen::MatrixXd q = Orthogonal(12, rng);
  cases.push_back({"repeated eigenvalues 2 (5×), -1 (3×), 0 (4×)",
                   q * lambda.asDiagonal() * q.transpose()});
  return cases;
}

double MaxAbs(const Eigen::MatrixXd& m) {
  return m.size() == 0 ? 0.0 : m.cwiseAbs().maxCoeff();
}

TEST(LapackTest, SymmetricEigenAgreesWithEigenAndReconstructsTheMatrix) {
  std::mt19937_64 rng(kSeed);
  for (const SymmetricCase& c : SymmetricCases(&rng)) {
    SCOPED_TRACE(::testing::Message() << c.name << ", seed " << kSeed);
    const int64_t n = c.a.rows();
    const double scale = std::max(1.0, MaxAbs(c.a));
    Eigen::MatrixXd v = c.a;
    Eigen::VectorXd values;
    ASSERT_TRUE(SymmetricEigen(&v, &values).ok());
    ASSERT_EQ(values.size(), n);
    for (int64_t i = 1; i < n; ++i) EXPECT_LE(values(i - 1), values(i));
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(c.a);
    EXPECT_LE(MaxAbs(values - eigen.eigenvalues()), kRel * scale);
    EXPECT_LE(MaxAbs(v * values.asDiagonal() * v.transpose() - c.a),
              kRel * scale);
    EXPECT_LE(MaxAbs(v.transpose() * v - Eigen::MatrixXd::Identity(n, n)),
              kRel);
  }
}

TEST(LapackTest, RepeatedEigenvaluesComeOutWithTheirMultiplicities) {
  std::mt19937_64 rng(kSeed);
  const SymmetricCase c = SymmetricCases(&rng).back();
  Eigen::MatrixXd v = c.a;
  Eigen::VectorXd values;
  ASSERT_TRUE(SymmetricEigen(&v, &values).ok());
  // The generator's Λ, ascending: -1 (3×), 0 (4×), 2 (5×).
  Eigen::VectorXd want(12);
  want << -1, -1, -1, 0, 0, 0, 0, 2, 2, 2, 2, 2;
  EXPECT_LE(MaxAbs(values - want), kRel);
}

TEST(LapackTest, DecomposeKeepsTheSameSpectrumAsEigenWould) {
  // Rank rule on LAPACK's eigenvalues: the kept count, the values and the
  // projection U·Λ·Uᵀ of the kept directions equal those from Eigen's.
  std::mt19937_64 rng(kSeed);
  for (const SymmetricCase& c : SymmetricCases(&rng)) {
    SCOPED_TRACE(::testing::Message() << c.name << ", seed " << kSeed);
    const Eigen::MatrixXd psd = c.a * c.a;  // a centred moment is PSD
    const absl::StatusOr<KeptSpectrum> s = Decompose(psd, 0.0);
    ASSERT_TRUE(s.ok()) << s.status();
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(psd);
    const Eigen::VectorXd& asc = eigen.eigenvalues();
    const int64_t n = asc.size();
    int64_t r = 0;
    while (r < n && asc(n - 1 - r) > kRankTolerance * asc(n - 1)) ++r;
    ASSERT_EQ(s->values.size(), r);
    const double scale = std::max(1.0, asc(n - 1));
    for (int64_t k = 0; k < r; ++k) {
      EXPECT_NEAR(s->values(k), asc(n - 1 - k), kRel * scale);
    }
    const Eigen::MatrixXd u = eigen.eigenvectors().rightCols(r);
    const Eigen::MatrixXd want = u * asc.tail(r).asDiagonal() * u.transpose();
    EXPECT_LE(
        MaxAbs(s->vectors * s->values.asDiagonal() * s->vectors.transpose() -
               want),
        kRel * scale);
  }
}

TEST(LapackTest, SvdAgreesWithEigenAndReconstructsTheMatrix) {
  std::mt19937_64 rng(kSeed);
  struct Shape {
    int64_t m, n, rank;  // rank < min(m, n): a product of m × rank, rank × n
  };
  for (const Shape& shape :
       {Shape{1, 1, 1}, Shape{7, 3, 3}, Shape{3, 7, 3}, Shape{64, 64, 64},
        Shape{120, 40, 40}, Shape{40, 120, 40}, Shape{50, 50, 10}}) {
    SCOPED_TRACE(::testing::Message()
                 << shape.m << " × " << shape.n << " of rank " << shape.rank
                 << ", seed " << kSeed);
    const Eigen::MatrixXd a =
        Random(shape.m, shape.rank, &rng) * Random(shape.rank, shape.n, &rng);
    const int64_t k = std::min(shape.m, shape.n);
    const double scale = std::max(1.0, MaxAbs(a));
    const Eigen::BDCSVD<Eigen::MatrixXd> eigen(a);
    Eigen::MatrixXd copy = a;
    const absl::StatusOr<Svd> values_only =
        SingularValueDecomposition(&copy, false);
    ASSERT_TRUE(values_only.ok()) << values_only.status();
    EXPECT_EQ(values_only->u.size(), 0);
    copy = a;
    const absl::StatusOr<Svd> svd = SingularValueDecomposition(&copy, true);
    ASSERT_TRUE(svd.ok()) << svd.status();
    ASSERT_EQ(svd->values.size(), k);
    ASSERT_EQ(svd->u.rows(), shape.m);
    ASSERT_EQ(svd->u.cols(), k);
    ASSERT_EQ(svd->v.rows(), shape.n);
    ASSERT_EQ(svd->v.cols(), k);
    for (int64_t i = 1; i < k; ++i) {
      EXPECT_GE(svd->values(i - 1), svd->values(i));
    }
    EXPECT_GE(svd->values.minCoeff(), 0.0);
    EXPECT_LE(MaxAbs(svd->values - eigen.singularValues()), kRel * scale);
    EXPECT_LE(MaxAbs(values_only->values - eigen.singularValues()),
              kRel * scale);
    EXPECT_LE(
        MaxAbs(svd->u * svd->values.asDiagonal() * svd->v.transpose() - a),
        kRel * scale);
    EXPECT_LE(
        MaxAbs(svd->u.transpose() * svd->u - Eigen::MatrixXd::Identity(k, k)),
        kRel);
    EXPECT_LE(
        MaxAbs(svd->v.transpose() * svd->v - Eigen::MatrixXd::Identity(k, k)),
        kRel);
  }
}

TEST(LapackTest, MultiplyEqualsEigensProductForEveryTransposeAndEmptySizes) {
  std::mt19937_64 rng(kSeed);
  struct Sizes {
    int64_t m, k, n;
  };
  for (const Sizes& s : {Sizes{5, 3, 4}, Sizes{70, 90, 30}, Sizes{4, 0, 3},
                         Sizes{0, 3, 4}, Sizes{1, 1, 1}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << s.m << " × " << s.k << " · " << s.k << " × " << s.n
                     << (ta ? ", a transposed" : "")
                     << (tb ? ", b transposed" : "") << ", seed " << kSeed);
        const Eigen::MatrixXd a =
            ta ? Random(s.k, s.m, &rng) : Random(s.m, s.k, &rng);
        const Eigen::MatrixXd b =
            tb ? Random(s.n, s.k, &rng) : Random(s.k, s.n, &rng);
        const Eigen::MatrixXd want = (ta ? Eigen::MatrixXd(a.transpose()) : a) *
                                     (tb ? Eigen::MatrixXd(b.transpose()) : b);
        const Eigen::MatrixXd got = Multiply(a, ta, b, tb);
        ASSERT_EQ(got.rows(), s.m);
        ASSERT_EQ(got.cols(), s.n);
        EXPECT_LE(MaxAbs(got - want), kRel * std::max<int64_t>(1, s.k));
      }
    }
  }
}

TEST(LapackTest, NonFiniteInputIsAnInternalErrorNamingTheRoutineNotACrash) {
  std::mt19937_64 rng(kSeed);
  const Eigen::MatrixXd b = Random(6, 6, &rng);
  for (double bad : {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(::testing::Message() << "entry " << bad);
    Eigen::MatrixXd a = b + b.transpose();
    a(3, 1) = a(1, 3) = bad;
    Eigen::VectorXd values;
    const absl::Status eig = SymmetricEigen(&a, &values);
    EXPECT_EQ(eig.code(), absl::StatusCode::kInternal) << eig;
    EXPECT_NE(eig.message().find("dsyevd of a 6 × 6 matrix"), std::string::npos)
        << eig;
    Eigen::MatrixXd c = b;
    c(2, 4) = bad;
    const absl::StatusOr<Svd> svd = SingularValueDecomposition(&c, true);
    EXPECT_EQ(svd.status().code(), absl::StatusCode::kInternal) << svd.status();
    EXPECT_NE(svd.status().message().find("dgesdd of a 6 × 6 matrix"),
              std::string::npos)
        << svd.status();
  }
  // NaN is refused by LAPACK itself (info != 0), which the message carries.
  Eigen::MatrixXd nan = b;
  nan(0, 0) = std::numeric_limits<double>::quiet_NaN();
  const absl::StatusOr<Svd> svd = SingularValueDecomposition(&nan, false);
  EXPECT_NE(svd.status().message().find("info = -4"), std::string::npos)
      << svd.status();
}

TEST(LapackTest, DecomposeOfANonFiniteMomentIsInternalNotACrash) {
  Eigen::MatrixXd c = Eigen::MatrixXd::Identity(4, 4);
  c(0, 0) = std::numeric_limits<double>::quiet_NaN();
  const absl::StatusOr<KeptSpectrum> s = Decompose(c, 0.0);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal) << s.status();
  EXPECT_NE(s.status().message().find("dsyevd"), std::string::npos)
      << s.status();
}

TEST(LapackTest, WorkspaceBoundsCoverWhatLapackAsksForAndArePriced) {
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 40; ++n) sizes.push_back(n);
  for (int64_t n : {63, 64, 65, 100, 127, 257, 512, 1000, 2048, 4096}) {
    sizes.push_back(n);
  }
  for (int64_t n : sizes) {
    SCOPED_TRACE(::testing::Message() << "n = " << n);
    const int64_t queried = SymmetricEigenQueriedBytes(n);
    ASSERT_GT(queried, 0);
    EXPECT_LE(queried, SymmetricEigenScratchBytes(n));
    EXPECT_GE(MomentMeasureBytes(n, n), 8 * (n * n + n) + queried);
  }
  const std::vector<int64_t> sides = {1, 2, 3, 5, 8, 13, 31, 64, 200, 1024};
  for (int64_t m : sides) {
    for (int64_t n : sides) {
      for (bool vectors : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << m << " × " << n << (vectors ? " with vectors" : ""));
        const int64_t queried = SvdQueriedBytes(m, n, vectors);
        ASSERT_GT(queried, 0);
        EXPECT_LE(queried, SvdScratchBytes(m, n, vectors));
        EXPECT_GE(MomentMeasureBytes(m, n), 8 * m * n + queried);
      }
    }
  }
}

TEST(LapackTest, EqualInputGivesEqualBits) {
  // Large enough for OpenBLAS to split the work across its threads.
  std::mt19937_64 rng(kSeed);
  const Eigen::MatrixXd b = Random(300, 300, &rng);
  const Eigen::MatrixXd c = b * b.transpose();
  const absl::StatusOr<KeptSpectrum> first = Decompose(c, 0.0);
  const Eigen::MatrixXd elsewhere = c;  // the same values at another address
  const absl::StatusOr<KeptSpectrum> second = Decompose(elsewhere, 0.0);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->values == second->values);
  EXPECT_TRUE(first->vectors == second->vectors);
  const absl::StatusOr<Canonical> one =
      CanonicalCorrelations(*first, *second, b, true);
  const absl::StatusOr<Canonical> two =
      CanonicalCorrelations(*second, *first, b, true);
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_TRUE(one->rho == two->rho);
  EXPECT_TRUE(one->a == two->a);
  EXPECT_TRUE(one->b == two->b);
}

}  // namespace
}  // namespace cka::core::measures_internal
