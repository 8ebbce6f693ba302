// ParseActivationBatch: a StreamActivations message read as bytes becomes the
// batch, or an INVALID_ARGUMENT naming what is wrong with it.
#include "server/batch_message.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer Wire(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

v1::ActivationBatch Batch(const std::string& source, const std::string& layer,
                          const std::string& batch_id) {
  v1::ActivationBatch batch;
  batch.set_session_id("s");
  batch.set_source(source);
  batch.set_batch_id(batch_id);
  batch.set_step(7);
  v1::LayerActivation* first = batch.add_layers();
  first->set_layer("first");
  first->mutable_activations()->add_shape(4);
  first->mutable_activations()->add_shape(2);
  first->mutable_activations()->set_data(std::string(32, '\0'));
  batch.add_layers()->set_layer(layer);
  return batch;
}

// Serializes without protobuf's UTF-8 check getting in the way (it only logs).
std::string Serialized(const v1::ActivationBatch& batch) {
  std::string bytes;
  EXPECT_TRUE(batch.SerializeToString(&bytes));
  return bytes;
}

TEST(BatchMessageTest, AValidMessageIsParsedAndTheBufferCleared) {
  const v1::ActivationBatch sent = Batch("m", "fc", "b1");
  grpc::ByteBuffer message = Wire(Serialized(sent));
  v1::ActivationBatch batch;
  ASSERT_TRUE(ParseActivationBatch(&message, &batch).ok());
  EXPECT_EQ(batch.SerializeAsString(), sent.SerializeAsString());
  EXPECT_EQ(message.Length(), 0u);
}

TEST(BatchMessageTest, ANameThatIsNotUtf8IsNamedAndTheValidNamesKept) {
  struct Case {
    std::string source, layer, batch_id, field;
  };
  for (const Case& c : {Case{"m\xff", "fc", "b1", "field 'source'"},
                        Case{"m", "f\xc3", "b1", "field 'layers[1].layer'"},
                        Case{"m", "fc", "\xe2\x82", "field 'batch_id'"}}) {
    SCOPED_TRACE(c.field);
    grpc::ByteBuffer message =
        Wire(Serialized(Batch(c.source, c.layer, c.batch_id)));
    v1::ActivationBatch batch;
    const absl::Status status = ParseActivationBatch(&message, &batch);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(),
                HasSubstr(c.field + " of the batch is not UTF-8"));
    EXPECT_EQ(batch.session_id(), "s");
    // Only valid names are kept: the ack that carries them must serialize.
    EXPECT_EQ(batch.source(), c.field == "field 'source'" ? "" : c.source);
    EXPECT_EQ(batch.batch_id(),
              c.field == "field 'batch_id'" ? "" : c.batch_id);
    EXPECT_EQ(batch.layers_size(), 0);
    EXPECT_EQ(message.Length(), 0u);
  }
}

TEST(BatchMessageTest, ABrokenWireFormatIsInvalidArgumentWithItsSize) {
  const std::string valid = Serialized(Batch("m", "fc", "b1"));
  for (const std::string& bytes :
       {std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11),
        valid.substr(0, valid.size() - 3), std::string("\x0a\x05s", 3)}) {
    grpc::ByteBuffer message = Wire(bytes);
    v1::ActivationBatch batch;
    const absl::Status status = ParseActivationBatch(&message, &batch);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(),
                HasSubstr("(" + std::to_string(bytes.size()) +
                          " bytes) is not a cka.v1.ActivationBatch"));
  }
}

TEST(BatchMessageTest, AnAckWhoseMessageEndsInsideACharacterStillSerializes) {
  v1::BatchAck ack;
  ack.set_batch_id("b1");
  ack.set_code(3);
  ack.set_message("session 'caf\xc3");  // a quote cut after 4 bytes
  grpc::ByteBuffer message;
  SerializeBatchAck(ack, &message);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(message.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  v1::BatchAck read;
  ASSERT_TRUE(read.ParseFromString(bytes));
  EXPECT_EQ(read.batch_id(), "b1");
  EXPECT_THAT(read.message(), HasSubstr("caf\\xc3"));
}

}  // namespace
}  // namespace cka::server
