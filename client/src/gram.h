// The client-side Gram reduction's arithmetic: K = X·Xᵀ of a layer, on the
// widest vector instructions this CPU has. x86-64 builds target SSE2; Gram
// also has a build with AVX2 and FMA (about twice the speed) and one with
// AVX-512 (1.3 to 1.7 times AVX2's on the CPU measured, which has full-width
// AVX-512 units), and picks one at run time.
#ifndef CKA_CLIENT_SRC_GRAM_H_
#define CKA_CLIENT_SRC_GRAM_H_

#include <cstdint>

namespace cka::client::internal {

// An n × d row-major matrix of activations.
struct GramInput {
  enum class Type { kFloat32, kFloat64, kFloat16, kBFloat16 };
  const void* data;
  Type type;
  int64_t n, d;
};

// The instruction sets that Gram has a build for, narrowest first.
enum class GramBuild { kBaseline, kAvx2, kAvx512 };

// Writes K (n × n float32, exactly symmetric) to `out`: float32 inputs
// accumulate in float32, float64 in float64, 16-bit floats in float32.
// Needs n, d >= 1, n·d values at `in.data` and room for n·n floats at `out`
// (the caller checks the shape; nothing here fails). Runs the widest build
// that this binary has and this CPU runs (GramBuildInUse). Thread-safe: no
// shared state.
void Gram(GramInput in, float* out);

// Returns true when this binary has `build`: its compiler took the flags.
bool GramBuildCompiledIn(GramBuild build);

// Returns true when this binary has `build` and this CPU can run it.
bool GramBuildRuns(GramBuild build);

// Returns the build that Gram runs: the widest for which GramBuildRuns.
GramBuild GramBuildInUse();

// The same as Gram on the given build, which must be one that GramBuildRuns
// (for tests).
void GramOn(GramBuild build, GramInput in, float* out);

}  // namespace cka::client::internal

#endif  // CKA_CLIENT_SRC_GRAM_H_
