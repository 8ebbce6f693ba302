// ActivationStreamer: the object a training loop holds to send activations to
// ckad.
//
// Submit() validates a batch, puts it in a bounded queue and returns; a
// background thread keeps one StreamActivations call open, sends queued
// batches, matches the server's in-order acks, reconnects with exponential
// backoff after a failure and resends every batch not yet acked (the server
// recognises a batch id it has applied and acks it as a duplicate, so a resend
// is never counted twice). Flush() waits for the acks and returns the batches
// the server rejected.
//
// Thread safety: every method is thread-safe. The destructor stops the
// background thread without waiting for acks; call Close() first to deliver
// everything.
#ifndef CKA_CLIENT_ACTIVATION_STREAMER_H_
#define CKA_CLIENT_ACTIVATION_STREAMER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cka/client/batch.h"
#include "cka/client/client.h"

namespace cka::client {

// What Submit does when the queue is full.
enum class QueuePolicy {
  kBlock,  // waits for room (the training loop slows down to the network's
           // pace)
  kDropAndCount,  // drops the new batch, counts it, returns ResourceExhausted
                  // at once
};

struct StreamerOptions {
  std::string session_id;
  std::string source;  // the model/job; streams are named "source/layer"
  QueuePolicy policy = QueuePolicy::kBlock;
  // Bounds of the queue of batches not yet written to the stream (both apply).
  int64_t max_queue_batches = 64;
  int64_t max_queue_bytes = int64_t{1} << 30;
  // Batches written but not yet acked, at most (the resend window after a
  // reconnect).
  int64_t max_in_flight = 32;
  // Client-side Gram reduction: send the n × n float32 linear Gram K = X·Xᵀ
  // (computed on the background thread, with AVX-512 or AVX2 and FMA where
  // the CPU has them) instead of the n × d activations of a layer when that is
  // fewer bytes. Only for sessions without an exact measure: before the first
  // send the streamer reads the session's config and keeps sending activations
  // when it has one.
  bool reduce_to_gram = false;
  // Reconnection backoff: the first wait, the cap, and the factor between
  // waits.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double backoff_multiplier = 2.0;
};

// A batch the server (or the streamer itself) rejected.
struct BatchError {
  std::string batch_id;
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string message;
};

// Counters since the streamer was created.
struct StreamerStats {
  int64_t submitted = 0;  // batches accepted by Submit
  int64_t sent = 0;   // batch messages written to a stream, resends included
  int64_t acked = 0;  // acks with code OK (duplicates included)
  int64_t rejected =
      0;  // acks with an error code, and batches failed before sending
  int64_t dropped = 0;  // batches refused by a full queue under kDropAndCount
  int64_t duplicates = 0;  // OK acks that the server marked duplicate
  int64_t reconnects = 0;  // streams opened after the first one
  int64_t resent = 0;      // batch messages written again after a reconnect
  int64_t gram_reduced_layers =
      0;  // layers sent as Grams by the client-side reduction
};

class ActivationStreamer {
 public:
  // Returns a streamer on `client`'s channel and options (the client may be
  // destroyed first). InvalidArgument for an empty session id or non-positive
  // bounds. Starts the background thread; the stream is opened when the first
  // batch is sent.
  static absl::StatusOr<std::unique_ptr<ActivationStreamer>> Create(
      const Client& client, StreamerOptions options);
  virtual ~ActivationStreamer() = default;

  // Validates `batch` and enqueues it. Returns OK once enqueued;
  // InvalidArgument for a bad batch (no layers, empty batch id, a shape or byte
  // count that does not match, unknown dtype); ResourceExhausted when its
  // message would exceed the max message size (the message names the size and
  // the limit) or when the queue is full under kDropAndCount;
  // FailedPrecondition after Close(). Under kBlock waits for room. Never copies
  // the bytes.
  virtual absl::Status Submit(Batch batch) = 0;

  // Waits until every batch submitted before the call is acked or failed, or
  // `deadline` passes. Returns the errors of the batches that failed since the
  // previous Flush (and removes them), or DeadlineExceeded naming the batches
  // still outstanding (the errors stay for the next Flush).
  virtual absl::StatusOr<std::vector<BatchError>> Flush(
      absl::Time deadline) = 0;

  // Flushes, then half-closes the stream and stops the background thread.
  // Submit fails afterwards. Returns Flush's result. Idempotent.
  virtual absl::StatusOr<std::vector<BatchError>> Close(
      absl::Time deadline) = 0;

  // Returns the counters.
  virtual StreamerStats stats() const = 0;

  // For tests: while `discard` is true, acks are read but not applied, as if
  // lost on the way.
  virtual void DiscardAcksForTesting(bool discard) = 0;
  // For tests: cancels the current stream as a broken connection would and,
  // atomically, stops discarding acks (those of the old stream stay lost); the
  // streamer reconnects and resends every batch not yet acked.
  virtual void BreakStreamForTesting() = 0;

 protected:
  ActivationStreamer() = default;
};

}  // namespace cka::client

#endif  // CKA_CLIENT_ACTIVATION_STREAMER_H_
