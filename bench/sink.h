// The do-nothing Sink service (sink.proto) that cka_service_bench streams into
// to measure gRPC transport alone: its server, run in a process of its own,
// and the client that streams batch-sized messages into it.
#ifndef CKA_BENCH_SINK_H_
#define CKA_BENCH_SINK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace cka::bench {

// The line RunSinkServer prints on stdout once it serves, followed by
// "127.0.0.1:<port>".
inline constexpr char kSinkListeningMarker[] = "sink listening on ";

// Serves cka.bench.Sink on 127.0.0.1 at a free port with ckad's message size
// limits for `max_message_mb` (receive up to twice it, send up to it), prints
// kSinkListeningMarker and the address on stdout, and serves until SIGTERM or
// SIGINT. Returns the process exit code. Call it from main() before any other
// thread starts (it blocks the two signals for the whole process).
int RunSinkServer(int max_message_mb);

// What StreamToSink measured.
struct SinkStreamResult {
  int64_t message_bytes = 0;  // the serialized size of each message
  int64_t messages = 0;       // acknowledged after the warm-up
  double seconds = 0;         // from the last warm-up ack to the last ack
  // What `cpu_seconds` counted over the same messages (from the last warm-up
  // ack to the end of the stream); 0 without it.
  double cpu_seconds = 0;
};

// Messages at the start of a stream that StreamToSink does not count: gRPC's
// flow-control windows grow over the first messages (bandwidth-delay probing).
inline constexpr int64_t kWarmupMessages = 3;

// Streams messages of parts of `part_bytes` bytes (one per layer of a batch)
// into the Sink at `channel` over one bidirectional stream, keeping at most
// `window` of them unacknowledged (writes from the calling thread, acks read by
// a second one, as cka::client::ActivationStreamer does), until `duration` has
// passed and at least `min_messages` were written after kWarmupMessages; then
// half-closes and waits for every ack. The result counts the messages after the
// warm-up, from the warm-up's last ack to the last ack. Returns the status of
// the call when it fails, or Internal when acks are missing. `cpu_seconds`,
// if given, returns a CPU time so far (of both ends, say); it is read on the
// ack-reading thread.
absl::StatusOr<SinkStreamResult> StreamToSink(
    const std::shared_ptr<grpc::Channel>& channel,
    const std::vector<int64_t>& part_bytes, int window, absl::Duration duration,
    int64_t min_messages, const std::function<double()>& cpu_seconds = nullptr);

}  // namespace cka::bench

#endif  // CKA_BENCH_SINK_H_
