#include "cka/client/batch.h"

#include <cstring>

namespace cka::client {

size_t DTypeSize(v1::DType dtype) {
  switch (dtype) {
    case v1::FLOAT32:
      return 4;
    case v1::FLOAT64:
      return 8;
    case v1::FLOAT16:
    case v1::BFLOAT16:
      return 2;
    default:
      return 0;
  }
}

LayerBytes::LayerBytes(std::string&& bytes) : string_(std::move(bytes)) {}

LayerBytes::LayerBytes(std::shared_ptr<const void> owner, const char* data,
                       size_t size)
    : owner_(std::move(owner)), data_(data), size_(size) {}

namespace {

// Returns prod(shape)·element, or 0 for an empty, negative or overflowing shape
// (which Submit reports with the shape itself).
size_t ExpectedBytes(const std::vector<int64_t>& shape, v1::DType dtype) {
  if (shape.empty()) return 0;
  size_t total = DTypeSize(dtype);
  for (int64_t dim : shape) {
    if (dim <= 0) return 0;
    if (total > SIZE_MAX / static_cast<size_t>(dim)) return 0;
    total *= static_cast<size_t>(dim);
  }
  return total;
}

}  // namespace

Batch& Batch::AddActivations(std::string layer, const void* data,
                             std::vector<int64_t> shape, v1::DType dtype) {
  const size_t size = data == nullptr ? 0 : ExpectedBytes(shape, dtype);
  std::string bytes(size, '\0');
  if (size > 0) std::memcpy(bytes.data(), data, size);
  return AddLayer(std::move(layer), false, std::move(shape), dtype,
                  LayerBytes(std::move(bytes)));
}

Batch& Batch::AddActivations(std::string layer, std::string&& bytes,
                             std::vector<int64_t> shape, v1::DType dtype) {
  return AddLayer(std::move(layer), false, std::move(shape), dtype,
                  LayerBytes(std::move(bytes)));
}

Batch& Batch::AddGram(std::string layer, const void* data, int64_t n,
                      v1::DType dtype) {
  std::vector<int64_t> shape = {n, n};
  const size_t size = data == nullptr ? 0 : ExpectedBytes(shape, dtype);
  std::string bytes(size, '\0');
  if (size > 0) std::memcpy(bytes.data(), data, size);
  return AddLayer(std::move(layer), true, std::move(shape), dtype,
                  LayerBytes(std::move(bytes)));
}

Batch& Batch::AddLayer(std::string layer, bool is_gram,
                       std::vector<int64_t> shape, v1::DType dtype,
                       LayerBytes bytes) {
  LayerPayload payload;
  payload.layer = std::move(layer);
  payload.is_gram = is_gram;
  payload.shape = std::move(shape);
  payload.dtype = dtype;
  payload.bytes = std::move(bytes);
  layers_.push_back(std::move(payload));
  return *this;
}

int64_t Batch::payload_bytes() const {
  int64_t total = 0;
  for (const LayerPayload& layer : layers_)
    total += static_cast<int64_t>(layer.bytes.size());
  return total;
}

}  // namespace cka::client
