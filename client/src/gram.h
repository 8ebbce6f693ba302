// The client-side Gram reduction's arithmetic: K = X·Xᵀ of a layer, on the
// widest vector instructions this CPU has (AVX2 and FMA where present: about
// twice the speed of the SSE2 baseline that x86-64 builds target).
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

// Writes K (n × n float32, exactly symmetric) to `out`: float32 inputs
// accumulate in float32, float64 in float64, 16-bit floats in float32.
// Needs n, d >= 1, n·d values at `in.data` and room for n·n floats at `out`
// (the caller checks the shape; nothing here fails). Thread-safe: no shared
// state.
void Gram(GramInput in, float* out);

// The same on the baseline instruction set only (for tests).
void GramBaseline(GramInput in, float* out);

// Whether Gram runs the AVX2 and FMA build on this CPU.
bool GramUsesAvx2();

}  // namespace cka::client::internal

#endif  // CKA_CLIENT_SRC_GRAM_H_
