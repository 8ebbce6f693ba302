// The per-batch mathematics of core/MATH.md ("Kernels", "HSIC estimators"):
// Gram matrices, kernels and centring.
//
// Layout: every matrix is row-major. X is n × d with element (i, j) at x[i * d
// + j]; a kernel K is n × n with K(i, j) at k[i * n + j]. Output buffers are
// caller-owned and must not alias the inputs. All functions are thread-safe
// (they touch only their arguments).
#ifndef CKA_CORE_HSIC_H_
#define CKA_CORE_HSIC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace cka::core {

// Writes the linear Gram K = X·Xᵀ of X (n × d). The float32 version computes
// in float32 and fills only the upper triangle (i <= j) of `k`; the strict
// lower triangle is left as it was. It runs BLAS ssyrk, or, with one BLAS
// thread per call on an AVX-512 CPU whose OpenBLAS is held to older kernels
// (OPENBLAS_CORETYPE), a faster AVX-512 build of Eigen's. The float64
// version runs BLAS dsyrk and fills both triangles.
void LinearGramUpper(const float* x, int64_t n, int64_t d, float* k);
void LinearGram(const double* x, int64_t n, int64_t d, double* k);

// Returns the name of the kernel that LinearGramUpper runs now (for logs and
// benchmarks), e.g. "BLAS ssyrk (OpenBLAS Haswell)".
std::string LinearGramKernelName();

// Writes the full float64 n × n matrix whose upper triangle is that of `upper`.
void SymmetrizeUpper(const float* upper, int64_t n, double* k);

// Returns the median m of the n² squared distances D²(i, j) = K(i,i) + K(j,j) −
// 2·K(i,j) (negatives clamped to 0; diagonal zeros and both triangles included,
// as numpy.median of the full matrix). `scratch` must hold n·n doubles.
double MedianSquaredDistance(const double* k_linear, int64_t n,
                             double* scratch);

// Writes the RBF kernel exp(−D² / (2·t²·m)) of the linear Gram (n × n).
// InvalidArgument when m = 0 (all examples identical).
absl::Status RbfKernel(const double* k_linear, int64_t n, double threshold,
                       double* k_rbf);

// Centred kernels are stored *packed*: the upper triangle (i <= j) row by row,
// PackedSize(n) values, each off-diagonal entry multiplied by √2. Then the dot
// product of two packed kernels is the Frobenius inner product of the full
// symmetric ones, and all pairs of a batch are one syrk over half the bytes.
inline int64_t PackedSize(int64_t n) { return n * (n + 1) / 2; }

// Writes the packed U-centred kernel K̂ (core/MATH.md, "Fast form"), scaled by
// 1/sqrt(n(n−3)) so that ⟨K̂_s, K̂_t⟩ = HSIC₁(K_s, K_t). Reads only the upper
// triangle of the symmetric n × n `k`. Needs n >= 4.
void UCenterPacked(const float* k, int64_t n, double* out);
void UCenterPacked(const double* k, int64_t n, double* out);

// Writes the packed H·K·H scaled by 1/(n−1), so that ⟨·,·⟩ = HSIC₀. Reads only
// the upper triangle of `k`. Needs n >= 2.
void DoubleCenterPacked(const float* k, int64_t n, double* out);
void DoubleCenterPacked(const double* k, int64_t n, double* out);

// Sets / returns the number of threads each BLAS call may use (process-wide). A
// server that runs many layers in parallel on its own pool wants 1: small Gram
// products scale better across layers than inside one call. Not thread-safe
// with respect to concurrent BLAS calls; call at start-up.
void SetBlasThreads(int threads);
int BlasThreads();

}  // namespace cka::core

#endif  // CKA_CORE_HSIC_H_
