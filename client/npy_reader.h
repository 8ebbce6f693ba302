// A reader of NumPy .npy files (format versions 1.0 and 2.0) for ckactl:
// little-endian float32 ('<f4'), float64 ('<f8') and float16 ('<f2') arrays in
// C order. Anything else (Fortran order, big-endian, integers, object arrays,
// version 3.0) is refused with an error that names the file and the field.
//
// Layout: data holds the array's elements row-major exactly as stored in the
// file, element (i, j, ...) of shape [n, d1, ...] at the usual C-order offset.
#ifndef CKA_CLIENT_NPY_READER_H_
#define CKA_CLIENT_NPY_READER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cka::client {

struct NpyArray {
  enum class DType { kFloat32, kFloat64, kFloat16 };
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // () for a scalar
  std::string data;            // prod(shape) · element size bytes
};

// Returns the size in bytes of one element of `dtype` (4, 8, 2).
size_t NpyElementSize(NpyArray::DType dtype);

// Parses the bytes of a .npy file. InvalidArgument naming `name` (a file name,
// for messages) and what is wrong: bad magic, unsupported version, malformed
// header, unsupported dtype, Fortran order, or a data size that does not match
// the shape.
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  const std::string& name = "npy");

// Reads and parses the file at `path`; NotFound when it cannot be opened.
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path);

}  // namespace cka::client

#endif  // CKA_CLIENT_NPY_READER_H_
