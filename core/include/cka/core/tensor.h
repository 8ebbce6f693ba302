// Input types of the engine: tensors as they arrive on the wire, layers and
// batches.
//
// Layout: a tensor of shape [n, d1, d2, ...] is row-major and little-endian; it
// is read as an n × d matrix with d = d1·d2·…, element (i, j) at data[i * d +
// j].
#ifndef CKA_CORE_TENSOR_H_
#define CKA_CORE_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cka::core {

// Element type of a tensor's bytes.
enum class DType { kFloat32 = 1, kFloat64 = 2, kFloat16 = 3, kBFloat16 = 4 };

// Returns the size in bytes of one element (4, 8, 2, 2).
size_t DTypeSize(DType dtype);
// Returns "float32", "float64", "float16" or "bfloat16".
const char* DTypeName(DType dtype);

// A non-owning view of a tensor's bytes. The bytes must outlive every call that
// receives the view; the engine copies what it keeps.
struct TensorView {
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
  const void* data = nullptr;
  size_t size_bytes = 0;
};

// One layer of a batch: activations (rank >= 2, n × d after flattening) or a
// precomputed linear Gram matrix K = X·Xᵀ (shape [n, n], symmetric).
struct LayerInput {
  enum class Kind { kActivations, kGram };
  std::string layer;
  Kind kind = Kind::kActivations;
  TensorView tensor;
};

// One message of a training job: some layers of one source for one batch of
// examples.
struct BatchInput {
  std::string source;  // may be empty; never contains '/'
  std::string batch_id;
  int64_t step = 0;
  std::vector<LayerInput> layers;
};

}  // namespace cka::core

#endif  // CKA_CORE_TENSOR_H_
