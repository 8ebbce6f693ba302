// gram_kernel.h compiled with -mavx2 -mfma (client/CMakeLists.txt). Eigen is
// header-only and this file's copies of its templates are AVX2 code: under
// Eigen's own namespace name they would be merged at link time with the
// baseline copies of other files, and a CPU without AVX2 could then run them.
// Renaming the namespace keeps them apart. Called only where the CPU has
// AVX2 and FMA (gram.cc).
#define Eigen cka_client_eigen_avx2
#include "gram_kernel.h"

namespace cka::client::internal {

void GramAvx2(GramInput in, float* out) { GramOfType(in, out); }

}  // namespace cka::client::internal
