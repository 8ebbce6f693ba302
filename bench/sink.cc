#include "sink.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "sink.grpc.pb.h"

namespace cka::bench {
namespace {

// One Stream call: acknowledges each chunk in order. Reads are issued again
// at once (the sink never holds more than the chunk being read); acks wait for
// the previous write, as gRPC allows one write at a time. Every operation is
// decided under mu_ and started after it is released.
class SinkStream final : public grpc::ServerBidiReactor<Chunk, ChunkAck> {
 public:
  SinkStream() { StartRead(&chunk_); }

  void OnReadDone(bool ok) override {
    bool read = false;
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      if (ok) {
        ++unacked_;
        read = !failed_;
      } else {
        reads_done_ = true;
      }
      actions = NextActionsLocked();
    }
    if (read) StartRead(&chunk_);
    Perform(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) failed_ = true;
      actions = NextActionsLocked();
    }
    Perform(actions);
  }

  void OnDone() override { delete this; }

 private:
  struct Actions {
    bool write = false;
    std::optional<grpc::Status> finish;
  };

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (!writing_ && !failed_ && unacked_ > 0) {
      writing_ = true;
      --unacked_;
      ack_.set_sequence(next_sequence_++);
      actions.write = true;
    }
    if (!writing_ && (failed_ || (reads_done_ && unacked_ == 0))) {
      finished_ = true;
      actions.finish = failed_ ? grpc::Status(grpc::StatusCode::CANCELLED,
                                              "an ack could not be written")
                               : grpc::Status::OK;
    }
    return actions;
  }

  void Perform(const Actions& actions) {
    if (actions.write) StartWrite(&ack_);
    if (actions.finish.has_value()) Finish(*actions.finish);
  }

  Chunk chunk_;  // target of the one outstanding read; its bytes are dropped
  absl::Mutex mu_;
  ChunkAck ack_ ABSL_GUARDED_BY(mu_);  // changed only while no write is out
  int64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t unacked_ ABSL_GUARDED_BY(mu_) = 0;  // chunks read, ack not started
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class SinkService final : public Sink::CallbackService {
  grpc::ServerBidiReactor<Chunk, ChunkAck>* Stream(
      grpc::CallbackServerContext* /*context*/) override {
    return new SinkStream();
  }
};

}  // namespace

int RunSinkServer(int max_message_mb) {
  // Blocked before gRPC starts its threads, so that only sigwait takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int64_t max_message_bytes = int64_t{max_message_mb} << 20;
  SinkService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  // ckad's limits (server/server.cc): it receives up to twice the limit.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(2 * max_message_bytes, INT_MAX)));
  builder.SetMaxSendMessageSize(
      static_cast<int>(std::min<int64_t>(max_message_bytes, INT_MAX)));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "sink: cannot listen on 127.0.0.1:0\n");
    return 1;
  }
  std::printf("%s127.0.0.1:%d\n", kSinkListeningMarker, port);
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

absl::StatusOr<SinkStreamResult> StreamToSink(
    const std::shared_ptr<grpc::Channel>& channel,
    const std::vector<int64_t>& part_bytes, int window, absl::Duration duration,
    int64_t min_messages, const std::function<double()>& cpu_seconds) {
  std::unique_ptr<Sink::Stub> stub = Sink::NewStub(channel);
  Chunk chunk;
  for (int64_t bytes : part_bytes)
    chunk.add_parts()->resize(static_cast<size_t>(bytes));
  SinkStreamResult result;
  result.message_bytes = static_cast<int64_t>(chunk.ByteSizeLong());

  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<Chunk, ChunkAck>> stream =
      stub->Stream(&context);
  absl::Mutex mu;
  int64_t acked = 0;
  bool reader_done = false;
  std::chrono::steady_clock::time_point warm_at, last_ack_at;
  double cpu_at_warm = 0;
  std::thread reader([&] {
    ChunkAck ack;
    while (stream->Read(&ack)) {
      absl::MutexLock lock(&mu);
      ++acked;
      last_ack_at = std::chrono::steady_clock::now();
      if (acked == kWarmupMessages) {
        warm_at = last_ack_at;
        if (cpu_seconds) cpu_at_warm = cpu_seconds();
      }
    }
    absl::MutexLock lock(&mu);
    if (cpu_seconds) result.cpu_seconds = cpu_seconds() - cpu_at_warm;
    reader_done = true;
  });

  const auto start = std::chrono::steady_clock::now();
  const auto stop_writing = start + absl::ToChronoNanoseconds(duration);
  int64_t sent = 0;
  while (sent < min_messages + kWarmupMessages ||
         std::chrono::steady_clock::now() < stop_writing) {
    {
      absl::MutexLock lock(&mu);
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return sent - acked < window || reader_done;
      };
      mu.Await(absl::Condition(&room));
      if (reader_done) break;
    }
    if (!stream->Write(chunk)) break;
    ++sent;
  }
  stream->WritesDone();
  reader.join();
  const grpc::Status status = stream->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("sink stream: ", status.error_message()));
  }
  if (acked != sent || sent < min_messages + kWarmupMessages) {
    return absl::InternalError(absl::StrCat(
        "sink stream: ", sent, " messages written, ", acked, " acknowledged"));
  }
  // Steady state: from the ack of the last warm-up message to the last ack.
  result.messages = sent - kWarmupMessages;
  result.seconds = std::chrono::duration<double>(last_ack_at - warm_at).count();
  return result;
}

}  // namespace cka::bench
