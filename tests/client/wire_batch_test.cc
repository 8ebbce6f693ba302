#include "src/wire_batch.h"

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cka::client::internal {
namespace {

// `size` bytes 0, 1, 2, ... (mod 251).
std::string Bytes(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(i % 251);
  return out;
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

void AddLayer(const std::string& name, bool gram, std::vector<int64_t> shape,
              v1::ActivationBatch* message) {
  v1::LayerActivation* layer = message->add_layers();
  layer->set_layer(name);
  v1::Tensor* tensor =
      gram ? layer->mutable_gram() : layer->mutable_activations();
  for (int64_t dim : shape) tensor->add_shape(dim);
  tensor->set_dtype(gram ? v1::FLOAT32 : v1::FLOAT16);
}

// A header of three layers (activations, Gram, activations) whose payloads
// need 1-, 2- and 3-byte lengths, and the same message with the payloads in.
struct Example {
  v1::ActivationBatch header;
  std::vector<std::string> payloads;
  v1::ActivationBatch full;
};

Example MakeExample() {
  Example e;
  e.header.set_session_id("session");
  e.header.set_source("model-a");
  e.header.set_batch_id("batch-7");
  e.header.set_step(-3);  // a negative int64 is a 10-byte varint
  AddLayer("conv1", false, {2, 25}, &e.header);
  AddLayer("fc", true, {12, 12}, &e.header);
  AddLayer("block.3", false, {8, 6000}, &e.header);
  e.payloads = {Bytes(100), Bytes(576), Bytes(96000)};
  e.full = e.header;
  for (int i = 0; i < 3; ++i) {
    v1::LayerActivation* layer = e.full.mutable_layers(i);
    (layer->has_gram() ? layer->mutable_gram() : layer->mutable_activations())
        ->set_data(e.payloads[i]);
  }
  return e;
}

TEST(WireBatchTest, BytesAreThoseOfTheWholeMessage) {
  Example e = MakeExample();
  std::vector<LayerBytes> payloads;
  for (std::string p : e.payloads) payloads.emplace_back(std::move(p));
  std::shared_ptr<const WireBatch> batch =
      WireBatch::Create(e.header, std::move(payloads));
  const std::string expected = e.full.SerializeAsString();
  EXPECT_EQ(batch->batch_id(), "batch-7");
  EXPECT_EQ(batch->size(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(Flatten(batch->ToByteBuffer()), expected);
  // Every send gives the same bytes (a resend after a reconnect).
  EXPECT_EQ(Flatten(batch->ToByteBuffer()), expected);
}

TEST(WireBatchTest, HeaderWithoutLayersAndEmptyPayloadsParseBack) {
  v1::ActivationBatch header;
  header.set_session_id("s");
  header.set_batch_id("b");
  std::shared_ptr<const WireBatch> none = WireBatch::Create(header, {});
  EXPECT_EQ(Flatten(none->ToByteBuffer()), header.SerializeAsString());
  EXPECT_EQ(none->size(),
            static_cast<int64_t>(header.SerializeAsString().size()));

  AddLayer("empty", false, {0, 4}, &header);
  std::vector<LayerBytes> payloads;
  payloads.emplace_back(std::string());
  std::shared_ptr<const WireBatch> empty =
      WireBatch::Create(header, std::move(payloads));
  v1::ActivationBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(Flatten(empty->ToByteBuffer())));
  EXPECT_EQ(parsed.SerializeAsString(), header.SerializeAsString());
  EXPECT_EQ(empty->size(),
            static_cast<int64_t>(header.SerializeAsString().size()));
}

TEST(WireBatchTest, PayloadsAreSentFromTheLayersBuffersNotCopied) {
  Example e = MakeExample();
  // The largest payload is lent by its owner, the others are strings.
  auto owner = std::make_shared<std::string>(e.payloads[2]);
  std::weak_ptr<std::string> watch = owner;
  const char* lent = owner->data();
  std::vector<LayerBytes> payloads;
  payloads.emplace_back(std::string(e.payloads[0]));
  payloads.emplace_back(std::string(e.payloads[1]));
  payloads.emplace_back(owner, lent, owner->size());
  owner.reset();
  std::shared_ptr<const WireBatch> batch =
      WireBatch::Create(e.header, std::move(payloads));
  grpc::ByteBuffer buffer = batch->ToByteBuffer();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  bool found = false;
  for (const grpc::Slice& s : slices) {
    if (reinterpret_cast<const char*>(s.begin()) == lent) {
      found = true;
      EXPECT_EQ(s.size(), e.payloads[2].size());
    }
  }
  EXPECT_TRUE(found) << "no slice points at the lent buffer";
  slices.clear();

  // The buffer keeps the batch, and so the lent bytes, alive by itself.
  batch.reset();
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(Flatten(buffer), e.full.SerializeAsString());
  buffer.Clear();
  EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace cka::client::internal
