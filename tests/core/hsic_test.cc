// The per-batch functions of hsic.h against numpy (data/hsic_small.json: n = 7
// and n = 8, so the median of n² squared distances is taken at an odd and an
// even count).
#include "cka/core/hsic.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Float64 arithmetic on O(1)..O(10) values: numpy and the engine differ in
// summation order only, ~1e-15 relative; 1e-12 of the largest entry leaves room
// and catches any wrong term.
constexpr double kFloat64Rel = 1e-12;

struct HsicCase {
  int64_t n;
  std::vector<double> x, y, k, l, rbf, ucenter, dcenter;
  int64_t dx, dy;
  double median, hsic_unbiased, hsic_biased;
};

std::vector<HsicCase> Cases() {
  std::vector<HsicCase> out;
  for (const auto& j : LoadJson("hsic_small.json")["cases"]) {
    HsicCase c;
    c.n = j["n"];
    c.x = j["x"].get<std::vector<double>>();
    c.y = j["y"].get<std::vector<double>>();
    c.dx = j["dx"];
    c.dy = j["dy"];
    c.k = j["k"].get<std::vector<double>>();
    c.l = j["l"].get<std::vector<double>>();
    c.rbf = j["rbf0.5_k"].get<std::vector<double>>();
    c.ucenter = j["ucenter_scaled_k"].get<std::vector<double>>();
    c.dcenter = j["double_center_scaled_k"].get<std::vector<double>>();
    c.median = j["median_d2_k"];
    c.hsic_unbiased = j["hsic_unbiased_kl"];
    c.hsic_biased = j["hsic_biased_kl"];
    out.push_back(c);
  }
  return out;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

void ExpectAllNear(const std::vector<double>& got,
                   const std::vector<double>& want, double tol,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << what << " " << i;
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(HsicTest, LinearGramMatchesNumpy) {
  for (const HsicCase& c : Cases()) {
    std::vector<double> k(c.n * c.n);
    LinearGram(c.x.data(), c.n, c.dx, k.data());
    ExpectAllNear(k, c.k, kFloat64Rel * MaxAbs(c.k),
                  "double n=" + std::to_string(c.n));

    // Float32: compare with the float64 Gram of the float32-rounded inputs;
    // float32 products summed over d = 3 terms are within a few float32 ulps
    // (6e-8) of the largest entry.
    std::vector<float> xf(c.x.begin(), c.x.end());
    std::vector<double> xr(xf.begin(), xf.end()), kr(c.n * c.n);
    LinearGram(xr.data(), c.n, c.dx, kr.data());
    std::vector<float> scratch(c.n * c.n);
    LinearGram(xf.data(), c.n, c.dx, scratch.data(), k.data());
    ExpectAllNear(k, kr, 1e-6 * MaxAbs(kr), "float n=" + std::to_string(c.n));
    for (int64_t i = 0; i < c.n; ++i) {
      for (int64_t j = 0; j < c.n; ++j)
        EXPECT_EQ(k[i * c.n + j], k[j * c.n + i]);  // symmetric
    }
  }
}

TEST(HsicTest, MedianSquaredDistanceIsNumpyMedianOfAllEntries) {
  for (const HsicCase& c : Cases()) {
    std::vector<double> scratch(c.n * c.n);
    EXPECT_NEAR(MedianSquaredDistance(c.k.data(), c.n, scratch.data()),
                c.median, kFloat64Rel * c.median)
        << c.n;
  }
}

TEST(HsicTest, RbfKernelMatchesNumpy) {
  for (const HsicCase& c : Cases()) {
    std::vector<double> rbf(c.n * c.n);
    ASSERT_TRUE(RbfKernel(c.k.data(), c.n, 0.5, rbf.data()).ok());
    ExpectAllNear(rbf, c.rbf, kFloat64Rel, "n=" + std::to_string(c.n));
  }
}

TEST(HsicTest, RbfKernelOfIdenticalExamplesIsInvalidArgument) {
  const int64_t n = 5;
  std::vector<double> k(n * n, 2.5),
      rbf(n * n);  // every example the same vector
  const absl::Status status = RbfKernel(k.data(), n, 0.5, rbf.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST(HsicTest, UCenterScaledMatchesNumpyAndGivesUnbiasedHsic) {
  for (const HsicCase& c : Cases()) {
    std::vector<double> uk(c.n * c.n), ul(c.n * c.n);
    UCenterScaled(c.k.data(), c.n, uk.data());
    UCenterScaled(c.l.data(), c.n, ul.data());
    ExpectAllNear(uk, c.ucenter, kFloat64Rel * MaxAbs(c.ucenter),
                  "n=" + std::to_string(c.n));
    for (int64_t i = 0; i < c.n; ++i)
      EXPECT_EQ(uk[i * c.n + i], 0.0) << "diagonal " << i;
    // ⟨K̂, L̂⟩ of the scaled kernels is HSIC₁; unscaled it is n(n−3)·HSIC₁.
    EXPECT_NEAR(Dot(uk, ul), c.hsic_unbiased,
                kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));
    EXPECT_NEAR(Dot(uk, ul) * c.n * (c.n - 3),
                c.n * (c.n - 3) * c.hsic_unbiased,
                c.n * (c.n - 3) * kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));
  }
}

TEST(HsicTest, DoubleCenterScaledMatchesNumpyAndGivesBiasedHsic) {
  for (const HsicCase& c : Cases()) {
    std::vector<double> hk(c.n * c.n), hl(c.n * c.n);
    DoubleCenterScaled(c.k.data(), c.n, hk.data());
    DoubleCenterScaled(c.l.data(), c.n, hl.data());
    ExpectAllNear(hk, c.dcenter, kFloat64Rel * MaxAbs(c.dcenter),
                  "n=" + std::to_string(c.n));
    EXPECT_NEAR(Dot(hk, hl), c.hsic_biased,
                kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));
  }
}

}  // namespace
}  // namespace cka::core::testing
