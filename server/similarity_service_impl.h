// The cka.v1.Similarity gRPC service over a core::Engine.
#ifndef CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_
#define CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/core/engine.h"
#include "cka/core/thread_pool.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "server/auth.h"
#include "server/group_committer.h"
#include "server/log_rate_limiter.h"
#include "server/metrics.h"
#include "server/stream_quota.h"

namespace cka::server {

// The checks every call passes before it is served.
struct AdmissionOptions {
  // Null: no authentication. Otherwise every call needs a bearer token of
  // `tokens` with the role of its method (see server/auth.h); must outlive
  // the service.
  const TokenTable* tokens = nullptr;
  // A batch message above this is refused with RESOURCE_EXHAUSTED (its ack),
  // and so is a unary request.
  int64_t max_message_bytes = int64_t{64} << 20;
  int max_streams_per_client = 128;  // 0: no limit
};

// Implements every RPC of cka.v1.Similarity with the callback API. Reactions
// never block: the session RPCs do only short engine calls; StreamActivations
// moves decoding, Gram work and commits onto `pool`; GetSimilarity and
// WatchSimilarity move their queries onto `query_pool`, so that a query never
// waits for a worker to finish a batch.
//
// StreamActivations keeps at most kStreamWindow batches of one stream read but
// not yet acked; the next read is issued only below that (backpressure: a busy
// pool slows readers, nothing is dropped). Acks go out in read order, one write
// at a time.
//
// Before serving, every call passes `admission`: its bearer token and role
// (UNAUTHENTICATED, PERMISSION_DENIED; a refused stream or watch ends with
// that status at once), its message size, the open streams of its client and
// the pending bytes of all sessions (RESOURCE_EXHAUSTED, naming the flag).
//
// With a `committer` (null: state in memory only), a batch's OK ack, a
// CreateSession and a DeleteSession answer only once their change is durable
// (GroupCommitter); the reactions never wait for it.
//
// Thread-safe. `engine`, the pools and `committer` must outlive the service,
// and the service must outlive every RPC: call BeginShutdown, stop the
// grpc::Server, then WaitForReactors before destroying it.
// The callback service with StreamActivations read and written as bytes
// (server/batch_message.h): a message that is not an ActivationBatch is
// refused in its own ack instead of ending the stream.
using SimilarityCallbackBase = v1::Similarity::WithCallbackMethod_CreateSession<
    v1::Similarity::WithCallbackMethod_GetSession<
        v1::Similarity::WithCallbackMethod_ListSessions<
            v1::Similarity::WithCallbackMethod_DeleteSession<
                v1::Similarity::WithRawCallbackMethod_StreamActivations<
                    v1::Similarity::WithCallbackMethod_GetSimilarity<
                        v1::Similarity::WithCallbackMethod_WatchSimilarity<
                            v1::Similarity::
                                WithCallbackMethod_GetSimilaritySeries<
                                    v1::Similarity::Service>>>>>>>>;

class SimilarityServiceImpl final : public SimilarityCallbackBase {
 public:
  // Batches of one stream that may be in flight (read, not yet acked).
  static constexpr int kStreamWindow = 8;
  // WatchSimilarity's min_interval_ms when unset (0), and its lower clamp.
  static constexpr absl::Duration kDefaultWatchInterval =
      absl::Milliseconds(500);
  static constexpr absl::Duration kMinWatchInterval = absl::Milliseconds(50);
  // How often a watch looks for changes, cancellation and shutdown (at most).
  static constexpr absl::Duration kWatchPollPeriod = absl::Milliseconds(100);

  // `metrics` (null: none) counts every batch's ack; it must outlive the
  // service.
  SimilarityServiceImpl(core::Engine* engine, core::ThreadPool* pool,
                        core::ThreadPool* query_pool, GroupCommitter* committer,
                        AdmissionOptions admission = {},
                        Metrics* metrics = nullptr);
  // Checks that no reactor is alive.
  ~SimilarityServiceImpl() override;

  // Batch messages read from all streams so far.
  int64_t batches_received() const { return batches_received_.load(); }

  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* context,
      const v1::CreateSessionRequest* request, v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(
      grpc::CallbackServerContext* context,
      const v1::ListSessionsRequest* request,
      v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(
      grpc::CallbackServerContext* context,
      const v1::DeleteSessionRequest* request,
      v1::DeleteSessionResponse* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
  StreamActivations(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetSimilarity(
      grpc::CallbackServerContext* context,
      const v1::GetSimilarityRequest* request,
      v1::SimilarityMatrix* response) override;
  grpc::ServerWriteReactor<v1::SimilarityMatrix>* WatchSimilarity(
      grpc::CallbackServerContext* context,
      const v1::WatchSimilarityRequest* request) override;
  grpc::ServerUnaryReactor* GetSimilaritySeries(
      grpc::CallbackServerContext* context,
      const v1::GetSimilaritySeriesRequest* request,
      v1::SimilaritySeries* response) override;

  // Starts the drain: every stream stops reading, acks what it has read and
  // then ends with UNAVAILABLE (or OK if the client had already half-closed);
  // every watch ends with UNAVAILABLE; new streams and watches are refused with
  // UNAVAILABLE. Unary RPCs are still served. Idempotent.
  void BeginShutdown();

  // Waits until no StreamActivations reactor is alive or `deadline` passes;
  // returns true in the first case.
  bool WaitForStreamsDrained(absl::Time deadline);

  // Waits until every reactor has been destroyed (its RPC is done and no pool
  // work refers to it) and every GetSimilarity's pool work has returned. Call
  // after the grpc::Server has shut down.
  void WaitForReactors();

 private:
  class ActivationStream;
  class SimilarityWatch;

  // Returns the caller of `context` when it may call `method` with `role`
  // (always, without --auth-tokens), else the UNAUTHENTICATED or
  // PERMISSION_DENIED status to finish with. Logs refusals at most a few
  // lines per second, without the token.
  absl::StatusOr<std::optional<Caller>> Admit(
      grpc::CallbackServerContext* context, Role role, const char* method);
  // Returns the RESOURCE_EXHAUSTED status for a unary `request` over the
  // message limit, or OK.
  absl::Status CheckMessageSize(const google::protobuf::Message& request,
                                const char* method) const;

  // Answers a unary query of a reader (GetSimilarity, GetSimilaritySeries):
  // admits the caller, checks the request's size, finds session
  // `session_id`, then runs `answer` on the query pool and finishes with its
  // status, with the server-time trailing metadata when it is OK. `answer`
  // fills the response; it is given the time the call was scheduled and the
  // reservation it grows by AnswerBytes (server/answer_memory.h) before it
  // builds the response, which the call holds until gRPC is done with it.
  grpc::ServerUnaryReactor* AnswerQuery(
      grpc::CallbackServerContext* context,
      const google::protobuf::Message& request, const std::string& session_id,
      const char* method,
      std::function<absl::Status(core::Session&, absl::Time scheduled,
                                 core::MemoryBudget::Reservation& memory)>
          answer);

  // Reactors are registered (in streams_/watches_) from creation until
  // destruction so that BeginShutdown can reach them.
  void Unregister(ActivationStream* stream);
  void Unregister(SimilarityWatch* watch);

  // Returns the process memory budget that messages in flight draw from (the
  // engine's), or null.
  core::MemoryBudget* memory_budget() const {
    return engine_->limits().session.memory.get();
  }

  // Logs a rejected batch at info level, at most a few lines per second.
  void LogRejectedBatch(const v1::ActivationBatch& batch,
                        const std::string& peer, int code,
                        const std::string& message);

  core::Engine* const engine_;
  core::ThreadPool* const pool_;
  core::ThreadPool* const query_pool_;
  std::atomic<int64_t> batches_received_{0};
  GroupCommitter* const committer_;
  Metrics* const metrics_;
  LogRateLimiter rejected_log_limiter_;
  const AdmissionOptions admission_;
  LogRateLimiter refused_log_limiter_;
  StreamQuota stream_quota_;

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::set<ActivationStream*> streams_ ABSL_GUARDED_BY(mu_);
  std::set<SimilarityWatch*> watches_ ABSL_GUARDED_BY(mu_);
  // GetSimilarity and GetSimilaritySeries calls whose pool work has not
  // returned yet.
  int queries_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cka::server

#endif  // CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_
