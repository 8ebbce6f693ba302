// The per-batch functions of hsic.h against numpy (data/hsic_small.json: n = 7
// and n = 8, so the median of n² squared distances is taken at an odd and an
// even count).
#include "cka/core/hsic.h"

#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"
#include "linear_gram.h"
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
    // The float32 version fills the upper triangle only; SymmetrizeUpper
    // mirrors it.
    const float kUntouched = -12345.0f;
    std::vector<float> upper(c.n * c.n, kUntouched);
    LinearGramUpper(xf.data(), c.n, c.dx, upper.data());
    for (int64_t i = 0; i < c.n; ++i) {
      for (int64_t j = 0; j < i; ++j)
        EXPECT_EQ(upper[i * c.n + j], kUntouched) << i << "," << j;
    }
    SymmetrizeUpper(upper.data(), c.n, k.data());
    ExpectAllNear(k, kr, 1e-6 * MaxAbs(kr), "float n=" + std::to_string(c.n));
    for (int64_t i = 0; i < c.n; ++i) {
      for (int64_t j = 0; j < c.n; ++j)
        EXPECT_EQ(k[i * c.n + j], k[j * c.n + i]);  // symmetric
    }
  }
}

// Each float32 Gram kernel on a size that leaves remainders in every blocking
// (n and d not multiples of 16, d above one cache block), against the float64
// Gram of the same values: float32 sums of 1029 products of values in
// [-1, 1] are within a few 1e-7 of the largest entry.
TEST(HsicTest, EveryFloat32GramKernelMatchesTheFloat64Gram) {
  const int64_t n = 37, d = 1029;
  std::vector<float> x(n * d);
  uint64_t state = 12345;
  for (float& v : x) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(static_cast<int64_t>(state >> 33) % 2001 - 1000) /
        1000.0f;
  }
  const std::vector<double> xd(x.begin(), x.end());
  std::vector<double> want(n * n);
  LinearGram(xd.data(), n, d, want.data());
  for (internal::GramKernel kernel :
       {internal::GramKernel::kBlas, internal::GramKernel::kEigenAvx512}) {
    SCOPED_TRACE(kernel == internal::GramKernel::kBlas ? "BLAS" : "AVX-512");
    if (!internal::GramKernelRuns(kernel)) continue;
    const float kUntouched = -12345.0f;
    std::vector<float> upper(n * n, kUntouched);
    internal::LinearGramUpperOn(kernel, x.data(), n, d, upper.data());
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (j < i) {
          EXPECT_EQ(upper[i * n + j], kUntouched) << i << "," << j;
        } else {
          EXPECT_NEAR(upper[i * n + j], want[i * n + j], 1e-5 * MaxAbs(want))
              << i << "," << j;
        }
      }
    }
  }
}

// Eigen's AVX-512 kernel replaces BLAS only where OpenBLAS runs older kernels
// than the CPU has, and only with one BLAS thread per call.
TEST(HsicTest, TheAvx512KernelIsPreferredOnlyOverOlderBlasKernels) {
  const std::string core = absl::AsciiStrToLower(openblas_get_corename());
  const bool blas_avx512 =
      core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
  const bool eigen =
      internal::GramKernelRuns(internal::GramKernel::kEigenAvx512);
  EXPECT_EQ(internal::PreferredGramKernel(),
            eigen && !blas_avx512 ? internal::GramKernel::kEigenAvx512
                                  : internal::GramKernel::kBlas);
  const int threads = BlasThreads();
  SetBlasThreads(1);
  EXPECT_EQ(
      LinearGramKernelName().rfind("Eigen", 0) == 0,
      internal::PreferredGramKernel() == internal::GramKernel::kEigenAvx512)
      << LinearGramKernelName();
  SetBlasThreads(2);
  EXPECT_EQ(LinearGramKernelName().rfind("BLAS ssyrk", 0), 0u)
      << LinearGramKernelName();
  SetBlasThreads(threads);
}

// The packed layout of hsic.h: the upper triangle row by row, off-diagonal
// entries times √2.
std::vector<double> Pack(const std::vector<double>& full, int64_t n) {
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j)
      out.push_back(full[i * n + j] * (i == j ? 1.0 : std::sqrt(2.0)));
  }
  return out;
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

TEST(HsicTest, UCenterPackedMatchesNumpyAndGivesUnbiasedHsic) {
  for (const HsicCase& c : Cases()) {
    const std::string what = "n=" + std::to_string(c.n);
    ASSERT_EQ(PackedSize(c.n), c.n * (c.n + 1) / 2);
    std::vector<double> uk(PackedSize(c.n)), ul(PackedSize(c.n));
    UCenterPacked(c.k.data(), c.n, uk.data());
    UCenterPacked(c.l.data(), c.n, ul.data());
    ExpectAllNear(uk, Pack(c.ucenter, c.n), kFloat64Rel * MaxAbs(c.ucenter),
                  what);
    // ⟨K̂, L̂⟩ of the scaled kernels is HSIC₁; unscaled it is n(n−3)·HSIC₁.
    EXPECT_NEAR(Dot(uk, ul), c.hsic_unbiased,
                kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));
    EXPECT_NEAR(Dot(uk, ul) * c.n * (c.n - 3),
                c.n * (c.n - 3) * c.hsic_unbiased,
                c.n * (c.n - 3) * kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));

    // Only the upper triangle is read, and float32 input gives the same
    // kernel to float32 rounding of K.
    std::vector<double> k_upper = c.k;
    std::vector<float> k32(c.k.size());
    for (int64_t i = 0; i < c.n; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        k32[i * c.n + j] = static_cast<float>(c.k[i * c.n + j]);
        if (j < i) k_upper[i * c.n + j] = k32[i * c.n + j] = std::nan("");
      }
    }
    std::vector<double> from_upper(PackedSize(c.n)), from32(PackedSize(c.n));
    UCenterPacked(k_upper.data(), c.n, from_upper.data());
    EXPECT_EQ(from_upper, uk) << what;
    UCenterPacked(k32.data(), c.n, from32.data());
    ExpectAllNear(from32, uk, 1e-6 * MaxAbs(c.k), what + " float32");
  }
}

TEST(HsicTest, DoubleCenterPackedMatchesNumpyAndGivesBiasedHsic) {
  for (const HsicCase& c : Cases()) {
    const std::string what = "n=" + std::to_string(c.n);
    std::vector<double> hk(PackedSize(c.n)), hl(PackedSize(c.n));
    DoubleCenterPacked(c.k.data(), c.n, hk.data());
    DoubleCenterPacked(c.l.data(), c.n, hl.data());
    ExpectAllNear(hk, Pack(c.dcenter, c.n), kFloat64Rel * MaxAbs(c.dcenter),
                  what);
    EXPECT_NEAR(Dot(hk, hl), c.hsic_biased,
                kFloat64Rel * MaxAbs(c.k) * MaxAbs(c.l));

    std::vector<float> k32(c.k.begin(), c.k.end());
    std::vector<double> from32(PackedSize(c.n));
    DoubleCenterPacked(k32.data(), c.n, from32.data());
    ExpectAllNear(from32, hk, 1e-6 * MaxAbs(c.k), what + " float32");
  }
}

}  // namespace
}  // namespace cka::core::testing
