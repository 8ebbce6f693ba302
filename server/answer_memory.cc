#include "server/answer_memory.h"

#include <string>
#include <vector>

namespace cka::server {
namespace {

// Per entry of an answer: 8 bytes for each double and int64 in the core
// value, as much again in the message's repeated fields, and at most 9 bytes
// (a tag-free packed double or a 10-byte varint) once serialised.
constexpr int64_t kCoreEntryBytes = 8;
constexpr int64_t kMessageEntryBytes = 8;
constexpr int64_t kWireEntryBytes = 10;
constexpr int64_t kPerEntry =
    kCoreEntryBytes + kMessageEntryBytes + kWireEntryBytes;
// A string's container overhead (std::string and the message's field), a
// message's fixed part, and a block's or a bucket's.
constexpr int64_t kStringOverhead = 64;
constexpr int64_t kFixed = 1024;
constexpr int64_t kPartOverhead = 256;

int64_t StringBytes(const std::string& s) {
  // Three copies: core, message, wire.
  return 3 * (static_cast<int64_t>(s.size()) + kStringOverhead);
}

int64_t StringsBytes(const std::vector<std::string>& v) {
  int64_t bytes = 0;
  for (const std::string& s : v) bytes += StringBytes(s);
  return bytes;
}

// The JSON API: 8 bytes per value in the received message, and its JSON text
// ("-1.2345678901234567e-308," for a double, "\"-9223372036854775808\"," for
// an int64); a name once in the message and, escaped, in the text.
constexpr int64_t kJsonDouble = 8 + 25;
constexpr int64_t kJsonInt64 = 8 + 24;

int64_t JsonStringBytes(const std::string& s) {
  // "\u00XX" is the longest escape of a byte (names have no control
  // characters, but nothing here depends on that).
  return 7 * static_cast<int64_t>(s.size()) + kStringOverhead;
}

template <typename Strings>
int64_t JsonStringsBytes(const Strings& v) {
  int64_t bytes = 0;
  for (const std::string& s : v) bytes += JsonStringBytes(s);
  return bytes;
}

}  // namespace

int64_t JsonAnswerBytes(const v1::SimilarityMatrix& m) {
  int64_t bytes = kFixed + JsonStringBytes(m.session_id()) +
                  JsonStringBytes(m.measure()) + JsonStringBytes(m.note()) +
                  JsonStringsBytes(m.rows()) + JsonStringsBytes(m.cols());
  bytes += kJsonDouble * (m.values_size() + m.standard_errors_size()) +
           kJsonInt64 * m.batches_size();
  for (const v1::LayerBlock& b : m.blocks()) {
    bytes += kPartOverhead + JsonStringBytes(b.source()) +
             JsonStringBytes(b.first_stream()) +
             JsonStringBytes(b.last_stream());
  }
  return bytes;
}

int64_t JsonAnswerBytes(const v1::SimilaritySeries& s) {
  int64_t bytes =
      kFixed + JsonStringBytes(s.session_id()) + JsonStringBytes(s.measure());
  for (const v1::StreamPair& p : s.pairs()) {
    bytes += JsonStringBytes(p.row()) + JsonStringBytes(p.col());
  }
  for (const v1::SeriesBucket& b : s.buckets()) {
    bytes += kPartOverhead +
             kJsonDouble * (b.values_size() + b.standard_errors_size()) +
             kJsonInt64 * b.batches_size();
  }
  return bytes;
}

int64_t AnswerBytes(const core::SimilarityMatrix& matrix) {
  int64_t bytes = kFixed + StringBytes(matrix.measure) +
                  StringBytes(matrix.note) + StringsBytes(matrix.rows) +
                  StringsBytes(matrix.cols);
  bytes += kPerEntry *
           static_cast<int64_t>(matrix.values.size() + matrix.batches.size() +
                                matrix.standard_errors.size());
  for (const core::LayerBlock& b : matrix.blocks) {
    bytes += kPartOverhead + StringBytes(b.source) +
             StringBytes(b.first_stream) + StringBytes(b.last_stream);
  }
  return bytes;
}

int64_t AnswerBytes(const core::SimilaritySeries& series) {
  int64_t bytes = kFixed + StringBytes(series.measure);
  for (const core::StreamPair& p : series.pairs) {
    bytes += StringBytes(p.row) + StringBytes(p.col);
  }
  for (const core::SeriesBucket& b : series.buckets) {
    bytes +=
        kPartOverhead +
        kPerEntry * static_cast<int64_t>(b.values.size() + b.batches.size() +
                                         b.standard_errors.size());
  }
  return bytes;
}

}  // namespace cka::server
