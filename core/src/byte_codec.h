// Little-endian binary encoding of session state. Internal to cka::core.
#ifndef CKA_CORE_SRC_BYTE_CODEC_H_
#define CKA_CORE_SRC_BYTE_CODEC_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cka::core {

// Appends values to a byte string.
class ByteWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void I64(int64_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void F64(double v) { Raw(&v, sizeof v); }
  void String(std::string_view s);
  void Doubles(const std::vector<double>& v);
  // Writes the concatenation of `blocks` as Doubles() writes one vector.
  void ConcatDoubles(
      const std::vector<std::shared_ptr<const std::vector<double>>>& blocks);
  void I64s(const std::vector<int64_t>& v);
  void Ints(const std::vector<int>& v);
  std::string& bytes() { return out_; }
  // Makes room for `n` more bytes at once: large records (sums, kernels) are
  // encoded under the session's mutex, where growing step by step would copy
  // them several times.
  void Reserve(size_t n) { out_.reserve(out_.size() + n); }

 private:
  void Raw(const void* p, size_t n);
  std::string out_;
};

// Reads what ByteWriter wrote. Every read checks the remaining length; after
// the first failure all reads fail and ok() is false. Lengths are checked
// against the remaining bytes before any allocation, so damaged input cannot
// make it allocate more than the input's size.
class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) { return Raw(v, sizeof *v); }
  bool I64(int64_t* v) { return Raw(v, sizeof *v); }
  bool U64(uint64_t* v) { return Raw(v, sizeof *v); }
  bool F64(double* v) { return Raw(v, sizeof *v); }
  bool String(std::string* s);
  bool Doubles(std::vector<double>* v);
  bool I64s(std::vector<int64_t>* v);
  bool Ints(std::vector<int>* v);
  // Reads a count and checks that at least count * min_bytes_each bytes remain.
  bool Count(int64_t* count, size_t min_bytes_each);
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  bool Raw(void* p, size_t n);
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Returns the 64-bit FNV-1a hash of `bytes`.
uint64_t Fnv1a64(std::string_view bytes);

}  // namespace cka::core

#endif  // CKA_CORE_SRC_BYTE_CODEC_H_
