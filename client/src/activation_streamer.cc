#include "cka/client/activation_streamer.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/stubs/common.h"
#include "gram.h"
#include "grpc_status.h"
#include "wire_batch.h"

namespace cka::client {
namespace {

using internal::WireBatch;
// Writes each batch as the serialized bytes of a WireBatch (no copy of its
// tensor bytes), reads BatchAcks.
using BatchStream = grpc::ClientReaderWriter<grpc::ByteBuffer, v1::BatchAck>;

// Bytes a tag, a length prefix and a few small fields add around a payload,
// generously.
constexpr int64_t kLayerOverheadBytes = 64;
constexpr int64_t kBatchOverheadBytes = 64;
// How long Close waits for the server to end the stream after the client's
// half-close.
constexpr absl::Duration kHalfCloseGrace = absl::Seconds(10);

// Puts the calling thread in Linux's SCHED_BATCH class: a background thread of
// the streamer that wakes up then does not preempt the training loop (Submit
// wakes the sender, which then serialises a batch for milliseconds). It still
// gets its fair share of the CPU. Best effort; no privilege needed.
void DeferToTheTrainingLoop() {
#if defined(__linux__)
  sched_param param{};
  param.sched_priority = 0;
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
#endif
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Returns InvalidArgument naming `what` when `text` is not valid UTF-8:
// protobuf string fields must be, and ckad's gRPC cannot even parse a message
// that breaks the rule (the stream would end without an ack).
absl::Status CheckUtf8(const std::string& what, const std::string& text) {
  if (google::protobuf::internal::IsStructurallyValidUTF8(
          text.data(), static_cast<int>(text.size()))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", absl::CHexEscape(text.substr(0, 64)),
                   "' is not valid UTF-8 (names travel as protobuf strings)"));
}

// Returns the bytes prod(shape)·element needs, or an error naming the layer.
absl::StatusOr<int64_t> CheckLayer(const std::string& batch_id,
                                   const LayerPayload& layer) {
  // Formatted only for an error: Submit checks every layer of every batch.
  auto where = [&] {
    return absl::StrCat("batch '", batch_id, "' layer '", layer.layer, "'");
  };
  if (layer.layer.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch '", batch_id, "': a layer has no name"));
  }
  if (absl::Status s = CheckUtf8("layer", layer.layer); !s.ok()) return s;
  const size_t element = DTypeSize(layer.dtype);
  if (element == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": dtype ", static_cast<int>(layer.dtype),
                     " is not one of FLOAT32, FLOAT64, FLOAT16, BFLOAT16"));
  }
  if (layer.is_gram) {
    if (layer.shape.size() != 2 || layer.shape[0] != layer.shape[1]) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": Gram shape ",
                                                     ShapeString(layer.shape),
                                                     ", expected [n, n]"));
    }
  } else if (layer.shape.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": shape ", ShapeString(layer.shape),
                     ", expected rank >= 2 (examples first)"));
  }
  int64_t total = static_cast<int64_t>(element);
  for (int64_t dim : layer.shape) {
    if (dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": shape ",
                                                     ShapeString(layer.shape),
                                                     " has a dimension <= 0"));
    }
    if (total > INT64_MAX / dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), ": shape ", ShapeString(layer.shape), " overflows"));
    }
    total *= dim;
  }
  if (static_cast<int64_t>(layer.bytes.size()) != total) {
    return absl::InvalidArgumentError(
        absl::StrCat(where(), ": ", layer.bytes.size(), " bytes, but shape ",
                     ShapeString(layer.shape), " needs ", total));
  }
  return total;
}

// Returns the bytes of the float32 n × n Gram of an n × d activation layer.
int64_t GramBytes(const LayerPayload& layer) {
  return layer.shape[0] * layer.shape[0] * 4;
}

// Returns true when `layer` shrinks by sending its Gram instead.
bool GramIsSmaller(const LayerPayload& layer) {
  return !layer.is_gram &&
         GramBytes(layer) < static_cast<int64_t>(layer.bytes.size());
}

std::string GramBytesOf(const LayerPayload& layer) {
  internal::GramInput in;
  in.data = layer.bytes.data();
  in.n = layer.shape[0];
  in.d =
      static_cast<int64_t>(layer.bytes.size() / DTypeSize(layer.dtype)) / in.n;
  switch (layer.dtype) {
    case v1::FLOAT64:
      in.type = internal::GramInput::Type::kFloat64;
      break;
    case v1::FLOAT16:
      in.type = internal::GramInput::Type::kFloat16;
      break;
    case v1::BFLOAT16:
      in.type = internal::GramInput::Type::kBFloat16;
      break;
    default:
      in.type = internal::GramInput::Type::kFloat32;
      break;
  }
  std::string bytes(static_cast<size_t>(in.n * in.n) * sizeof(float), '\0');
  internal::Gram(in, reinterpret_cast<float*>(bytes.data()));
  return bytes;
}

// Returns true for a stream-level error that will happen again on a resend of
// the same batch (so the oldest outstanding batch is failed instead of resent
// forever).
bool IsPermanent(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return true;
    default:
      return false;
  }
}

class ActivationStreamerImpl final : public ActivationStreamer {
 public:
  ActivationStreamerImpl(const Client& client, StreamerOptions options)
      : client_options_(client.options()),
        options_(std::move(options)),
        channel_(client.channel()),
        stub_(v1::Similarity::NewStub(channel_)),
        stream_method_(stream_method_name_.c_str(),
                       grpc::internal::RpcMethod::BIDI_STREAMING, channel_) {
    sender_ = std::thread([this] { RunSender(); });
  }

  ~ActivationStreamerImpl() override { Stop(); }

  absl::Status Submit(Batch batch) override;
  absl::StatusOr<std::vector<BatchError>> Flush(absl::Time deadline) override;
  absl::StatusOr<std::vector<BatchError>> Close(absl::Time deadline) override;
  StreamerStats stats() const override {
    absl::MutexLock lock(&mu_);
    return stats_;
  }
  void DiscardAcksForTesting(bool discard) override {
    absl::MutexLock lock(&mu_);
    discard_acks_ = discard;
  }
  void BreakStreamForTesting() override {
    absl::MutexLock lock(&mu_);
    // Acks still arriving on the old stream stay lost; the next stream's count.
    discard_acks_ = false;
    first_live_generation_ = stream_generation_ + 1;
    if (context_ != nullptr) context_->TryCancel();
  }

 private:
  struct Queued {
    Batch batch;
    int64_t bytes = 0;
  };
  struct Outgoing {
    std::shared_ptr<const WireBatch> message;
    bool resend = false;
  };

  int64_t Outstanding() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int64_t>(queue_.size() + unsent_.size() +
                                in_flight_.size());
  }
  void FailBatch(const std::string& batch_id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++stats_.rejected;
    ++completed_;
    errors_.push_back({batch_id, status.code(), std::string(status.message())});
  }

  void RunSender();
  // Runs one stream until it breaks or, when closing, until everything is
  // acked. Returns true when the streamer is done (closed or stopped).
  bool RunStream();
  void ReadAcks(BatchStream* stream, int64_t generation);
  // Turns a queued batch into its wire message, or fails it.
  absl::StatusOr<std::shared_ptr<const WireBatch>> Encode(Batch batch);
  void ResolveGramReduction();
  void Stop();

  const ClientOptions client_options_;
  const StreamerOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Similarity::Stub> stub_;
  // StreamActivations, called through gRPC's own stream factory (as the
  // generated stub does) so that the stream writes byte buffers rather than
  // ActivationBatch messages, which gRPC would serialize into a copy.
  const std::string stream_method_name_ = absl::StrCat(
      "/", v1::Similarity::service_full_name(), "/StreamActivations");
  const grpc::internal::RpcMethod stream_method_;
  std::thread sender_;
  // Touched by the sender thread only.
  enum class GramAllowed {
    kUnknown,
    kYes,
    kNo
  } gram_allowed_ = GramAllowed::kUnknown;

  mutable absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queue_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Outgoing> unsent_
      ABSL_GUARDED_BY(mu_);  // encoded, to (re)send first
  std::deque<Outgoing> in_flight_
      ABSL_GUARDED_BY(mu_);  // written, awaiting their ack
  std::vector<BatchError> errors_ ABSL_GUARDED_BY(mu_);
  StreamerStats stats_ ABSL_GUARDED_BY(mu_);
  int64_t completed_ ABSL_GUARDED_BY(mu_) = 0;  // acked or failed
  bool closed_ ABSL_GUARDED_BY(mu_) =
      false;                                // no more Submit; deliver and stop
  bool stop_ ABSL_GUARDED_BY(mu_) = false;  // stop now
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // the current stream has ended
  bool acked_on_stream_ ABSL_GUARDED_BY(mu_) = false;
  bool discard_acks_ ABSL_GUARDED_BY(mu_) = false;
  int64_t stream_generation_ ABSL_GUARDED_BY(mu_) = 0;  // streams opened so far
  int64_t first_live_generation_ ABSL_GUARDED_BY(mu_) =
      0;  // older streams' acks are lost
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool joined_ = false;  // guarded by join_mu_
  absl::Mutex join_mu_;
};

absl::Status ActivationStreamerImpl::Submit(Batch batch) {
  if (batch.batch_id().empty())
    return absl::InvalidArgumentError("batch_id: empty");
  if (absl::Status s = CheckUtf8("batch_id", batch.batch_id()); !s.ok())
    return s;
  if (batch.layers().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch '", batch.batch_id(), "': no layers"));
  }
  int64_t message_bytes =
      kBatchOverheadBytes +
      static_cast<int64_t>(options_.session_id.size() + options_.source.size() +
                           batch.batch_id().size());
  int64_t payload = 0;
  for (const LayerPayload& layer : batch.layers()) {
    absl::StatusOr<int64_t> bytes = CheckLayer(batch.batch_id(), layer);
    if (!bytes.ok()) return bytes.status();
    payload += *bytes;
    // With the reduction on, the background thread may shrink the layer; it
    // checks the size again on the message it actually builds.
    const int64_t wire = options_.reduce_to_gram && GramIsSmaller(layer)
                             ? std::min(*bytes, GramBytes(layer))
                             : *bytes;
    message_bytes +=
        wire + kLayerOverheadBytes + static_cast<int64_t>(layer.layer.size());
  }
  if (message_bytes > client_options_.max_message_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("batch '", batch.batch_id(), "': its message is about ",
                     message_bytes, " bytes, over the max message size of ",
                     client_options_.max_message_bytes,
                     " bytes; send fewer layers or examples per batch, or "
                     "raise the limit on both sides"));
  }

  absl::MutexLock lock(&mu_);
  auto has_room = [this, payload]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) return true;  // one batch always fits, however large
    return static_cast<int64_t>(queue_.size()) < options_.max_queue_batches &&
           queue_bytes_ + payload <= options_.max_queue_bytes;
  };
  if (!closed_ && !stop_ && !has_room()) {
    if (options_.policy == QueuePolicy::kDropAndCount) {
      ++stats_.dropped;
      return absl::ResourceExhaustedError(absl::StrCat(
          "batch '", batch.batch_id(), "': queue full (", queue_.size(),
          " batches, ", queue_bytes_, " bytes); dropped"));
    }
    auto can_go = [this, &has_room]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || stop_ || has_room();
    };
    mu_.Await(absl::Condition(&can_go));
  }
  if (closed_ || stop_) {
    return absl::FailedPreconditionError(
        absl::StrCat("batch '", batch.batch_id(), "': the streamer is closed"));
  }
  queue_.push_back({std::move(batch), payload});
  queue_bytes_ += payload;
  ++stats_.submitted;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BatchError>> ActivationStreamerImpl::Flush(
    absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const int64_t target = stats_.submitted;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return completed_ >= target || stop_;
  };
  mu_.AwaitWithDeadline(absl::Condition(&done), deadline);
  if (completed_ < target) {
    std::vector<std::string> ids;
    for (const Outgoing& o : in_flight_) ids.push_back(o.message->batch_id());
    for (const Outgoing& o : unsent_) ids.push_back(o.message->batch_id());
    for (const Queued& q : queue_) ids.push_back(q.batch.batch_id());
    if (ids.size() > 8) {
      ids.resize(8);
      ids.push_back("...");
    }
    return absl::DeadlineExceededError(
        absl::StrCat(target - completed_, " of ", target, " batches not acked",
                     stop_ ? " (the streamer is stopped)" : " by the deadline",
                     "; outstanding: ", absl::StrJoin(ids, ", "),
                     "; reconnects so far: ", stats_.reconnects));
  }
  std::vector<BatchError> errors;
  errors.swap(errors_);
  return errors;
}

absl::StatusOr<std::vector<BatchError>> ActivationStreamerImpl::Close(
    absl::Time deadline) {
  absl::StatusOr<std::vector<BatchError>> result = Flush(deadline);
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    if (!result.ok()) {
      stop_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
  }
  absl::MutexLock join_lock(&join_mu_);
  if (!joined_) {
    sender_.join();
    joined_ = true;
  }
  return result;
}

void ActivationStreamerImpl::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  absl::MutexLock join_lock(&join_mu_);
  if (!joined_) {
    sender_.join();
    joined_ = true;
  }
}

void ActivationStreamerImpl::ResolveGramReduction() {
  if (!options_.reduce_to_gram || gram_allowed_ != GramAllowed::kUnknown)
    return;
  grpc::ClientContext context;
  Client::PrepareContext(client_options_, client_options_.default_deadline,
                         &context, options_.session_id);
  v1::GetSessionRequest request;
  request.set_session_id(options_.session_id);
  v1::Session session;
  if (!stub_->GetSession(&context, request, &session).ok())
    return;  // ask again next batch
  gram_allowed_ = GramAllowed::kYes;
  for (const v1::Measure& measure : session.config().measures()) {
    if (measure.estimator() == v1::EXACT ||
        measure.estimator() == v1::EXACT_DEBIASED) {
      gram_allowed_ = GramAllowed::kNo;
    }
  }
}

absl::StatusOr<std::shared_ptr<const WireBatch>> ActivationStreamerImpl::Encode(
    Batch batch) {
  ResolveGramReduction();
  v1::ActivationBatch header;  // the tensors' bytes go in `payloads`
  header.set_session_id(options_.session_id);
  header.set_source(options_.source);
  header.set_batch_id(batch.batch_id());
  header.set_step(batch.step());
  std::vector<LayerBytes> payloads;
  payloads.reserve(batch.layers().size());
  int reduced = 0;
  for (LayerPayload& layer : batch.mutable_layers()) {
    v1::LayerActivation* wire = header.add_layers();
    wire->set_layer(layer.layer);
    if (gram_allowed_ == GramAllowed::kYes && GramIsSmaller(layer)) {
      v1::Tensor* gram = wire->mutable_gram();
      gram->add_shape(layer.shape[0]);
      gram->add_shape(layer.shape[0]);
      gram->set_dtype(v1::FLOAT32);
      payloads.emplace_back(GramBytesOf(layer));
      ++reduced;
      continue;
    }
    v1::Tensor* tensor =
        layer.is_gram ? wire->mutable_gram() : wire->mutable_activations();
    for (int64_t dim : layer.shape) tensor->add_shape(dim);
    tensor->set_dtype(layer.dtype);
    payloads.push_back(std::move(layer.bytes));
  }
  std::shared_ptr<const WireBatch> message =
      WireBatch::Create(std::move(header), std::move(payloads));
  const int64_t size = message->size();
  if (size > client_options_.max_message_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("batch '", batch.batch_id(), "': its message is ", size,
                     " bytes, over the max message size of ",
                     client_options_.max_message_bytes, " bytes"));
  }
  if (reduced > 0) {
    absl::MutexLock lock(&mu_);
    stats_.gram_reduced_layers += reduced;
  }
  return message;
}

void ActivationStreamerImpl::RunSender() {
  DeferToTheTrainingLoop();
  absl::Duration backoff = options_.initial_backoff;
  bool first_stream = true;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || Outstanding() > 0 || closed_;
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_ || (closed_ && Outstanding() == 0)) return;
      if (!first_stream) ++stats_.reconnects;
    }
    first_stream = false;
    if (RunStream()) return;

    absl::MutexLock lock(&mu_);
    if (acked_on_stream_) backoff = options_.initial_backoff;
    auto stopped = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopped), backoff);
    if (stop_) return;
    backoff =
        std::min(options_.max_backoff, backoff * options_.backoff_multiplier);
  }
}

bool ActivationStreamerImpl::RunStream() {
  grpc::ClientContext context;
  Client::PrepareContext(client_options_, absl::ZeroDuration(), &context,
                         options_.session_id);
  std::unique_ptr<BatchStream> stream(
      grpc::internal::ClientReaderWriterFactory<
          grpc::ByteBuffer, v1::BatchAck>::Create(channel_.get(),
                                                  stream_method_, &context));
  int64_t generation = 0;
  {
    absl::MutexLock lock(&mu_);
    context_ = &context;
    generation = ++stream_generation_;
    broken_ = false;
    acked_on_stream_ = false;
    if (stop_) context.TryCancel();
  }
  std::thread reader(
      [this, &stream, generation] { ReadAcks(stream.get(), generation); });

  bool graceful = false;
  while (true) {
    Outgoing next;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (stop_ || broken_) return true;
        if (closed_ && Outstanding() == 0) return true;
        return static_cast<int64_t>(in_flight_.size()) <
                   options_.max_in_flight &&
               (!unsent_.empty() || !queue_.empty());
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_ || broken_) break;
      if (closed_ && Outstanding() == 0) {
        graceful = true;
        break;
      }
      if (!unsent_.empty()) {
        next = std::move(unsent_.front());
        unsent_.pop_front();
      } else {
        Queued queued = std::move(queue_.front());
        queue_.pop_front();
        queue_bytes_ -= queued.bytes;
        const std::string batch_id = queued.batch.batch_id();
        mu_.Unlock();
        absl::StatusOr<std::shared_ptr<const WireBatch>> encoded =
            Encode(std::move(queued.batch));
        mu_.Lock();
        if (!encoded.ok()) {
          FailBatch(batch_id, encoded.status());
          continue;
        }
        next.message = *std::move(encoded);
      }
      // Registered before the write so that its ack always finds it.
      in_flight_.push_back(next);
      ++stats_.sent;
      if (next.resend) ++stats_.resent;
    }
    if (!stream->Write(next.message->ToByteBuffer())) break;
  }

  if (graceful) {
    stream->WritesDone();
    // The server ends the call once it has read the half-close; do not wait
    // forever on one that does not.
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return broken_ || stop_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ended), kHalfCloseGrace))
      context.TryCancel();
  } else {
    // A stream the server ended (the reader saw its end) already has the
    // server's status; cancelling now would replace it with CANCELLED, and a
    // refusal such as UNAUTHENTICATED would look worth retrying.
    bool ended_by_server;
    {
      absl::MutexLock lock(&mu_);
      ended_by_server = broken_ && !stop_;
    }
    if (!ended_by_server) context.TryCancel();
  }
  reader.join();
  const absl::Status status = FromGrpcStatus(stream->Finish());

  absl::MutexLock lock(&mu_);
  context_ = nullptr;
  if (graceful || stop_) return true;
  // Every batch not acked goes out again, oldest first, on the next stream.
  for (auto it = in_flight_.rbegin(); it != in_flight_.rend(); ++it) {
    it->resend = true;
    unsent_.push_front(std::move(*it));
  }
  in_flight_.clear();
  if (!status.ok() && IsPermanent(status.code())) {
    if (!unsent_.empty()) {
      FailBatch(unsent_.front().message->batch_id(), status);
      unsent_.pop_front();
    } else if (!queue_.empty()) {
      FailBatch(queue_.front().batch.batch_id(), status);
      queue_bytes_ -= queue_.front().bytes;
      queue_.pop_front();
    }
  }
  return false;
}

void ActivationStreamerImpl::ReadAcks(BatchStream* stream, int64_t generation) {
  DeferToTheTrainingLoop();
  v1::BatchAck ack;
  while (stream->Read(&ack)) {
    absl::MutexLock lock(&mu_);
    if (discard_acks_ || generation < first_live_generation_) continue;
    // Acks come in order; a mismatch would be a server bug, so look further
    // rather than blame the wrong batch.
    auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                           [&ack](const Outgoing& o) {
                             return o.message->batch_id() == ack.batch_id();
                           });
    if (it == in_flight_.end()) continue;
    in_flight_.erase(it);
    acked_on_stream_ = true;
    if (ack.code() == 0) {
      ++stats_.acked;
      ++completed_;
      if (ack.duplicate()) ++stats_.duplicates;
    } else {
      FailBatch(ack.batch_id(), FromCode(ack.code(), ack.message()));
    }
  }
  absl::MutexLock lock(&mu_);
  broken_ = true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ActivationStreamer>> ActivationStreamer::Create(
    const Client& client, StreamerOptions options) {
  if (options.session_id.empty())
    return absl::InvalidArgumentError("session_id: empty");
  for (const auto& [what, text] : {std::pair{"session_id", &options.session_id},
                                   std::pair{"source", &options.source}}) {
    if (absl::Status s = CheckUtf8(what, *text); !s.ok()) return s;
  }
  if (options.max_queue_batches <= 0 || options.max_queue_bytes <= 0 ||
      options.max_in_flight <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "queue bounds must be positive: max_queue_batches ",
        options.max_queue_batches, ", max_queue_bytes ",
        options.max_queue_bytes, ", max_in_flight ", options.max_in_flight));
  }
  if (options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff ||
      options.backoff_multiplier < 1.0) {
    return absl::InvalidArgumentError(
        "backoff: initial must be positive, max >= initial, multiplier >= 1");
  }
  return std::unique_ptr<ActivationStreamer>(
      new ActivationStreamerImpl(client, std::move(options)));
}

}  // namespace cka::client
