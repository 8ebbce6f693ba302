#include "src/gram.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace cka::client::internal {
namespace {

using Rows =
    Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// K of `x` in float64: the oracle.
Eigen::MatrixXd Reference(const Rows& x) { return x * x.transpose(); }

template <typename T>
std::vector<T> Convert(const Rows& x) {
  std::vector<T> out(x.size());
  for (Eigen::Index i = 0; i < x.size(); ++i) out[i] = T(x.data()[i]);
  return out;
}

// Runs `gram` on `x` given as `type`; checks K against the float64 Gram of
// the values as that type holds them, within `tolerance` of the largest entry,
// and that K is exactly symmetric.
template <typename T>
void ExpectGram(const std::function<void(GramInput, float*)>& gram,
                GramInput::Type type, const Rows& x, double tolerance) {
  const std::vector<T> data = Convert<T>(x);
  Rows held(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.size(); ++i)
    held.data()[i] = static_cast<double>(data[i]);
  const int64_t n = x.rows();
  std::vector<float> k(n * n, -1.0f);
  gram({data.data(), type, n, static_cast<int64_t>(x.cols())}, k.data());
  const Eigen::MatrixXd reference = Reference(held);
  const double scale = reference.cwiseAbs().maxCoeff();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      EXPECT_NEAR(k[i * n + j], reference(i, j), tolerance * scale)
          << "(" << i << ", " << j << ")";
      EXPECT_EQ(k[i * n + j], k[j * n + i]) << "(" << i << ", " << j << ")";
    }
  }
}

// Sizes that leave remainders in every blocking of the kernels: n and d not
// multiples of 8, and d above one cache block.
const Rows kX = Rows::Random(37, 1029);

TEST(GramTest, EveryBuildAndTypeMatchesTheFloat64Gram) {
  const std::pair<GramBuild, const char*> builds[] = {
      {GramBuild::kBaseline, "baseline"},
      {GramBuild::kAvx2, "AVX2"},
      {GramBuild::kAvx512, "AVX-512"}};
  for (const auto& [build, name] : builds) {
    SCOPED_TRACE(name);
    if (!GramBuildRuns(build)) continue;
    const auto gram = [build = build](GramInput in, float* out) {
      GramOn(build, in, out);
    };
    // float32 sums of 1029 terms: a few 1e-7 of the largest entry.
    ExpectGram<float>(gram, GramInput::Type::kFloat32, kX, 1e-5);
    // float64 sums, then rounded to float32: half an ulp of float32.
    ExpectGram<double>(gram, GramInput::Type::kFloat64, kX, 6e-8);
    ExpectGram<Eigen::half>(gram, GramInput::Type::kFloat16, kX, 1e-5);
    ExpectGram<Eigen::bfloat16>(gram, GramInput::Type::kBFloat16, kX, 1e-5);
  }
}

// Each build runs exactly where it is compiled in and the CPU has its
// instructions (on x86-64, g++ 12 and clang++ 14 take every build's flags),
// and Gram takes the widest.
TEST(GramTest, TakesTheWidestBuildTheCpuRuns) {
  EXPECT_TRUE(GramBuildRuns(GramBuild::kBaseline));
#if defined(__x86_64__)
  EXPECT_TRUE(GramBuildCompiledIn(GramBuild::kAvx2));
  EXPECT_TRUE(GramBuildCompiledIn(GramBuild::kAvx512));
  const bool avx2 = GramBuildCompiledIn(GramBuild::kAvx2) &&
                    __builtin_cpu_supports("avx2") &&
                    __builtin_cpu_supports("fma");
  const bool avx512 =
      GramBuildCompiledIn(GramBuild::kAvx512) &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("f16c");
  EXPECT_EQ(GramBuildRuns(GramBuild::kAvx2), avx2);
  EXPECT_EQ(GramBuildRuns(GramBuild::kAvx512), avx512);
  EXPECT_EQ(GramBuildInUse(), avx512 ? GramBuild::kAvx512
                              : avx2 ? GramBuild::kAvx2
                                     : GramBuild::kBaseline);
#else
  EXPECT_EQ(GramBuildInUse(), GramBuild::kBaseline);
#endif
}

TEST(GramTest, OneRowAndOneColumn) {
  const Rows x = Rows::Constant(1, 1, 3.0);
  ExpectGram<float>(&Gram, GramInput::Type::kFloat32, x, 0.0);
}

}  // namespace
}  // namespace cka::client::internal
