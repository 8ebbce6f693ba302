#include "cka/core/hsic.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "linear_gram.h"

namespace cka::core {
namespace internal {

bool GramKernelRuns(GramKernel kernel) {
  switch (kernel) {
    case GramKernel::kBlas:
      return true;
    case GramKernel::kEigenAvx512:
#if defined(CKA_CORE_GRAM_AVX512)
      // The instruction sets gram_avx512.cc is compiled with.
      return __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
      return false;
#endif
  }
  return false;
}

GramKernel PreferredGramKernel() {
  static const GramKernel kernel = [] {
    if (!GramKernelRuns(GramKernel::kEigenAvx512)) return GramKernel::kBlas;
    const std::string core = absl::AsciiStrToLower(openblas_get_corename());
    for (const char* avx512 : {"skylakex", "cooperlake", "sapphirerapids"}) {
      if (core == avx512) return GramKernel::kBlas;
    }
    return GramKernel::kEigenAvx512;
  }();
  return kernel;
}

void LinearGramUpperOn(GramKernel kernel, const float* x, int64_t n, int64_t d,
                       float* k) {
#if defined(CKA_CORE_GRAM_AVX512)
  if (kernel == GramKernel::kEigenAvx512) {
    LinearGramUpperAvx512(x, n, d, k);
    return;
  }
#endif
  // A kernel this binary lacks: the caller skipped GramKernelRuns, a bug.
  if (kernel != GramKernel::kBlas) std::abort();
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(n),
              static_cast<int>(d), 1.0f, x, static_cast<int>(d), 0.0f, k,
              static_cast<int>(n));
}

}  // namespace internal

namespace {

// The kernel LinearGramUpper runs now: BLAS threads its own calls when it has
// more than one thread per call.
internal::GramKernel GramKernelInUse() {
  return BlasThreads() == 1 ? internal::PreferredGramKernel()
                            : internal::GramKernel::kBlas;
}

}  // namespace

void LinearGramUpper(const float* x, int64_t n, int64_t d, float* k) {
  internal::LinearGramUpperOn(GramKernelInUse(), x, n, d, k);
}

std::string LinearGramKernelName() {
  if (GramKernelInUse() == internal::GramKernel::kEigenAvx512) {
    return "Eigen rankUpdate, AVX-512";
  }
  return absl::StrCat("BLAS ssyrk (OpenBLAS ", openblas_get_corename(), ")");
}

void LinearGram(const double* x, int64_t n, int64_t d, double* k) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(n),
              static_cast<int>(d), 1.0, x, static_cast<int>(d), 0.0, k,
              static_cast<int>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) k[j * n + i] = k[i * n + j];
  }
}

void SymmetrizeUpper(const float* upper, int64_t n, double* k) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) {
      const double v = static_cast<double>(upper[i * n + j]);
      k[i * n + j] = v;
      k[j * n + i] = v;
    }
  }
}

double MedianSquaredDistance(const double* k, int64_t n, double* scratch) {
  const int64_t count = n * n;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      scratch[i * n + j] =
          std::max(0.0, k[i * n + i] + k[j * n + j] - 2.0 * k[i * n + j]);
    }
  }
  // numpy.median: the middle element, or the mean of the two middle elements.
  double* mid = scratch + count / 2;
  std::nth_element(scratch, mid, scratch + count);
  const double upper = *mid;
  if (count % 2 == 1) return upper;
  const double lower = *std::max_element(scratch, mid);
  return 0.5 * (lower + upper);
}

absl::Status RbfKernel(const double* k_linear, int64_t n, double threshold,
                       double* k_rbf) {
  const double m = MedianSquaredDistance(k_linear, n, k_rbf);
  if (!(m > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("all %d examples are identical (median squared "
                        "distance %g): the RBF kernel is "
                        "undefined",
                        n, m));
  }
  const double scale = -1.0 / (2.0 * threshold * threshold * m);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double d2 =
          std::max(0.0, k_linear[i * n + i] + k_linear[j * n + j] -
                            2.0 * k_linear[i * n + j]);
      k_rbf[i * n + j] = std::exp(d2 * scale);
    }
  }
  return absl::OkStatus();
}

namespace {

// Full row sums of the symmetric n × n `k`, read from its upper triangle.
template <typename T>
std::vector<double> RowSumsFromUpper(const T* k, int64_t n) {
  std::vector<double> sums(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = k + i * n;
    double acc = 0.0;
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = static_cast<double>(row[j]);
      acc += v;
      sums[j] += v;
    }
    sums[i] += acc + static_cast<double>(row[i]);
  }
  return sums;
}

// Writes the packed (K(i,j) − r_i − r_j + b) · scale, off-diagonal entries
// times √2; the diagonal is 0 when `zero_diagonal`.
template <typename T>
void CenterPacked(const T* k, int64_t n, const std::vector<double>& r, double b,
                  double scale, bool zero_diagonal, double* out) {
  const double off = scale * std::sqrt(2.0);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = k + i * n;
    const double base = b - r[i];
    *out++ = zero_diagonal
                 ? 0.0
                 : (static_cast<double>(row[i]) + base - r[i]) * scale;
    for (int64_t j = i + 1; j < n; ++j) {
      *out++ = (static_cast<double>(row[j]) + base - r[j]) * off;
    }
  }
}

// core/MATH.md, "Fast form": with c_i the row sums of K without its diagonal,
// K̂(i,j) = K(i,j) − (c_i + c_j)/(n−2) + Σc/((n−1)(n−2)) off the diagonal, 0 on
// it.
template <typename T>
void UCenterPackedImpl(const T* k, int64_t n, double* out) {
  const double nd = static_cast<double>(n);
  std::vector<double> c = RowSumsFromUpper(k, n);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    c[i] -= static_cast<double>(k[i * n + i]);
    total += c[i];
  }
  const double a = 1.0 / (nd - 2.0);
  for (double& v : c) v *= a;
  const double b = total / ((nd - 1.0) * (nd - 2.0));
  CenterPacked(k, n, c, b, 1.0 / std::sqrt(nd * (nd - 3.0)),
               /*zero_diagonal=*/true, out);
}

// H·K·H: K(i,j) − mean_i − mean_j + grand mean.
template <typename T>
void DoubleCenterPackedImpl(const T* k, int64_t n, double* out) {
  const double nd = static_cast<double>(n);
  std::vector<double> mean = RowSumsFromUpper(k, n);
  double grand = 0.0;
  for (double& v : mean) {
    grand += v;
    v /= nd;
  }
  grand /= nd * nd;
  CenterPacked(k, n, mean, grand, 1.0 / (nd - 1.0), /*zero_diagonal=*/false,
               out);
}

}  // namespace

void UCenterPacked(const float* k, int64_t n, double* out) {
  UCenterPackedImpl(k, n, out);
}
void UCenterPacked(const double* k, int64_t n, double* out) {
  UCenterPackedImpl(k, n, out);
}
void DoubleCenterPacked(const float* k, int64_t n, double* out) {
  DoubleCenterPackedImpl(k, n, out);
}
void DoubleCenterPacked(const double* k, int64_t n, double* out) {
  DoubleCenterPackedImpl(k, n, out);
}

void SetBlasThreads(int threads) { openblas_set_num_threads(threads); }

int BlasThreads() { return openblas_get_num_threads(); }

}  // namespace cka::core
