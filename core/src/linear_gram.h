// The float32 linear Gram's kernels, behind hsic.h's LinearGramUpper.
//
// OpenBLAS picks its kernels from the CPU, but OPENBLAS_CORETYPE can hold it
// to older ones: machines whose OpenBLAS misdetects the CPU set it, and an
// AVX-512 CPU then runs AVX2 code. There, Eigen's rankUpdate compiled for
// AVX-512 (gram_avx512.cc) is 1.0–1.7 times as fast on one thread (n × d of
// 256 × 2048, 128 × 512, 512 × 16384); where OpenBLAS runs its own AVX-512
// kernels it is as fast or faster, and stays.
#ifndef CKA_CORE_SRC_LINEAR_GRAM_H_
#define CKA_CORE_SRC_LINEAR_GRAM_H_

#include <cstdint>

namespace cka::core::internal {

enum class GramKernel {
  kBlas,         // BLAS ssyrk
  kEigenAvx512,  // Eigen rankUpdate, AVX-512 build, one thread
};

// Returns true when this binary has `kernel` and this CPU runs it.
bool GramKernelRuns(GramKernel kernel);

// Returns the kernel LinearGramUpper runs when each BLAS call has one thread:
// kEigenAvx512 where it runs and OpenBLAS's own kernels are not AVX-512
// ones, else kBlas. With more BLAS threads per call, LinearGramUpper runs
// kBlas, which threads its calls.
GramKernel PreferredGramKernel();

// LinearGramUpper on `kernel`, which must be one that GramKernelRuns: writes
// the upper triangle (i <= j) of K = X·Xᵀ (X n × d row-major, K n × n
// row-major) in float32; the strict lower triangle is left as it was.
// Thread-safe.
void LinearGramUpperOn(GramKernel kernel, const float* x, int64_t n, int64_t d,
                       float* k);

// gram_avx512.cc: the kEigenAvx512 kernel itself (only in builds that
// define CKA_CORE_GRAM_AVX512).
void LinearGramUpperAvx512(const float* x, int64_t n, int64_t d, float* k);

}  // namespace cka::core::internal

#endif  // CKA_CORE_SRC_LINEAR_GRAM_H_
