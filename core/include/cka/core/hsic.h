// The per-batch mathematics of MATH.md: Gram matrices, kernels and centring.
//
// Layout: every matrix is row-major. X is n × d with element (i, j) at x[i * d
// + j]; a kernel K is n × n with K(i, j) at k[i * n + j]. Output buffers are
// caller-owned and must not alias the inputs. All functions are thread-safe
// (they touch only their arguments).
#ifndef CKA_CORE_HSIC_H_
#define CKA_CORE_HSIC_H_

#include <cstdint>

#include "absl/status/status.h"

namespace cka::core {

// Writes the linear Gram K = X·Xᵀ (n × n, both triangles) of X (n × d). The
// float32 version computes in float32 with BLAS ssyrk and widens to float64;
// `scratch` must hold n·n floats.
void LinearGram(const float* x, int64_t n, int64_t d, float* scratch,
                double* k);
void LinearGram(const double* x, int64_t n, int64_t d, double* k);

// Returns the median m of the n² squared distances D²(i, j) = K(i,i) + K(j,j) −
// 2·K(i,j) (negatives clamped to 0; diagonal zeros and both triangles included,
// as numpy.median of the full matrix). `scratch` must hold n·n doubles.
double MedianSquaredDistance(const double* k_linear, int64_t n,
                             double* scratch);

// Writes the RBF kernel exp(−D² / (2·t²·m)) of the linear Gram (n × n).
// InvalidArgument when m = 0 (all examples identical).
absl::Status RbfKernel(const double* k_linear, int64_t n, double threshold,
                       double* k_rbf);

// Writes the U-centred kernel K̂ of MATH.md ("Fast form"), scaled by
// 1/sqrt(n(n−3)) so that ⟨K̂_s, K̂_t⟩_F = HSIC₁(K_s, K_t). Needs n >= 4.
void UCenterScaled(const double* k, int64_t n, double* out);

// Writes H·K·H scaled by 1/(n−1), so that ⟨·,·⟩_F = HSIC₀. Needs n >= 2.
void DoubleCenterScaled(const double* k, int64_t n, double* out);

// Sets / returns the number of threads each BLAS call may use (process-wide). A
// server that runs many layers in parallel on its own pool wants 1: small Gram
// products scale better across layers than inside one call. Not thread-safe
// with respect to concurrent BLAS calls; call at start-up.
void SetBlasThreads(int threads);
int BlasThreads();

}  // namespace cka::core

#endif  // CKA_CORE_HSIC_H_
