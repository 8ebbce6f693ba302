#include "server/similarity_service_impl.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/core/config.h"
#include "grpcpp/alarm.h"
#include "server/answer_memory.h"
#include "server/batch_message.h"
#include "server/proto_convert.h"
#include "server/status_mapping.h"
#include "spdlog/spdlog.h"

namespace cka::server {
namespace {

constexpr int kRejectedLogLinesPerSecond = 5;
constexpr int kRefusedLogLinesPerSecond = 5;

// A StreamActivations or WatchSimilarity call refused before it started: it
// ends at once with `status`.
class RefusedStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

class RefusedWatch final
    : public grpc::ServerWriteReactor<v1::SimilarityMatrix> {
 public:
  explicit RefusedWatch(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

const grpc::Status& ShuttingDownStatus() {
  static const grpc::Status* status = new grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      "ckad is shutting down; resend unacknowledged batches after it restarts");
  return *status;
}

// The owners of a reactor: gRPC (the initial reference, released in OnDone)
// and every piece of work still running for it. The reactor deletes itself
// when Release() returns true. Thread-safe.
class ReactorRefs {
 public:
  void Take() {
    absl::MutexLock lock(&mu_);
    ++refs_;
  }
  // Takes a reference unless the reactor is already being destroyed.
  bool TryTake() {
    absl::MutexLock lock(&mu_);
    if (refs_ == 0) return false;
    ++refs_;
    return true;
  }
  // Returns true when this was the last reference.
  bool Release() {
    absl::MutexLock lock(&mu_);
    ABSL_RAW_CHECK(refs_ > 0, "reactor released more often than referenced");
    return --refs_ == 0;
  }

 private:
  absl::Mutex mu_;
  int refs_ ABSL_GUARDED_BY(mu_) = 1;
};

std::string DescribeConfig(const core::SessionConfig& config) {
  std::vector<std::string> measures;
  for (const core::Measure& m : config.measures) {
    measures.push_back(
        absl::StrCat(m.name, " (",
                     core::IsMomentKind(m.kind)
                         ? absl::StrCat(core::MeasureKindName(m.kind), ", ")
                         : "",
                     core::KernelName(m.kernel), ", ",
                     core::EstimatorName(m.estimator), ")"));
  }
  return absl::StrCat("measures [", absl::StrJoin(measures, ", "), "], ",
                      config.streams.size(), " declared streams, step bucket ",
                      config.step_bucket);
}

// Trailing metadata of a GetSimilarity answer: milliseconds from the queued
// query to its converted answer (client/include/cka/client/client.h).
constexpr char kServerTimeMetadataKey[] = "x-cka-server-time-ms";

}  // namespace

// -----------------------------------------------------------------------------
// StreamActivations
//
// State machine, all under mu_. Slots hold batches read and not yet acked, in
// read order; a pool task fills in each slot's ack. Every gRPC operation is
// decided under mu_ (NextActionsLocked) and started after mu_ is released,
// because a started operation may run a reaction inline. refs_ counts gRPC
// (released in OnDone) and every pool task still working on a slot, so a
// cancelled stream lives until its work is done.
class SimilarityServiceImpl::ActivationStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `quota_key` is the client's key in the service's StreamQuota, released
  // when the stream is destroyed.
  ActivationStream(SimilarityServiceImpl* service, std::string peer,
                   std::string quota_key)
      : service_(service),
        peer_(std::move(peer)),
        quota_key_(std::move(quota_key)) {}

  ~ActivationStream() override {
    service_->stream_quota_.Release(quota_key_);
    service_->Unregister(this);
  }

  // Issues the first read, or refuses the stream when the server is shutting
  // down.
  void Start(bool shutting_down) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      draining_ = shutting_down;
      actions = NextActionsLocked();
    }
    Perform(actions);
  }

  void OnReadDone(bool ok) override {
    Slot* to_process = nullptr;
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      read_outstanding_ = false;
      if (ok && (finished_ || broken_)) {
        // A read that raced with Finish or a cancellation: its ack could never
        // be sent, so the batch is not applied either; the client resends it.
        reading_.reset();
      } else if (ok) {
        service_->batches_received_.fetch_add(1);
        to_process = reading_.get();
        to_process->read_time = absl::Now();
        if (core::MemoryBudget* budget = service_->memory_budget();
            budget != nullptr) {
          absl::StatusOr<core::MemoryBudget::Reservation> held =
              budget->Reserve(
                  static_cast<int64_t>(to_process->message.Length()),
                  "a batch message (read, waiting to be applied)");
          if (held.ok()) {
            to_process->message_memory = *std::move(held);
          } else {
            to_process->admitted = held.status();
          }
        }
        slots_.push_back(std::move(reading_));
        refs_.Take();
      } else {
        reads_done_ = true;  // client half-closed, or the call is over
        reading_.reset();
      }
      actions = NextActionsLocked();
    }
    if (to_process != nullptr) {
      service_->pool_->Schedule([this, to_process] { Process(to_process); });
    }
    Perform(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      write_outstanding_ = false;
      slots_.pop_front();
      if (!ok) broken_ = true;  // no later ack can reach the client
      actions = NextActionsLocked();
    }
    Perform(actions);
  }

  void OnCancel() override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      actions = NextActionsLocked();
    }
    Perform(actions);
  }

  void OnDone() override { Unref(); }

  // Stops reading; the stream ends once what it has read is acked.
  void Drain() {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
      actions = NextActionsLocked();
    }
    Perform(actions);
  }

  // Takes a reference unless the stream is already being destroyed.
  bool TryRef() { return refs_.TryTake(); }

  void Unref() {
    if (refs_.Release()) delete this;
  }

 private:
  struct Slot {
    grpc::ByteBuffer message;  // as read; parsed into `batch` by Process
    v1::ActivationBatch batch;
    v1::BatchAck ack;
    grpc::ByteBuffer ack_message;  // `ack`, serialized once it is done
    bool done = false;             // ack filled in
    // The message's bytes while it is held, drawn from the memory budget when
    // it is read; `admitted` is why they did not fit (the batch is refused).
    core::MemoryBudget::Reservation message_memory;
    absl::Status admitted;
    absl::Time read_time;  // when its read completed
  };

  struct Actions {
    grpc::ByteBuffer* read = nullptr;
    const grpc::ByteBuffer* write = nullptr;
    std::optional<grpc::Status> finish;
  };

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (broken_) {
      // Finish is not combined with an outstanding write; the write fails fast
      // on a broken call.
      if (!write_outstanding_) {
        finished_ = true;
        actions.finish =
            grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
      }
      return actions;
    }
    if (!write_outstanding_ && !slots_.empty() && slots_.front()->done) {
      write_outstanding_ = true;
      actions.write = &slots_.front()->ack_message;
    }
    if (!read_outstanding_ && !reads_done_ && !draining_ &&
        slots_.size() < static_cast<size_t>(kStreamWindow)) {
      read_outstanding_ = true;
      reading_ = std::make_unique<Slot>();
      actions.read = &reading_->message;
    }
    if (slots_.empty() && !write_outstanding_ && (reads_done_ || draining_)) {
      finished_ = true;
      actions.finish = reads_done_ ? grpc::Status::OK : ShuttingDownStatus();
    }
    return actions;
  }

  void Perform(const Actions& actions) {
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.read != nullptr) StartRead(actions.read);
    if (actions.finish.has_value()) Finish(*actions.finish);
  }

  // Runs on the pool: decode, prepare, commit, and fill in the slot's ack.
  // The batch's bytes are freed as soon as it is applied or rejected: a slot
  // can wait for the group commit much longer than it took to compute, and
  // only its ack is needed until then.
  void Process(Slot* slot) {
    absl::Status admitted = slot->admitted;
    if (absl::Status parsed =
            ParseActivationBatch(&slot->message, &slot->batch);
        admitted.ok()) {
      admitted = parsed;
    }
    v1::BatchAck& ack = slot->ack;
    ack.set_session_id(slot->batch.session_id());
    ack.set_source(slot->batch.source());
    ack.set_batch_id(slot->batch.batch_id());
    std::shared_ptr<core::Session> session;
    absl::StatusOr<core::IngestResult> result =
        admitted.ok() ? Apply(slot->batch, &session) : admitted;
    if (!result.ok()) {
      const absl::Status& status = result.status();
      ack.set_code(ToRpcCode(
          status, absl::StrCat("batch '", slot->batch.batch_id(), "'")));
      ack.set_message(std::string(status.message()));
      service_->LogRejectedBatch(slot->batch, peer_, ack.code(), ack.message());
    } else {
      ack.set_duplicate(result->duplicate());  // code 0: OK
    }
    slot->batch = v1::ActivationBatch();  // moves in an empty one: frees
    slot->message_memory.Release();
    if (!result.ok() || service_->committer_ == nullptr) {
      Complete(slot);
      return;
    }
    // An OK ack means durable: it waits for the group commit that holds this
    // batch (or, for a duplicate, the earlier commit it repeats).
    service_->committer_->AwaitDurable(
        ack.session_id(), std::move(session), result->version,
        [this, slot](absl::Status durable) {
          if (!durable.ok()) {
            slot->ack.set_code(ToRpcCode(
                durable, absl::StrCat("batch '", slot->ack.batch_id(), "'")));
            slot->ack.set_message(std::string(durable.message()));
            slot->ack.set_duplicate(false);
          }
          Complete(slot);
        });
  }

  // Marks the slot's ack ready, starts what that allows, and releases the
  // reference Process held.
  void Complete(Slot* slot) {
    SerializeBatchAck(slot->ack, &slot->ack_message);
    if (service_->metrics_ != nullptr) {
      service_->metrics_->RecordBatch(slot->ack.code(), slot->ack.duplicate(),
                                      absl::Now() - slot->read_time);
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      slot->done = true;
      actions = NextActionsLocked();
    }
    Perform(actions);
    Unref();
  }

  // Ingests the batch through the engine; sets *session_out to its session
  // when it is applied.
  absl::StatusOr<core::IngestResult> Apply(
      const v1::ActivationBatch& batch,
      std::shared_ptr<core::Session>* session_out) {
    const int64_t message_bytes = static_cast<int64_t>(batch.ByteSizeLong());
    if (message_bytes > service_->admission_.max_message_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("batch '", batch.batch_id(), "': its message is ",
                       message_bytes, " bytes, over --max-message-mb (",
                       service_->admission_.max_message_bytes, " bytes)"));
    }
    if (batch.session_id().empty()) {
      return absl::InvalidArgumentError(
          "session_id: empty; expected the id of a session");
    }
    absl::StatusOr<core::BatchInput> input = BatchInputFromProto(batch);
    if (!input.ok()) return input.status();
    absl::StatusOr<core::Engine::Ingested> ingested =
        service_->engine_->Ingest(batch.session_id(), *input, service_->pool_);
    if (!ingested.ok()) return ingested.status();
    *session_out = std::move(ingested->session);
    const core::IngestResult& result = ingested->result;
    if (result.first_pairs_missed) {
      // Once per session: the counter in GetSession tells the rest.
      spdlog::warn(
          "session '{}': batch '{}' from source '{}' arrived after the "
          "kernels of {} earlier pairs had left the join buffer; those pairs "
          "are not counted (GetSession's pairs_missed counts all). Declare "
          "the session's streams or expected_sources, or give it a larger "
          "join_window",
          batch.session_id(), batch.batch_id(), batch.source(),
          result.pairs_missed);
    }
    return result;
  }

  SimilarityServiceImpl* const service_;
  const std::string peer_;
  const std::string quota_key_;

  absl::Mutex mu_;
  ReactorRefs refs_;
  std::deque<std::unique_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Slot> reading_
      ABSL_GUARDED_BY(mu_);  // target of the outstanding read
  bool read_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool write_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// -----------------------------------------------------------------------------
// WatchSimilarity
//
// A chain of ticks on the pool, each armed by a grpc::Alarm from the previous
// one, polls the session every kWatchPollPeriod (or the interval, if shorter).
// A tick sends a new matrix when the session's counters changed since the last
// one sent, the previous write is complete and the interval has passed: a slow
// consumer holds at most the one matrix being written, and what it missed
// meanwhile is folded into the next. refs_ counts gRPC (released in OnDone) and
// the tick chain (released by the tick that finds the RPC finished).
class SimilarityServiceImpl::SimilarityWatch final
    : public grpc::ServerWriteReactor<v1::SimilarityMatrix> {
 public:
  SimilarityWatch(SimilarityServiceImpl* service,
                  const v1::WatchSimilarityRequest& request)
      : service_(service),
        session_id_(request.query().session_id()),
        query_(SimilarityQueryFromProto(request.query())),
        interval_(
            request.min_interval_ms() <= 0
                ? kDefaultWatchInterval
                : std::max(kMinWatchInterval,
                           absl::Milliseconds(request.min_interval_ms()))),
        poll_period_(std::min(interval_, kWatchPollPeriod)) {
    // A moment measure's query stops between pairs once the watch is over
    // (the tick chain keeps `this` alive while it polls).
    query_.cancelled = [this] {
      absl::MutexLock lock(&mu_);
      return finish_wanted_.has_value();
    };
  }

  ~SimilarityWatch() override { service_->Unregister(this); }

  // Starts the tick chain (its first tick sends the matrix at once), or refuses
  // the watch when the server is shutting down.
  void Start(bool shutting_down) {
    {
      absl::MutexLock lock(&mu_);
      refs_.Take();  // the tick chain's
      if (shutting_down) finish_wanted_ = ShuttingDownStatus();
    }
    service_->query_pool_->Schedule([this] { Tick(); });
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      write_outstanding_ = false;
      if (!ok && !finish_wanted_.has_value()) {
        finish_wanted_ =
            grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      }
      finish = FinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
  }

  void OnCancel() override {
    WantFinish(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
  }

  void OnDone() override { Unref(); }

  void Drain() { WantFinish(ShuttingDownStatus()); }

  bool TryRef() { return refs_.TryTake(); }

  void Unref() {
    if (refs_.Release()) delete this;
  }

 private:
  // Returns the status to finish with when a finish is wanted and possible now,
  // and records that the RPC is finished.
  std::optional<grpc::Status> FinishLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || write_outstanding_ || !finish_wanted_.has_value())
      return std::nullopt;
    finished_ = true;
    return finish_wanted_;
  }

  void WantFinish(grpc::Status status) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      if (!finish_wanted_.has_value()) finish_wanted_ = std::move(status);
      finish = FinishLocked();
    }
    if (finish.has_value()) Finish(*finish);
  }

  // Runs on the pool.
  void Tick() {
    bool finished;
    bool may_send;
    {
      absl::MutexLock lock(&mu_);
      finished = finished_;
      may_send = !write_outstanding_ && !finish_wanted_.has_value() &&
                 absl::Now() >= next_send_allowed_;
    }
    if (finished) {
      Unref();  // the chain ends here
      return;
    }
    if (may_send) Poll();
    {
      absl::MutexLock lock(&mu_);
      // Replacing the alarm destroys the previous one, which has fired: it
      // scheduled this tick.
      alarm_ = std::make_unique<grpc::Alarm>();
      alarm_->Set(absl::ToChronoTime(absl::Now() + poll_period_),
                  [this](bool /*fired*/) {
                    service_->query_pool_->Schedule([this] { Tick(); });
                  });
    }
  }

  // Sends the matrix when the session changed; asks to finish when it is gone
  // or the query fails.
  void Poll() {
    absl::StatusOr<std::shared_ptr<core::Session>> session =
        service_->engine_->GetSession(session_id_);
    if (!session.ok()) {
      WantFinish(ToGrpcStatus(session.status(), "WatchSimilarity"));
      return;
    }
    const core::SessionInfo info = (*session)->Info();
    const Counters counters{info.batches_applied, info.batches_evicted};
    if (sent_any_ && counters == last_sent_) return;
    absl::StatusOr<core::SimilarityMatrix> matrix = (*session)->Query(query_);
    if (!matrix.ok()) {
      WantFinish(ToGrpcStatus(matrix.status(), "WatchSimilarity"));
      return;
    }
    // The message sent last stays until the next: its bytes (priced as a
    // whole answer) replace the previous one's in the reservation.
    core::MemoryBudget::Reservation memory =
        service_->memory_budget() != nullptr
            ? service_->memory_budget()->Empty()
            : core::MemoryBudget::Reservation();
    if (absl::Status s = memory.Grow(
            AnswerBytes(*matrix),
            absl::StrFormat("the update of a %d × %d similarity matrix",
                            matrix->rows.size(), matrix->cols.size()));
        !s.ok()) {
      WantFinish(ToGrpcStatus(s, "WatchSimilarity"));
      return;
    }
    bool start_write = false;
    {
      absl::MutexLock lock(&mu_);
      if (!finished_ && !finish_wanted_.has_value()) {
        response_memory_ = std::move(memory);
        SimilarityMatrixToProto(session_id_, *matrix, &response_);
        write_outstanding_ = true;
        start_write = true;
        sent_any_ = true;
        last_sent_ = counters;
        next_send_allowed_ = absl::Now() + interval_;
      }
    }
    if (start_write) StartWrite(&response_);
  }

  struct Counters {
    int64_t batches_applied = -1;
    int64_t batches_evicted = -1;
    bool operator==(const Counters& o) const {
      return batches_applied == o.batches_applied &&
             batches_evicted == o.batches_evicted;
    }
  };

  SimilarityServiceImpl* const service_;
  const std::string session_id_;
  core::SimilarityQuery query_;  // set in the constructor
  const absl::Duration interval_;
  const absl::Duration poll_period_;

  absl::Mutex mu_;
  ReactorRefs refs_;
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
  v1::SimilarityMatrix
      response_;  // written under mu_ only while no write is outstanding
  core::MemoryBudget::Reservation response_memory_ ABSL_GUARDED_BY(mu_);
  bool write_outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_wanted_ ABSL_GUARDED_BY(mu_);
  // Touched only by the tick chain, one tick at a time.
  bool sent_any_ = false;
  Counters last_sent_;
  absl::Time next_send_allowed_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// -----------------------------------------------------------------------------
// The service.

SimilarityServiceImpl::SimilarityServiceImpl(
    core::Engine* engine, core::ThreadPool* pool, core::ThreadPool* query_pool,
    GroupCommitter* committer, AdmissionOptions admission, Metrics* metrics)
    : engine_(engine),
      pool_(pool),
      query_pool_(query_pool),
      committer_(committer),
      metrics_(metrics),
      rejected_log_limiter_(kRejectedLogLinesPerSecond),
      admission_(admission),
      refused_log_limiter_(kRefusedLogLinesPerSecond),
      stream_quota_(admission.max_streams_per_client) {}

absl::StatusOr<std::optional<Caller>> SimilarityServiceImpl::Admit(
    grpc::CallbackServerContext* context, Role role, const char* method) {
  if (admission_.tokens == nullptr) return std::optional<Caller>();
  std::optional<std::string_view> authorization;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    authorization = std::string_view(it->second.data(), it->second.size());
  }
  absl::StatusOr<Caller> caller =
      Authorize(*admission_.tokens, authorization, role, method);
  if (caller.ok()) return std::optional<Caller>(*caller);
  int64_t suppressed = 0;
  if (refused_log_limiter_.Allow(&suppressed)) {
    spdlog::info("refused {} from {}: {}: {}{}", method, context->peer(),
                 absl::StatusCodeToString(caller.status().code()),
                 std::string(caller.status().message()),
                 suppressed > 0 ? absl::StrCat(" (", suppressed,
                                               " more refusals not logged)")
                                : std::string());
  }
  return caller.status();
}

absl::Status SimilarityServiceImpl::CheckMessageSize(
    const google::protobuf::Message& request, const char* method) const {
  const int64_t bytes = static_cast<int64_t>(request.ByteSizeLong());
  if (bytes <= admission_.max_message_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      method, ": the request is ", bytes, " bytes, over --max-message-mb (",
      admission_.max_message_bytes, " bytes)"));
}

SimilarityServiceImpl::~SimilarityServiceImpl() {
  absl::MutexLock lock(&mu_);
  ABSL_RAW_CHECK(streams_.empty() && watches_.empty(),
                 "SimilarityServiceImpl destroyed while RPCs are alive");
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::CreateSession(
    grpc::CallbackServerContext* context,
    const v1::CreateSessionRequest* request, v1::Session* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kWriter, "CreateSession");
      !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status(), "CreateSession"));
    return reactor;
  }
  if (absl::Status size = CheckMessageSize(*request, "CreateSession");
      !size.ok()) {
    reactor->Finish(ToGrpcStatus(size, "CreateSession"));
    return reactor;
  }
  absl::StatusOr<core::SessionConfig> config =
      SessionConfigFromProto(request->config());
  if (!config.ok()) {
    reactor->Finish(ToGrpcStatus(config.status(), "CreateSession"));
    return reactor;
  }
  bool created = false;
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      engine_->CreateSession(request->session_id(), *std::move(config),
                             &created);
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status(), "CreateSession"));
    return reactor;
  }
  const core::SessionInfo info = (*session)->Info();
  if (created) {
    spdlog::info("session '{}' created by {}: {}", request->session_id(),
                 context->peer(), DescribeConfig(info.config));
  }
  SessionToProto(request->session_id(), info, response);
  if (committer_ != nullptr) {
    // Also for an existing session (a retried create): it answers once the
    // session is durable.
    committer_->AwaitDurable(
        request->session_id(), *std::move(session), 0,
        [reactor](absl::Status durable) {
          reactor->Finish(ToGrpcStatus(durable, "CreateSession"));
        });
    return reactor;
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::GetSession(
    grpc::CallbackServerContext* context, const v1::GetSessionRequest* request,
    v1::Session* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kReader, "GetSession");
      !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status(), "GetSession"));
    return reactor;
  }
  if (absl::Status size = CheckMessageSize(*request, "GetSession");
      !size.ok()) {
    reactor->Finish(ToGrpcStatus(size, "GetSession"));
    return reactor;
  }
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      engine_->GetSession(request->session_id());
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status(), "GetSession"));
    return reactor;
  }
  SessionToProto(request->session_id(), (*session)->Info(), response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::ListSessions(
    grpc::CallbackServerContext* context,
    const v1::ListSessionsRequest* /*request*/,
    v1::ListSessionsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kReader, "ListSessions");
      !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status(), "ListSessions"));
    return reactor;
  }
  for (const std::string& id : engine_->ListSessions()) {
    absl::StatusOr<std::shared_ptr<core::Session>> session =
        engine_->GetSession(id);
    if (!session.ok()) continue;  // deleted since the listing
    SessionToProto(id, (*session)->Info(), response->add_sessions());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::DeleteSession(
    grpc::CallbackServerContext* context,
    const v1::DeleteSessionRequest* request,
    v1::DeleteSessionResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kAdmin, "DeleteSession");
      !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status(), "DeleteSession"));
    return reactor;
  }
  if (absl::Status size = CheckMessageSize(*request, "DeleteSession");
      !size.ok()) {
    reactor->Finish(ToGrpcStatus(size, "DeleteSession"));
    return reactor;
  }
  if (committer_ != nullptr) {
    // Answers once the session's rows are gone.
    committer_->DeleteSession(
        request->session_id(), [this, reactor, id = request->session_id(),
                                peer = context->peer()](absl::Status status) {
          if (status.ok() || status.code() != absl::StatusCode::kNotFound) {
            spdlog::info("session '{}' deleted by {}", id, peer);
          }
          reactor->Finish(ToGrpcStatus(status, "DeleteSession"));
        });
    return reactor;
  }
  absl::Status status = engine_->DeleteSession(request->session_id());
  if (status.ok()) {
    spdlog::info("session '{}' deleted by {}", request->session_id(),
                 context->peer());
  }
  reactor->Finish(ToGrpcStatus(status, "DeleteSession"));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
SimilarityServiceImpl::StreamActivations(grpc::CallbackServerContext* context) {
  absl::StatusOr<std::optional<Caller>> caller =
      Admit(context, Role::kWriter, "StreamActivations");
  if (!caller.ok())
    return new RefusedStream(
        ToGrpcStatus(caller.status(), "StreamActivations"));
  // A token names its client wherever it connects from; without tokens the
  // peer's address does.
  const std::string quota_key =
      caller->has_value() ? absl::StrCat("token#", (*caller)->token_index)
                          : PeerHost(context->peer());
  const std::string description =
      caller->has_value()
          ? absl::StrCat("this token (", RoleName((*caller)->role), ")")
          : absl::StrCat("client ", quota_key);
  if (absl::Status quota = stream_quota_.Acquire(quota_key, description);
      !quota.ok()) {
    spdlog::info("refused StreamActivations from {}: {}", context->peer(),
                 std::string(quota.message()));
    return new RefusedStream(ToGrpcStatus(quota, "StreamActivations"));
  }
  auto* stream = new ActivationStream(this, context->peer(), quota_key);
  bool shutting_down;
  {
    absl::MutexLock lock(&mu_);
    streams_.insert(stream);
    shutting_down = shutting_down_;
  }
  stream->Start(shutting_down);
  return stream;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::AnswerQuery(
    grpc::CallbackServerContext* context,
    const google::protobuf::Message& request, const std::string& session_id,
    const char* method,
    std::function<absl::Status(core::Session&, absl::Time scheduled,
                               core::MemoryBudget::Reservation& memory)>
        answer) {
  auto* reactor = new AnswerReactor(memory_budget());
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kReader, method);
      !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status(), method));
    return reactor;
  }
  if (absl::Status size = CheckMessageSize(request, method); !size.ok()) {
    reactor->Finish(ToGrpcStatus(size, method));
    return reactor;
  }
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      engine_->GetSession(session_id);
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status(), method));
    return reactor;
  }
  // The query and the conversion of its answer (65,536 entries for 256
  // streams) run on the query pool: reactions must not block. gRPC keeps the
  // request and the response until Finish.
  {
    absl::MutexLock lock(&mu_);
    ++queries_in_flight_;
  }
  const absl::Time scheduled = absl::Now();
  query_pool_->Schedule([this, context, reactor, method, scheduled,
                         answer = std::move(answer),
                         session = *std::move(session)] {
    absl::Status status = answer(*session, scheduled, reactor->memory());
    if (status.ok()) {
      context->AddTrailingMetadata(
          kServerTimeMetadataKey,
          absl::StrFormat("%.3f",
                          absl::ToDoubleMilliseconds(absl::Now() - scheduled)));
      reactor->Finish(grpc::Status::OK);
    } else {
      reactor->Finish(ToGrpcStatus(status, method));
    }
    absl::MutexLock lock(&mu_);
    --queries_in_flight_;
  });
  return reactor;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::GetSimilarity(
    grpc::CallbackServerContext* context,
    const v1::GetSimilarityRequest* request, v1::SimilarityMatrix* response) {
  return AnswerQuery(
      context, *request, request->session_id(), "GetSimilarity",
      [context, request, response](core::Session& session, absl::Time scheduled,
                                   core::MemoryBudget::Reservation& memory) {
        const absl::Time started = absl::Now();
        core::SimilarityQuery query = SimilarityQueryFromProto(*request);
        // A moment measure's query can take minutes; one its caller gave up
        // on (deadline or cancellation) stops between pairs.
        query.cancelled = [context] { return context->IsCancelled(); };
        absl::StatusOr<core::SimilarityMatrix> matrix = session.Query(query);
        if (!matrix.ok()) return matrix.status();
        if (absl::Status s = memory.Grow(
                AnswerBytes(*matrix),
                absl::StrFormat("the answer of a %d × %d similarity matrix",
                                matrix->rows.size(), matrix->cols.size()));
            !s.ok()) {
          return s;
        }
        const absl::Time queried = absl::Now();
        SimilarityMatrixToProto(request->session_id(), *matrix, response);
        const absl::Time converted = absl::Now();
        spdlog::debug(
            "GetSimilarity '{}': {} x {} in {:.2f} ms ({:.2f} ms queued, "
            "{:.2f} ms query, {:.2f} ms conversion)",
            request->session_id(), matrix->rows.size(), matrix->cols.size(),
            absl::ToDoubleMilliseconds(converted - scheduled),
            absl::ToDoubleMilliseconds(started - scheduled),
            absl::ToDoubleMilliseconds(queried - started),
            absl::ToDoubleMilliseconds(converted - queried));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::GetSimilaritySeries(
    grpc::CallbackServerContext* context,
    const v1::GetSimilaritySeriesRequest* request,
    v1::SimilaritySeries* response) {
  return AnswerQuery(
      context, *request, request->session_id(), "GetSimilaritySeries",
      [request, response](core::Session& session, absl::Time,
                          core::MemoryBudget::Reservation& memory) {
        absl::StatusOr<core::SimilaritySeries> series =
            session.QuerySeries(SeriesQueryFromProto(*request));
        if (!series.ok()) return series.status();
        if (absl::Status s = memory.Grow(
                AnswerBytes(*series),
                absl::StrFormat("the answer of a series of %d pairs over %d "
                                "step buckets",
                                series->pairs.size(), series->buckets.size()));
            !s.ok()) {
          return s;
        }
        SimilaritySeriesToProto(request->session_id(), *series, response);
        return absl::OkStatus();
      });
}

grpc::ServerWriteReactor<v1::SimilarityMatrix>*
SimilarityServiceImpl::WatchSimilarity(
    grpc::CallbackServerContext* context,
    const v1::WatchSimilarityRequest* request) {
  if (absl::StatusOr<std::optional<Caller>> caller =
          Admit(context, Role::kReader, "WatchSimilarity");
      !caller.ok()) {
    return new RefusedWatch(ToGrpcStatus(caller.status(), "WatchSimilarity"));
  }
  if (absl::Status size = CheckMessageSize(*request, "WatchSimilarity");
      !size.ok()) {
    return new RefusedWatch(ToGrpcStatus(size, "WatchSimilarity"));
  }
  auto* watch = new SimilarityWatch(this, *request);
  bool shutting_down;
  {
    absl::MutexLock lock(&mu_);
    watches_.insert(watch);
    shutting_down = shutting_down_;
  }
  watch->Start(shutting_down);
  return watch;
}

void SimilarityServiceImpl::BeginShutdown() {
  std::vector<ActivationStream*> streams;
  std::vector<SimilarityWatch*> watches;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    // A reactor whose last reference is gone is being destroyed (its destructor
    // waits for mu_ to unregister); TryRef skips it.
    for (ActivationStream* s : streams_) {
      if (s->TryRef()) streams.push_back(s);
    }
    for (SimilarityWatch* w : watches_) {
      if (w->TryRef()) watches.push_back(w);
    }
  }
  for (ActivationStream* s : streams) {
    s->Drain();
    s->Unref();
  }
  for (SimilarityWatch* w : watches) {
    w->Drain();
    w->Unref();
  }
}

bool SimilarityServiceImpl::WaitForStreamsDrained(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(absl::Condition(
                                   +[](std::set<ActivationStream*>* streams) {
                                     return streams->empty();
                                   },
                                   &streams_),
                               deadline);
}

void SimilarityServiceImpl::WaitForReactors() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](SimilarityServiceImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
        return s->streams_.empty() && s->watches_.empty() &&
               s->queries_in_flight_ == 0;
      },
      this));
}

void SimilarityServiceImpl::Unregister(ActivationStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void SimilarityServiceImpl::Unregister(SimilarityWatch* watch) {
  absl::MutexLock lock(&mu_);
  watches_.erase(watch);
}

void SimilarityServiceImpl::LogRejectedBatch(const v1::ActivationBatch& batch,
                                             const std::string& peer, int code,
                                             const std::string& message) {
  int64_t suppressed = 0;
  if (!rejected_log_limiter_.Allow(&suppressed)) return;
  const std::string code_name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  if (suppressed > 0) {
    spdlog::info(
        "rejected batch '{}' of source '{}' in session '{}' from {}: {}: {} "
        "({} more "
        "rejections not logged)",
        batch.batch_id(), batch.source(), batch.session_id(), peer, code_name,
        message, suppressed);
  } else {
    spdlog::info(
        "rejected batch '{}' of source '{}' in session '{}' from {}: {}: {}",
        batch.batch_id(), batch.source(), batch.session_id(), peer, code_name,
        message);
  }
}

}  // namespace cka::server
