#include "tensor_convert.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace cka::core {

namespace {

// Reads element i of little-endian `data` as Src and converts it to T.
template <typename Src, typename T>
void Convert(const void* data, int64_t count, T* out) {
  const char* bytes = static_cast<const char*>(data);
  for (int64_t i = 0; i < count; ++i) {
    Src v;
    std::memcpy(&v, bytes + i * sizeof(Src), sizeof(Src));
    out[i] = static_cast<T>(v);
  }
}

// Converts float16 or bfloat16 bit patterns to T.
template <typename Half, typename T>
void Convert16(const void* data, int64_t count, T* out) {
  const char* bytes = static_cast<const char*>(data);
  for (int64_t i = 0; i < count; ++i) {
    uint16_t bits;
    std::memcpy(&bits, bytes + i * 2, 2);
    out[i] =
        static_cast<T>(static_cast<float>(Eigen::numext::bit_cast<Half>(bits)));
  }
}

}  // namespace

std::string LayerContext(const std::string& stream,
                         const std::string& batch_id) {
  return absl::StrCat("layer '", stream, "' batch '", batch_id, "'");
}

// Checks the shape, dtype and byte count of a tensor and returns its element
// count.
absl::StatusOr<int64_t> CheckTensor(const std::string& ctx,
                                    const LayerInput& layer) {
  const TensorView& t = layer.tensor;
  const bool gram = layer.kind == LayerInput::Kind::kGram;
  const int dtype = static_cast<int>(t.dtype);
  if (dtype < 1 || dtype > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": dtype ", dtype,
                     " is not one of float32, float64, float16, bfloat16"));
  }
  if (t.shape.size() < 2 || (gram && t.shape.size() != 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        ctx, ": ", gram ? "gram" : "activations", " shape [",
        absl::StrJoin(t.shape, ", "), "] has rank ", t.shape.size(),
        "; expected ",
        gram ? "rank 2 ([n, n])" : "rank >= 2 ([n, features...])"));
  }
  // Dimensions are bounded so that the element count cannot overflow.
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  int64_t elements = 1;
  for (size_t i = 0; i < t.shape.size(); ++i) {
    const int64_t dim = t.shape[i];
    if (dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          ctx, ": shape [", absl::StrJoin(t.shape, ", "), "] has size ", dim,
          " in dimension ", i, "; expected > 0"));
    }
    if (dim > kMaxElements / elements) {
      return absl::InvalidArgumentError(
          absl::StrCat(ctx, ": shape [", absl::StrJoin(t.shape, ", "),
                       "] has more than 2^40 elements"));
    }
    elements *= dim;
  }
  if (gram && t.shape[0] != t.shape[1]) {
    return absl::InvalidArgumentError(absl::StrCat(ctx, ": gram shape [",
                                                   t.shape[0], ", ", t.shape[1],
                                                   "] is not square"));
  }
  const uint64_t expected =
      static_cast<uint64_t>(elements) * DTypeSize(t.dtype);
  if (t.size_bytes != expected) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d bytes of data, but shape [%s] of %s needs %d bytes", ctx,
        t.size_bytes, absl::StrJoin(t.shape, ", "), DTypeName(t.dtype),
        expected));
  }
  if (t.data == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": tensor has no data"));
  }
  return elements;
}

// InvalidArgument naming the first value of `values` (`count` of them, rows of
// `width`) that is NaN or Inf; OK when all are finite.
template <typename T>
absl::Status FirstNonFinite(const std::string& ctx, const T* values,
                            int64_t count, int64_t width) {
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: value %g at row %d, column %d is not finite (NaN or Inf)", ctx,
          static_cast<double>(values[i]), i / width, i % width));
    }
  }
  return absl::OkStatus();
}

// Converts `count` elements of `t` to T (float or double), checking that all
// are finite. `width` only locates a bad value (row, column) in the error
// message.
template <typename T>
absl::Status Widen(const std::string& ctx, const TensorView& t, int64_t count,
                   int64_t width, std::vector<T>* out) {
  out->resize(count);
  T* dst = out->data();
  switch (t.dtype) {
    case DType::kFloat32:
      Convert<float>(t.data, count, dst);
      break;
    case DType::kFloat64:
      Convert<double>(t.data, count, dst);
      break;
    case DType::kFloat16:
      Convert16<Eigen::half>(t.data, count, dst);
      break;
    case DType::kBFloat16:
      Convert16<Eigen::bfloat16>(t.data, count, dst);
      break;
  }
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> view(dst, count);
  if (!view.allFinite()) return FirstNonFinite(ctx, dst, count, width);
  return absl::OkStatus();
}

template absl::Status FirstNonFinite<float>(const std::string&, const float*,
                                            int64_t, int64_t);
template absl::Status FirstNonFinite<double>(const std::string&, const double*,
                                             int64_t, int64_t);
template absl::Status Widen<float>(const std::string&, const TensorView&,
                                   int64_t, int64_t, std::vector<float>*);
template absl::Status Widen<double>(const std::string&, const TensorView&,
                                    int64_t, int64_t, std::vector<double>*);

}  // namespace cka::core
