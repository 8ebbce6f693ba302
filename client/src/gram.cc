#include "gram.h"

#include "gram_kernel.h"

namespace cka::client::internal {

#if defined(CKA_CLIENT_GRAM_AVX2)
void GramAvx2(GramInput in, float* out);  // gram_avx2.cc
#endif

bool GramUsesAvx2() {
#if defined(CKA_CLIENT_GRAM_AVX2)
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

void GramBaseline(GramInput in, float* out) { GramOfType(in, out); }

void Gram(GramInput in, float* out) {
#if defined(CKA_CLIENT_GRAM_AVX2)
  if (GramUsesAvx2()) return GramAvx2(in, out);
#endif
  GramBaseline(in, out);
}

}  // namespace cka::client::internal
