#include "cka/core/hsic.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"

namespace cka::core {
namespace {

// Copies the upper triangle of the n × n `upper` into both triangles of `k`.
template <typename T>
void SymmetrizeFromUpper(const T* upper, int64_t n, double* k) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) {
      const double v = static_cast<double>(upper[i * n + j]);
      k[i * n + j] = v;
      k[j * n + i] = v;
    }
  }
}

}  // namespace

void LinearGram(const float* x, int64_t n, int64_t d, float* scratch,
                double* k) {
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(n),
              static_cast<int>(d), 1.0f, x, static_cast<int>(d), 0.0f, scratch,
              static_cast<int>(n));
  SymmetrizeFromUpper(scratch, n, k);
}

void LinearGram(const double* x, int64_t n, int64_t d, double* k) {
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(n),
              static_cast<int>(d), 1.0, x, static_cast<int>(d), 0.0, k,
              static_cast<int>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) k[j * n + i] = k[i * n + j];
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

void UCenterScaled(const double* k, int64_t n, double* out) {
  const double nd = static_cast<double>(n);
  const double scale = 1.0 / std::sqrt(nd * (nd - 3.0));
  std::vector<double> c(n);  // row sums of K with its diagonal removed
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < n; ++j) sum += k[i * n + j];
    c[i] = sum - k[i * n + i];
    total += c[i];
  }
  const double a = 1.0 / (nd - 2.0);
  const double b = total / ((nd - 1.0) * (nd - 2.0));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      out[i * n + j] = (k[i * n + j] - (c[i] + c[j]) * a + b) * scale;
    }
    out[i * n + i] = 0.0;
  }
}

void DoubleCenterScaled(const double* k, int64_t n, double* out) {
  const double nd = static_cast<double>(n);
  std::vector<double> row_mean(n);
  double grand = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double r = 0.0;
    for (int64_t j = 0; j < n; ++j) r += k[i * n + j];
    row_mean[i] = r / nd;
    grand += r;
  }
  grand /= nd * nd;
  const double scale = 1.0 / (nd - 1.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      out[i * n + j] =
          (k[i * n + j] - row_mean[i] - row_mean[j] + grand) * scale;
    }
  }
}

void SetBlasThreads(int threads) { openblas_set_num_threads(threads); }

int BlasThreads() { return openblas_get_num_threads(); }

}  // namespace cka::core
