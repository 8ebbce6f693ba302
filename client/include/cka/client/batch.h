// A batch of activations as a training loop builds it before handing it to
// ActivationStreamer.
//
// Layout: a tensor of shape [n, d1, d2, ...] is row-major and little-endian;
// the server reads it as an n × d matrix (d = d1·d2·…), element (i, j) at
// data[i * d + j]. Eigen matrices are converted to that layout (row i = example
// i) whatever their own storage order.
//
// Ownership: the `const` overloads copy the bytes on the calling thread (they
// must, the caller keeps the memory); the overloads taking an rvalue
// (std::vector, std::string, a row-major Eigen matrix) take ownership without
// copying. The streamer never copies the bytes either: gRPC sends them from the
// batch's own buffers, which live until the batch is acked.
//
// Thread safety: a Batch is a value; one thread at a time.
#ifndef CKA_CLIENT_BATCH_H_
#define CKA_CLIENT_BATCH_H_

#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cka/v1/similarity.pb.h"

namespace cka::client {

// Maps an element type to its wire dtype: float, double, Eigen::half,
// Eigen::bfloat16.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr v1::DType kValue = v1::FLOAT32;
};
template <>
struct DTypeOf<double> {
  static constexpr v1::DType kValue = v1::FLOAT64;
};
template <>
struct DTypeOf<Eigen::half> {
  static constexpr v1::DType kValue = v1::FLOAT16;
};
template <>
struct DTypeOf<Eigen::bfloat16> {
  static constexpr v1::DType kValue = v1::BFLOAT16;
};

// Returns the size of one element of `dtype` in bytes, or 0 for
// DTYPE_UNSPECIFIED and unknown values.
size_t DTypeSize(v1::DType dtype);

// Bytes that a layer owns or borrows for as long as the batch lives.
class LayerBytes {
 public:
  LayerBytes() = default;
  // Takes `bytes` without copying them.
  explicit LayerBytes(std::string&& bytes);
  // Keeps `owner` alive and reads [data, data + size) from it.
  LayerBytes(std::shared_ptr<const void> owner, const char* data, size_t size);

  const char* data() const { return string_.empty() ? data_ : string_.data(); }
  size_t size() const { return string_.empty() ? size_ : string_.size(); }

 private:
  std::string string_;
  std::shared_ptr<const void> owner_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// One layer of a batch: activations (rank >= 2) or a precomputed n × n linear
// Gram K = X·Xᵀ.
struct LayerPayload {
  std::string layer;
  bool is_gram = false;
  std::vector<int64_t> shape;
  v1::DType dtype = v1::DTYPE_UNSPECIFIED;
  LayerBytes bytes;
};

class Batch {
 public:
  // A batch of examples identified by `batch_id` (the join key across streams
  // and sources) at training step `step`.
  explicit Batch(std::string batch_id, int64_t step = 0)
      : batch_id_(std::move(batch_id)), step_(step) {}

  // Adds activations of `layer` from `data`, shape `shape`, element type
  // `dtype`; copies prod(shape)·DTypeSize(dtype) bytes now. The shape and size
  // are checked by Submit.
  Batch& AddActivations(std::string layer, const void* data,
                        std::vector<int64_t> shape, v1::DType dtype);
  // Adds activations of `layer` taking ownership of `bytes` (no copy).
  Batch& AddActivations(std::string layer, std::string&& bytes,
                        std::vector<int64_t> shape, v1::DType dtype);
  // Adds activations of `layer` taking ownership of `values` (no copy); T is
  // float, double, Eigen::half or Eigen::bfloat16.
  template <typename T>
  Batch& AddActivations(std::string layer, std::vector<T>&& values,
                        std::vector<int64_t> shape) {
    auto owner = std::make_shared<const std::vector<T>>(std::move(values));
    const char* data = reinterpret_cast<const char*>(owner->data());
    const size_t size = owner->size() * sizeof(T);
    return AddLayer(std::move(layer), false, std::move(shape),
                    DTypeOf<T>::kValue,
                    LayerBytes(std::move(owner), data, size));
  }
  // Adds the n × d activations `m` of `layer` (row i = example i); copies them
  // now.
  template <typename Derived>
  Batch& AddActivations(std::string layer, const Eigen::DenseBase<Derived>& m) {
    using Scalar = typename Derived::Scalar;
    using RowMajor =
        Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    return AddActivations(std::move(layer), RowMajor(m.derived()));
  }
  // Adds the n × d activations `m` of `layer`, taking ownership of the matrix
  // (no copy).
  template <typename Scalar>
  Batch& AddActivations(std::string layer,
                        Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                      Eigen::RowMajor>&& m) {
    using RowMajor =
        Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    auto owner = std::make_shared<const RowMajor>(std::move(m));
    const char* data = reinterpret_cast<const char*>(owner->data());
    const size_t size = static_cast<size_t>(owner->size()) * sizeof(Scalar);
    std::vector<int64_t> shape = {static_cast<int64_t>(owner->rows()),
                                  static_cast<int64_t>(owner->cols())};
    return AddLayer(std::move(layer), false, std::move(shape),
                    DTypeOf<Scalar>::kValue,
                    LayerBytes(std::move(owner), data, size));
  }
  // Adds the precomputed n × n linear Gram K = X·Xᵀ of `layer` (`data`
  // row-major, copied now).
  Batch& AddGram(std::string layer, const void* data, int64_t n,
                 v1::DType dtype);

  const std::string& batch_id() const { return batch_id_; }
  int64_t step() const { return step_; }
  const std::vector<LayerPayload>& layers() const { return layers_; }
  std::vector<LayerPayload>& mutable_layers() { return layers_; }
  // Returns the bytes of all layers' tensors.
  int64_t payload_bytes() const;

 private:
  Batch& AddLayer(std::string layer, bool is_gram, std::vector<int64_t> shape,
                  v1::DType dtype, LayerBytes bytes);

  std::string batch_id_;
  int64_t step_ = 0;
  std::vector<LayerPayload> layers_;
};

}  // namespace cka::client

#endif  // CKA_CLIENT_BATCH_H_
