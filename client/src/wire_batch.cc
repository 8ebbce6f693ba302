#include "wire_batch.h"

#include <google/protobuf/io/coded_stream.h>
#include <grpcpp/support/slice.h>

#include <utility>

namespace cka::client::internal {
namespace {

using google::protobuf::io::CodedOutputStream;

void AppendVarint(uint64_t value, std::string* out) {
  uint8_t bytes[10];
  const uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, bytes);
  out->append(reinterpret_cast<const char*>(bytes), end - bytes);
}

// Appends the tag and length of length-delimited field `field` whose value has
// `length` bytes.
void AppendFieldHead(int field, uint64_t length, std::string* out) {
  constexpr uint64_t kLengthDelimited = 2;  // the wire type
  AppendVarint((static_cast<uint64_t>(field) << 3) | kLengthDelimited, out);
  AppendVarint(length, out);
}

// Bytes of the tag and length of a length-delimited field of `length` bytes.
uint64_t FieldHeadSize(int field, uint64_t length) {
  return CodedOutputStream::VarintSize64(static_cast<uint64_t>(field) << 3) +
         CodedOutputStream::VarintSize64(length);
}

void ReleaseBatch(void* batch) {
  delete static_cast<std::shared_ptr<const WireBatch>*>(batch);
}

}  // namespace

std::shared_ptr<const WireBatch> WireBatch::Create(
    v1::ActivationBatch header, std::vector<LayerBytes> payloads) {
  std::shared_ptr<WireBatch> batch(new WireBatch());
  batch->batch_id_ = header.batch_id();
  // The fields in field-number order, as SerializeAsString writes them: the
  // batch's fields, then each layer (its name, then its tensor: shape, dtype,
  // then data). Every length is known before the data is sent.
  google::protobuf::RepeatedPtrField<v1::LayerActivation> layers;
  layers.Swap(header.mutable_layers());
  std::string framing = header.SerializeAsString();
  int64_t size = 0;
  for (int i = 0; i < layers.size(); ++i) {
    const v1::LayerActivation& layer = layers[i];
    const bool gram = layer.has_gram();
    const std::string tensor =
        (gram ? layer.gram() : layer.activations()).SerializeAsString();
    v1::LayerActivation name;
    name.set_layer(layer.layer());
    const std::string named = name.SerializeAsString();
    const uint64_t data = payloads[i].size();
    const uint64_t tensor_size =
        tensor.size() +
        (data == 0 ? 0
                   : FieldHeadSize(v1::Tensor::kDataFieldNumber, data) + data);
    const int tensor_field = gram
                                 ? v1::LayerActivation::kGramFieldNumber
                                 : v1::LayerActivation::kActivationsFieldNumber;
    const uint64_t layer_size =
        named.size() + FieldHeadSize(tensor_field, tensor_size) + tensor_size;
    AppendFieldHead(v1::ActivationBatch::kLayersFieldNumber, layer_size,
                    &framing);
    framing += named;
    AppendFieldHead(tensor_field, tensor_size, &framing);
    framing += tensor;
    if (data > 0) AppendFieldHead(v1::Tensor::kDataFieldNumber, data, &framing);
    size += static_cast<int64_t>(framing.size() + data);
    batch->framing_.push_back(std::move(framing));
    framing.clear();
  }
  size += static_cast<int64_t>(framing.size());
  batch->framing_.push_back(std::move(framing));
  batch->size_ = size;
  batch->payloads_ = std::move(payloads);
  return batch;
}

grpc::ByteBuffer WireBatch::ToByteBuffer() const {
  std::vector<grpc::Slice> slices;
  slices.reserve(framing_.size() + payloads_.size());
  for (size_t i = 0; i < framing_.size(); ++i) {
    if (!framing_[i].empty()) {
      slices.emplace_back(framing_[i].data(), framing_[i].size());  // copied
    }
    if (i == payloads_.size() || payloads_[i].size() == 0) continue;
    // Not copied: gRPC releases the reference once the bytes are sent.
    slices.emplace_back(
        const_cast<char*>(payloads_[i].data()), payloads_[i].size(),
        &ReleaseBatch,
        new std::shared_ptr<const WireBatch>(shared_from_this()));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace cka::client::internal
