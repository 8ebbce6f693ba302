#include "gram.h"

#include <cstdlib>

#include "gram_kernel.h"

namespace cka::client::internal {

#if defined(CKA_CLIENT_GRAM_AVX2)
void GramAvx2(GramInput in, float* out);  // gram_avx2.cc
#endif
#if defined(CKA_CLIENT_GRAM_AVX512)
void GramAvx512(GramInput in, float* out);  // gram_avx512.cc
#endif

bool GramBuildCompiledIn(GramBuild build) {
  switch (build) {
    case GramBuild::kBaseline:
      return true;
    case GramBuild::kAvx2:
#if defined(CKA_CLIENT_GRAM_AVX2)
      return true;
#else
      return false;
#endif
    case GramBuild::kAvx512:
#if defined(CKA_CLIENT_GRAM_AVX512)
      return true;
#else
      return false;
#endif
  }
  return false;
}

namespace {

// Whether this CPU has the instruction sets `build` is compiled with.
bool CpuHas(GramBuild build) {
#if defined(__x86_64__)
  const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (build) {
    case GramBuild::kBaseline:
      return true;
    case GramBuild::kAvx2:
      return avx2;
    case GramBuild::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("f16c");
  }
  return false;
#else
  return build == GramBuild::kBaseline;
#endif
}

}  // namespace

bool GramBuildRuns(GramBuild build) {
  return GramBuildCompiledIn(build) && CpuHas(build);
}

GramBuild GramBuildInUse() {
  static const GramBuild build = [] {
    for (GramBuild b : {GramBuild::kAvx512, GramBuild::kAvx2}) {
      if (GramBuildRuns(b)) return b;
    }
    return GramBuild::kBaseline;
  }();
  return build;
}

void GramOn(GramBuild build, GramInput in, float* out) {
  switch (build) {
#if defined(CKA_CLIENT_GRAM_AVX512)
    case GramBuild::kAvx512:
      return GramAvx512(in, out);
#endif
#if defined(CKA_CLIENT_GRAM_AVX2)
    case GramBuild::kAvx2:
      return GramAvx2(in, out);
#endif
    case GramBuild::kBaseline:
      return GramOfType(in, out);
    default:
      std::abort();  // a build this binary does not have: a caller's bug
  }
}

void Gram(GramInput in, float* out) { GramOn(GramBuildInUse(), in, out); }

}  // namespace cka::client::internal
