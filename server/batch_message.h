// The messages of StreamActivations, read as bytes so that one that is not a
// cka.v1.ActivationBatch gets an ack of its own instead of ending the stream.
#ifndef CKA_SERVER_BATCH_MESSAGE_H_
#define CKA_SERVER_BATCH_MESSAGE_H_

#include "absl/status/status.h"
#include "cka/v1/similarity.pb.h"
#include "grpcpp/support/byte_buffer.h"

namespace cka::server {

// Parses `message` into `batch` and clears `message`. When it is not a
// cka.v1.ActivationBatch, returns INVALID_ARGUMENT naming what is wrong —
// most often a name that is not UTF-8 (proto3 strings must be): "field
// 'layers[2].layer' is not UTF-8 (it starts '\xff\xfe')" — and leaves in
// `batch` only its session_id, source and batch_id that are valid, so that
// the ack can name them. Reads the message twice at most and copies no tensor
// bytes when it fails. Thread-compatible.
absl::Status ParseActivationBatch(grpc::ByteBuffer* message,
                                  v1::ActivationBatch* batch);

// Serializes `ack` into `message`; a failure is a bug (every string of an
// ack is UTF-8: ParseActivationBatch keeps only valid names).
void SerializeBatchAck(const v1::BatchAck& ack, grpc::ByteBuffer* message);

}  // namespace cka::server

#endif  // CKA_SERVER_BATCH_MESSAGE_H_
