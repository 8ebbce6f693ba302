#include "byte_codec.h"

#include <cstring>

namespace cka::core {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "state encoding assumes little-endian");

void ByteWriter::Raw(const void* p, size_t n) {
  if (n == 0) return;
  out_.append(static_cast<const char*>(p), n);
}

void ByteWriter::String(std::string_view s) {
  U64(s.size());
  out_.append(s.data(), s.size());
}

void ByteWriter::Doubles(const std::vector<double>& v) {
  U64(v.size());
  Raw(v.data(), v.size() * sizeof(double));
}

void ByteWriter::ConcatDoubles(
    const std::vector<std::shared_ptr<const std::vector<double>>>& blocks) {
  size_t count = 0;
  for (const auto& b : blocks) count += b->size();
  U64(count);
  for (const auto& b : blocks) Raw(b->data(), b->size() * sizeof(double));
}

void ByteWriter::I64s(const std::vector<int64_t>& v) {
  U64(v.size());
  Raw(v.data(), v.size() * sizeof(int64_t));
}

void ByteWriter::Ints(const std::vector<int>& v) {
  U64(v.size());
  for (int x : v) I64(x);
}

bool ByteReader::Raw(void* p, size_t n) {
  if (!ok_ || in_.size() - pos_ < n) return ok_ = false;
  if (n == 0) return true;  // p may be the null data() of an empty vector
  std::memcpy(p, in_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::Count(int64_t* count, size_t min_bytes_each) {
  uint64_t c;
  if (!U64(&c)) return false;
  const size_t left = in_.size() - pos_;
  if (min_bytes_each > 0 ? c > left / min_bytes_each : c > left)
    return ok_ = false;
  *count = static_cast<int64_t>(c);
  return true;
}

bool ByteReader::String(std::string* s) {
  int64_t n;
  if (!Count(&n, 1)) return false;
  s->assign(in_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool ByteReader::Doubles(std::vector<double>* v) {
  int64_t n;
  if (!Count(&n, sizeof(double))) return false;
  v->resize(n);
  return Raw(v->data(), n * sizeof(double));
}

bool ByteReader::I64s(std::vector<int64_t>* v) {
  int64_t n;
  if (!Count(&n, sizeof(int64_t))) return false;
  v->resize(n);
  return Raw(v->data(), n * sizeof(int64_t));
}

bool ByteReader::Ints(std::vector<int>* v) {
  int64_t n;
  if (!Count(&n, sizeof(int64_t))) return false;
  v->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t x;
    if (!I64(&x)) return false;
    if (x < INT32_MIN || x > INT32_MAX) return ok_ = false;
    (*v)[i] = static_cast<int>(x);
  }
  return true;
}

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace cka::core
