// One ActivationBatch message as the streamer sends it, without a copy of its
// tensor bytes.
#ifndef CKA_CLIENT_SRC_WIRE_BATCH_H_
#define CKA_CLIENT_SRC_WIRE_BATCH_H_

#include <grpcpp/support/byte_buffer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cka/client/batch.h"
#include "cka/v1/similarity.pb.h"

namespace cka::client::internal {

// The serialized form of an ActivationBatch whose tensor bytes stay in the
// layers' own buffers. gRPC's own serialization of the message would copy every
// tensor byte once more on the sending thread (and, for a buffer the caller
// lent, so would putting it into the message). Here the other fields are
// serialized once, at creation, and a send hands gRPC slices that point into
// the layers' buffers; the slices keep this batch alive until gRPC lets go of
// them. The bytes are those of the full message's SerializeAsString.
//
// Immutable and thread-safe after Create.
class WireBatch : public std::enable_shared_from_this<WireBatch> {
 public:
  // `header` is the message with every layer's tensor (activations or gram)
  // set but its `data` empty; `payloads[i]` is the data of layer i's tensor.
  // Requires payloads.size() == header.layers_size().
  static std::shared_ptr<const WireBatch> Create(
      v1::ActivationBatch header, std::vector<LayerBytes> payloads);

  const std::string& batch_id() const { return batch_id_; }
  // Bytes of the serialized message.
  int64_t size() const { return size_; }
  // Returns the serialized message.
  grpc::ByteBuffer ToByteBuffer() const;

 private:
  WireBatch() = default;

  std::string batch_id_;
  std::vector<LayerBytes> payloads_;
  // The message is framing_[0], payloads_[0], framing_[1], ..., the last
  // payload, then framing_.back() (empty unless there are no layers):
  // framing_[i] ends with the field heads of payload i, and framing_[0] starts
  // with the batch's own fields.
  std::vector<std::string> framing_;
  int64_t size_ = 0;
};

}  // namespace cka::client::internal

#endif  // CKA_CLIENT_SRC_WIRE_BATCH_H_
