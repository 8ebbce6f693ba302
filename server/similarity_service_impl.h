// The cka.v1.Similarity gRPC service over a core::Engine.
#ifndef CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_
#define CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_

#include <cstdint>
#include <set>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/core/engine.h"
#include "cka/core/thread_pool.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "server/log_rate_limiter.h"
#include "server/session_saver.h"

namespace cka::server {

// Implements every RPC of cka.v1.Similarity with the callback API. Reactions
// never block: the unary RPCs do only short engine calls; StreamActivations and
// WatchSimilarity move decoding, Gram work, commits and queries onto `pool`.
//
// StreamActivations keeps at most kStreamWindow batches of one stream read but
// not yet acked; the next read is issued only below that (backpressure: a busy
// pool slows readers, nothing is dropped). Acks go out in read order, one write
// at a time.
//
// Thread-safe. `engine`, `pool` and `saver` (null: nothing is saved) must
// outlive the service, and the service must outlive every RPC: call
// BeginShutdown, stop the grpc::Server, then WaitForReactors before destroying
// it.
class SimilarityServiceImpl final : public v1::Similarity::CallbackService {
 public:
  // Batches of one stream that may be in flight (read, not yet acked).
  static constexpr int kStreamWindow = 8;
  // WatchSimilarity's min_interval_ms when unset (0), and its lower clamp.
  static constexpr absl::Duration kDefaultWatchInterval =
      absl::Milliseconds(500);
  static constexpr absl::Duration kMinWatchInterval = absl::Milliseconds(50);
  // How often a watch looks for changes, cancellation and shutdown (at most).
  static constexpr absl::Duration kWatchPollPeriod = absl::Milliseconds(100);

  SimilarityServiceImpl(core::Engine* engine, core::ThreadPool* pool,
                        SessionSaver* saver);
  // Checks that no reactor is alive.
  ~SimilarityServiceImpl() override;

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
  grpc::ServerBidiReactor<v1::ActivationBatch, v1::BatchAck>* StreamActivations(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetSimilarity(
      grpc::CallbackServerContext* context,
      const v1::GetSimilarityRequest* request,
      v1::SimilarityMatrix* response) override;
  grpc::ServerWriteReactor<v1::SimilarityMatrix>* WatchSimilarity(
      grpc::CallbackServerContext* context,
      const v1::WatchSimilarityRequest* request) override;

  // Starts the drain: every stream stops reading, acks what it has read and
  // then ends with UNAVAILABLE (or OK if the client had already half-closed);
  // every watch ends with UNAVAILABLE; new streams and watches are refused with
  // UNAVAILABLE. Unary RPCs are still served. Idempotent.
  void BeginShutdown();

  // Waits until no StreamActivations reactor is alive or `deadline` passes;
  // returns true in the first case.
  bool WaitForStreamsDrained(absl::Time deadline);

  // Waits until every reactor has been destroyed (its RPC is done and no pool
  // work refers to it). Call after the grpc::Server has shut down.
  void WaitForReactors();

 private:
  class ActivationStream;
  class SimilarityWatch;

  // Reactors are registered (in streams_/watches_) from creation until
  // destruction so that BeginShutdown can reach them.
  void Unregister(ActivationStream* stream);
  void Unregister(SimilarityWatch* watch);

  // Logs a rejected batch at info level, at most a few lines per second.
  void LogRejectedBatch(const v1::ActivationBatch& batch,
                        const std::string& peer, int code,
                        const std::string& message);

  core::Engine* const engine_;
  core::ThreadPool* const pool_;
  SessionSaver* const saver_;
  LogRateLimiter rejected_log_limiter_;

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::set<ActivationStream*> streams_ ABSL_GUARDED_BY(mu_);
  std::set<SimilarityWatch*> watches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::server

#endif  // CKA_SERVER_SIMILARITY_SERVICE_IMPL_H_
