// gram_kernel.h compiled with AVX-512 (client/CMakeLists.txt), under its own
// name for Eigen's namespace for the reason gram_avx2.cc gives. Called only
// where the CPU has every instruction set it is compiled with (gram.cc).
#define Eigen cka_client_eigen_avx512
#include "gram_kernel.h"

namespace cka::client::internal {

void GramAvx512(GramInput in, float* out) { GramOfType(in, out); }

}  // namespace cka::client::internal
