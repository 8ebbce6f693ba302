#include "npy_reader.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cka::client {
namespace {

constexpr absl::string_view kMagic = "\x93NUMPY";

absl::Status Bad(const std::string& name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

// Returns the value text of `key` in the header dict: everything after "'key':"
// up to the next top-level comma or the closing brace.
absl::StatusOr<absl::string_view> DictValue(absl::string_view header,
                                            absl::string_view key,
                                            const std::string& name) {
  const std::string quoted = absl::StrCat("'", key, "'");
  size_t pos = header.find(quoted);
  if (pos == absl::string_view::npos) {
    return Bad(name, absl::StrCat("header has no ", quoted, " key: ", header));
  }
  pos = header.find(':', pos + quoted.size());
  if (pos == absl::string_view::npos)
    return Bad(name, absl::StrCat("header: no ':' after ", quoted));
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) break;
  }
  return absl::StripAsciiWhitespace(header.substr(pos, end - pos));
}

}  // namespace

size_t NpyElementSize(NpyArray::DType dtype) {
  switch (dtype) {
    case NpyArray::DType::kFloat64:
      return 8;
    case NpyArray::DType::kFloat16:
      return 2;
    case NpyArray::DType::kFloat32:
      break;
  }
  return 4;
}

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  const std::string& name) {
  if (bytes.size() < 10 || bytes.substr(0, kMagic.size()) != kMagic) {
    return Bad(name, "not a .npy file (bad magic string)");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  const int minor = static_cast<uint8_t>(bytes[7]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2) {
    if (bytes.size() < 12) return Bad(name, "truncated version 2.0 header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i]))
                    << (8 * i);
    }
    offset = 12;
  } else {
    return Bad(name, absl::StrCat("format version ", major, ".", minor,
                                  " is not supported (only 1.0 and 2.0)"));
  }
  if (bytes.size() < offset + header_len) {
    return Bad(name, absl::StrCat("header of ", header_len,
                                  " bytes runs past the end of the ",
                                  bytes.size(), "-byte file"));
  }
  const absl::string_view header = bytes.substr(offset, header_len);

  NpyArray array;
  absl::StatusOr<absl::string_view> descr = DictValue(header, "descr", name);
  if (!descr.ok()) return descr.status();
  if (*descr == "'<f4'") {
    array.dtype = NpyArray::DType::kFloat32;
  } else if (*descr == "'<f8'") {
    array.dtype = NpyArray::DType::kFloat64;
  } else if (*descr == "'<f2'") {
    array.dtype = NpyArray::DType::kFloat16;
  } else {
    return Bad(name,
               absl::StrCat(
                   "dtype ", *descr,
                   " is not supported (only '<f4', '<f8', '<f2'); convert with "
                   "arr.astype('<f4')"));
  }

  absl::StatusOr<absl::string_view> fortran =
      DictValue(header, "fortran_order", name);
  if (!fortran.ok()) return fortran.status();
  if (*fortran == "True") {
    return Bad(name,
               "fortran_order is True; only C order is supported "
               "(save np.ascontiguousarray(arr))");
  }
  if (*fortran != "False") {
    return Bad(name, absl::StrCat("fortran_order: expected True or False, got ",
                                  *fortran));
  }

  absl::StatusOr<absl::string_view> shape_text =
      DictValue(header, "shape", name);
  if (!shape_text.ok()) return shape_text.status();
  absl::string_view inner = *shape_text;
  if (!absl::ConsumePrefix(&inner, "(") || !absl::ConsumeSuffix(&inner, ")")) {
    return Bad(name,
               absl::StrCat("shape: expected a tuple, got ", *shape_text));
  }
  int64_t count = 1;
  for (absl::string_view part :
       absl::StrSplit(inner, ',', absl::SkipWhitespace())) {
    int64_t dim = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &dim) || dim < 0) {
      return Bad(name, absl::StrCat("shape: bad dimension '", part, "' in ",
                                    *shape_text));
    }
    if (dim > 0 && count > INT64_MAX / dim)
      return Bad(name, "shape: too many elements");
    count *= dim;
    array.shape.push_back(dim);
  }

  const size_t data_offset = offset + header_len;
  const uint64_t expected =
      static_cast<uint64_t>(count) * NpyElementSize(array.dtype);
  const uint64_t present = bytes.size() - data_offset;
  if (present != expected) {
    return Bad(name, absl::StrCat("shape ", *shape_text, " needs ", expected,
                                  " data bytes, the file has ", present));
  }
  array.data = std::string(bytes.substr(data_offset));
  return array;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ParseNpy(contents.str(), path);
}

}  // namespace cka::client
