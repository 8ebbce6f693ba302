#include "server/batch_message.h"

#include <cstdint>
#include <string>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace cka::server {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

// Bytes of a bad name quoted in the message.
constexpr size_t kQuotedBytes = 16;

// The check protobuf itself applies to proto3 strings when it parses, so that
// the diagnosis agrees with the parser that failed.
bool IsUtf8(const std::string& bytes) {
  return google::protobuf::internal::IsStructurallyValidUTF8(
      bytes.data(), static_cast<int>(bytes.size()));
}

// What FindBadName found: the first name that is not UTF-8 ("" if none).
struct BadName {
  std::string field;
  std::string start;  // its first bytes
};

// Reads a length-delimited name of `field` into `*valid` if it is UTF-8, else
// records it in `*bad` (the first one only). False: the wire format is broken.
bool ReadName(CodedInputStream* in, const std::string& field,
              std::string* valid, BadName* bad) {
  std::string bytes;
  if (!WireFormatLite::ReadBytes(in, &bytes)) return false;
  if (IsUtf8(bytes)) {
    if (valid != nullptr) *valid = std::move(bytes);
  } else if (bad->field.empty()) {
    bad->field = field;
    bad->start = bytes.substr(0, kQuotedBytes);
  }
  return true;
}

// Walks an ActivationBatch's wire format, reading only its names (tensors are
// skipped, not copied). Returns false when the wire format is broken.
bool FindBadName(CodedInputStream* in, v1::ActivationBatch* batch,
                 BadName* bad) {
  int layer = 0;
  while (const uint32_t tag = in->ReadTag()) {
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    const bool delimited = WireFormatLite::GetTagWireType(tag) ==
                           WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    bool ok;
    if (delimited && number == v1::ActivationBatch::kSessionIdFieldNumber) {
      ok = ReadName(in, "session_id", batch->mutable_session_id(), bad);
    } else if (delimited && number == v1::ActivationBatch::kSourceFieldNumber) {
      ok = ReadName(in, "source", batch->mutable_source(), bad);
    } else if (delimited &&
               number == v1::ActivationBatch::kBatchIdFieldNumber) {
      ok = ReadName(in, "batch_id", batch->mutable_batch_id(), bad);
    } else if (delimited && number == v1::ActivationBatch::kLayersFieldNumber) {
      uint32_t length;
      if (!in->ReadVarint32(&length)) return false;
      const CodedInputStream::Limit limit = in->PushLimit(length);
      const std::string field = absl::StrCat("layers[", layer++, "].layer");
      while (const uint32_t inner = in->ReadTag()) {
        const bool name =
            inner ==
            WireFormatLite::MakeTag(v1::LayerActivation::kLayerFieldNumber,
                                    WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
        if (!(name ? ReadName(in, field, nullptr, bad)
                   : WireFormatLite::SkipField(in, inner))) {
          return false;
        }
      }
      ok = in->ConsumedEntireMessage();
      in->PopLimit(limit);
    } else {
      ok = WireFormatLite::SkipField(in, tag);
    }
    if (!ok) return false;
  }
  return in->ConsumedEntireMessage();
}

}  // namespace

absl::Status ParseActivationBatch(grpc::ByteBuffer* message,
                                  v1::ActivationBatch* batch) {
  const size_t bytes = message->Length();
  bool parsed;
  {
    grpc::ProtoBufferReader reader(message);
    parsed = reader.status().ok() && batch->ParseFromZeroCopyStream(&reader);
  }
  if (parsed) {
    message->Clear();
    return absl::OkStatus();
  }
  batch->Clear();
  BadName bad;
  bool wire_ok;
  {
    grpc::ProtoBufferReader reader(message);
    CodedInputStream in(&reader);
    wire_ok = reader.status().ok() && FindBadName(&in, batch, &bad);
  }
  message->Clear();
  if (wire_ok && !bad.field.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field '", bad.field, "' of the batch is not UTF-8 (it starts '",
        absl::CHexEscape(bad.start),
        "'): session ids, sources, batch ids and layer names are UTF-8 "
        "strings"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "the message (", bytes,
      " bytes) is not a cka.v1.ActivationBatch: its protobuf wire format is "
      "broken"));
}

void SerializeBatchAck(const v1::BatchAck& ack, grpc::ByteBuffer* message) {
  bool own_buffer;
  grpc::Status status;
  if (IsUtf8(ack.message())) {
    status = grpc::SerializationTraits<v1::BatchAck>::Serialize(ack, message,
                                                                &own_buffer);
  } else {
    // A message quoting the start of a long name may end inside a character.
    v1::BatchAck escaped = ack;
    escaped.set_message(absl::CHexEscape(ack.message()));
    status = grpc::SerializationTraits<v1::BatchAck>::Serialize(
        escaped, message, &own_buffer);
  }
  ABSL_RAW_CHECK(status.ok(), "a BatchAck could not be serialized");
}

}  // namespace cka::server
