// A layer's tensor as Prepare reads it: its shape, dtype and byte count
// checked, its values widened to float or double and checked to be finite.
// Internal to cka::core. Layout: a tensor of shape [n, d1, ...] is row-major,
// little-endian (cka/core/tensor.h); `width` below is d1·d2·… for activations
// and n for a Gram, so that value i is at row i / width, column i % width.
#ifndef CKA_CORE_SRC_TENSOR_CONVERT_H_
#define CKA_CORE_SRC_TENSOR_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cka/core/tensor.h"

namespace cka::core {

// Returns "layer '<stream>' batch '<batch_id>'", the start of every message
// about one layer of a batch.
std::string LayerContext(const std::string& stream,
                         const std::string& batch_id);

// Returns the element count of `layer`'s tensor; InvalidArgument starting
// with `ctx` when its dtype is unknown, its rank or a dimension is wrong, a
// Gram is not square, or its byte count does not match its shape.
absl::StatusOr<int64_t> CheckTensor(const std::string& ctx,
                                    const LayerInput& layer);

// Returns InvalidArgument naming the first value of `values` (`count` of them,
// rows of `width`) that is NaN or Inf; OK when all are finite. T is float or
// double.
template <typename T>
absl::Status FirstNonFinite(const std::string& ctx, const T* values,
                            int64_t count, int64_t width);

// Converts `count` elements of `t` to T (float or double) into `out`, checking
// that all are finite (InvalidArgument from FirstNonFinite otherwise).
template <typename T>
absl::Status Widen(const std::string& ctx, const TensorView& t, int64_t count,
                   int64_t width, std::vector<T>* out);

}  // namespace cka::core

#endif  // CKA_CORE_SRC_TENSOR_CONVERT_H_
