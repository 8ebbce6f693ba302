// One WatchSimilarity call of the JSON API, turned into server-sent events.
#ifndef CKA_SERVER_HTTP_EVENT_STREAM_H_
#define CKA_SERVER_HTTP_EVENT_STREAM_H_

#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/core/memory_budget.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"

namespace cka::server {

// Reads a WatchSimilarity call with gRPC's callback API and hands each matrix
// to one consumer thread as a server-sent event:
//   event: matrix\ndata: <SimilarityMatrix in protobuf's JSON mapping>\n\n
// and, when the call ends with an error,
//   event: error\ndata: {"code":"...","message":"..."}\n\n
// At most two matrices are held, the one being read and the latest one read:
// a matrix the consumer has not taken when the next arrives is replaced by
// it, so a slow HTTP client skips matrices instead of queueing them.
//
// Use: prepare context(), Start, call Next until it says the call ended, and
// before destruction Cancel (if it has not ended) and WaitDone. Next and
// WaitDone are for one consumer thread; Cancel is thread-safe.
class SimilarityEventStream final
    : public grpc::ClientReadReactor<v1::SimilarityMatrix> {
 public:
  enum class Next {
    kEvent,    // *event is the next event
    kTimeout,  // nothing within the timeout
    kEnded,    // the call is over; *event is its error event, or empty (OK)
  };

  // `memory` (null: not priced) is the budget each event's JSON is drawn
  // from while it is built and written (JsonAnswerBytes,
  // server/answer_memory.h): the reservation is held until the next Wait.
  explicit SimilarityEventStream(core::MemoryBudget* memory = nullptr)
      : memory_(memory) {}
  ~SimilarityEventStream() override = default;

  // The call's context: set metadata before Start.
  grpc::ClientContext* context() { return &context_; }
  // Starts the watch of `request` through `stub`.
  void Start(v1::Similarity::Stub* stub,
             const v1::WatchSimilarityRequest& request);
  // Waits at most `timeout` for the next matrix or the end of the call. A
  // matrix whose JSON does not fit the budget ends the stream: kEnded with
  // its RESOURCE_EXHAUSTED error event (status() says it; Cancel the call).
  // Called by one thread at a time.
  Next Wait(absl::Duration timeout, std::string* event);
  // Returns the status the call ended with (or the refusal of Wait); only
  // after Wait said kEnded.
  grpc::Status status();
  // Cancels the call (it ends with CANCELLED).
  void Cancel() { context_.TryCancel(); }
  // Waits until gRPC is done with the call (OnDone has run).
  void WaitDone();

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  core::MemoryBudget* const memory_;
  // The last event's JSON; touched only by Wait's caller.
  core::MemoryBudget::Reservation event_memory_;
  grpc::ClientContext context_;
  v1::WatchSimilarityRequest request_;
  v1::SimilarityMatrix reading_;  // target of the outstanding read

  absl::Mutex mu_;
  std::optional<v1::SimilarityMatrix> ready_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> done_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> refused_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::server

#endif  // CKA_SERVER_HTTP_EVENT_STREAM_H_
