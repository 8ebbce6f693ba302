// Crash and shutdown tests of ckad's durability: the real ckad binary as a
// subprocess on a fixed loopback port and a data directory, streamers that
// resend what was not acknowledged, SIGKILL at random moments and SIGTERM.
//
// The claim under test (README, "Durability"): a BatchAck with code OK means
// the batch is committed, and a resend is never counted twice. So after any
// number of crashes, once every batch has been acknowledged, each CKA entry
// must equal an independent float64 computation over exactly the acknowledged
// batches, and its batch count must be the number of those batches.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "reference_cka.h"

namespace cka::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kExamples = 6;                   // n of every batch
const std::vector<int> kLayerWidths = {5, 3};  // d of layers l0, l1
const std::vector<std::string> kSources = {"a", "b", "c"};
constexpr int kWindow = 8;  // batches a streamer keeps unacknowledged
constexpr int kMaxBatchesPerSource = 20000;
constexpr int kGrpcOk = 0;
constexpr int kGrpcUnavailable = 14;

std::string NewTempDir() {
  std::string pattern =
      (fs::path(::testing::TempDir()) / "ckad_crash_XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

// Returns a loopback port that was free a moment ago. ckad is restarted on
// the same port so that the streamers' channels find it again.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string StreamName(const std::string& source, int layer) {
  return absl::StrCat(source, "/l", layer);
}

// The activations of one stream in batch `index`: a seeded standard normal
// matrix plus a component shared by every stream of the batch (so CKA values
// are far from 0 and a wrong count shows).
Activations BatchActivations(int source, int layer, int index) {
  std::mt19937_64 shared_rng(1000003ULL * index + 17);
  std::mt19937_64 rng(1000003ULL * index + 7919ULL * source + 31ULL * layer +
                      1);
  std::normal_distribution<double> normal;
  Activations a;
  a.n = kExamples;
  a.d = kLayerWidths[layer];
  a.x.resize(static_cast<size_t>(a.n) * a.d);
  std::vector<double> shared(static_cast<size_t>(a.n) * 8);
  for (double& v : shared) v = normal(shared_rng);
  for (int i = 0; i < a.n; ++i) {
    for (int j = 0; j < a.d; ++j)
      a.x[i * a.d + j] = normal(rng) + 0.8 * shared[i * 8 + j];
  }
  return a;
}

v1::ActivationBatch MakeBatch(const std::string& session_id, int source,
                              int index) {
  v1::ActivationBatch batch;
  batch.set_session_id(session_id);
  batch.set_source(kSources[source]);
  batch.set_batch_id(absl::StrCat("b", index));
  batch.set_step(index);
  for (int layer = 0; layer < static_cast<int>(kLayerWidths.size()); ++layer) {
    const Activations a = BatchActivations(source, layer, index);
    v1::LayerActivation* l = batch.add_layers();
    l->set_layer(absl::StrCat("l", layer));
    v1::Tensor* t = l->mutable_activations();
    t->add_shape(a.n);
    t->add_shape(a.d);
    t->set_dtype(v1::FLOAT64);  // float64 in, so the server's sums are exact
    t->set_data(a.x.data(), a.x.size() * sizeof(double));
  }
  return batch;
}

std::shared_ptr<grpc::Channel> Connect(int port) {
  grpc::ChannelArguments args;
  // Reconnect quickly after each restart rather than after gRPC's default
  // backoff of a second and more.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

// ckad as a subprocess, its output appended to `log`.
class CkadProcess {
 public:
  CkadProcess(int port, std::string data_dir, std::string log)
      : port_(port), data_dir_(std::move(data_dir)), log_(std::move(log)) {}
  ~CkadProcess() {
    if (pid_ > 0) Signal(SIGKILL);
  }

  void Start() {
    const std::vector<std::string> argv = {CKAD_BINARY,
                                           "--listen",
                                           absl::StrCat("127.0.0.1:", port_),
                                           "--data-dir",
                                           data_dir_,
                                           "--threads",
                                           "2",
                                           "--shutdown-grace-s",
                                           "20",
                                           "--log-level",
                                           "info"};
    // Built before fork: the child of this threaded process may make only
    // async-signal-safe calls. (It used to build them after fork; under ASan
    // a child then sometimes hung in malloc on a lock that one of the
    // streamers' threads held at the fork.)
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      const int fd =
          ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }

  // Sends `signal` and returns the exit status (as waitpid reports it).
  int Signal(int signal) {
    Send(signal);
    return Wait();
  }
  void Send(int signal) { ::kill(pid_, signal); }
  int Wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  // Waits until ckad answers ListSessions; false if it exited or took longer
  // than `timeout`.
  bool WaitServing(v1::Similarity::Stub* stub, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      context.set_wait_for_ready(true);
      v1::ListSessionsResponse response;
      if (stub->ListSessions(&context, v1::ListSessionsRequest(), &response)
              .ok()) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

 private:
  const int port_;
  const std::string data_dir_;
  const std::string log_;
  pid_t pid_ = -1;
};

// One source's batches: sends them in order over StreamActivations with a
// window, reconnects whenever the stream breaks and resends everything from
// the first unacknowledged batch.
class Streamer {
 public:
  Streamer(int port, std::string session_id, int source)
      : session_id_(std::move(session_id)),
        source_(source),
        stub_(v1::Similarity::NewStub(Connect(port))) {}

  // Stops (at the end of the current stream) if still running.
  ~Streamer() {
    if (thread_.joinable()) {
      StopSending(/*give_up=*/true);
      thread_.join();
    }
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  // No batch beyond those already sent is sent after this; the streamer ends
  // once they are all acknowledged (or, with `give_up`, at the end of the
  // current stream).
  void StopSending(bool give_up = false) {
    give_up_ = give_up;
    stop_sending_ = true;
  }
  void Join() { thread_.join(); }

  int acked() const { return acked_; }
  int duplicates() const { return duplicates_; }
  int reconnects() const { return reconnects_; }
  const std::string& error() const { return error_; }

 private:
  void Run() {
    while (error_.empty()) {
      if (stop_sending_ && (give_up_ || acked_ >= sent_limit_)) return;
      if (acked_ >= kMaxBatchesPerSource) return;
      grpc::ClientContext context;
      context.set_wait_for_ready(true);
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      auto stream = stub_->StreamActivations(&context);
      int next_send = acked_;
      bool broken = false;
      bool writable = true;  // false once a write failed: only acks remain
      while (error_.empty()) {
        const int limit =
            stop_sending_ ? sent_limit_.load() : kMaxBatchesPerSource;
        if (acked_ >= limit) break;
        if (writable && next_send < limit && next_send - acked_ < kWindow) {
          // Counted as sent before it is: a StopSending from now on still
          // waits for its ack.
          sent_limit_ = std::max(sent_limit_.load(), next_send + 1);
          if (!stream->Write(MakeBatch(session_id_, source_, next_send))) {
            // The call is over, but acks it delivered may still be unread.
            writable = false;
            continue;
          }
          ++next_send;
          continue;
        }
        v1::BatchAck ack;
        if (!stream->Read(&ack)) {
          broken = true;
          break;
        }
        if (ack.batch_id() != absl::StrCat("b", acked_.load())) {
          error_ = absl::StrCat("source ", source_, ": ack for '",
                                ack.batch_id(), "' while b", acked_.load(),
                                " was the oldest unacknowledged batch");
          break;
        }
        if (ack.code() == kGrpcUnavailable) {
          broken = true;  // not durable (or shutting down): resend
          break;
        }
        if (ack.code() != kGrpcOk) {
          error_ = absl::StrCat("source ", source_, ": batch ", ack.batch_id(),
                                " refused: ", ack.code(), " ", ack.message());
          break;
        }
        if (ack.duplicate()) ++duplicates_;
        ++acked_;
      }
      if (!broken) stream->WritesDone();
      context.TryCancel();
      const grpc::Status end = stream->Finish();
      if (broken) {
        ++reconnects_;
        if (getenv("CRASH_DEBUG") != nullptr)
          std::fprintf(stderr, "source %d: stream ended: %d %s\n", source_,
                       end.error_code(), end.error_message().c_str());
      }
    }
  }

  const std::string session_id_;
  const int source_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
  std::thread thread_;
  std::atomic<bool> stop_sending_{false};
  std::atomic<bool> give_up_{false};
  // Batches [0, acked_) are acknowledged with code OK; batches [0,
  // sent_limit_) were sent at least once.
  std::atomic<int> acked_{0};
  std::atomic<int> sent_limit_{0};
  std::atomic<int> duplicates_{0};
  std::atomic<int> reconnects_{0};
  std::string error_;  // written by the streamer's thread, read after Join
};

grpc::Status CreateSession(v1::Similarity::Stub* stub, const std::string& id) {
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  // Declared streams: every batch_id waits for all six before it leaves the
  // join buffer, whatever order the sources' batches arrive in.
  for (const std::string& source : kSources) {
    for (int layer = 0; layer < static_cast<int>(kLayerWidths.size()); ++layer)
      request.mutable_config()->add_streams(StreamName(source, layer));
  }
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::Session session;
  return stub->CreateSession(&context, request, &session);
}

// Checks the session's linear CKA matrix against the reference over batches
// [0, acked[s]) of each source s.
void ExpectMatrixOverAckedBatches(v1::Similarity::Stub* stub,
                                  const std::string& session_id,
                                  const std::vector<int>& acked) {
  v1::GetSimilarityRequest request;
  request.set_session_id(session_id);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::SimilarityMatrix matrix;
  const grpc::Status status = stub->GetSimilarity(&context, request, &matrix);
  ASSERT_TRUE(status.ok()) << status.error_message();

  int most = 0;
  for (int a : acked) most = std::max(most, a);
  std::vector<ReferenceBatch> batches(most);
  for (int index = 0; index < most; ++index) {
    for (size_t s = 0; s < kSources.size(); ++s) {
      if (index >= acked[s]) continue;
      for (int layer = 0; layer < static_cast<int>(kLayerWidths.size());
           ++layer) {
        batches[index][StreamName(kSources[s], layer)] =
            BatchActivations(static_cast<int>(s), layer, index);
      }
    }
  }
  auto acked_of = [&](const std::string& stream) {
    for (size_t s = 0; s < kSources.size(); ++s) {
      if (stream.rfind(kSources[s] + "/", 0) == 0) return acked[s];
    }
    ADD_FAILURE() << "unknown stream " << stream;
    return 0;
  };
  ASSERT_EQ(matrix.rows_size(), 6);
  ASSERT_EQ(matrix.cols_size(), 6);
  for (int i = 0; i < matrix.rows_size(); ++i) {
    for (int j = 0; j < matrix.cols_size(); ++j) {
      const std::string& s = matrix.rows(i);
      const std::string& t = matrix.cols(j);
      const int k = i * matrix.cols_size() + j;
      // A batch counts for (s, t) when both its halves were acknowledged:
      // exactly once, never more (a resent duplicate must not count).
      EXPECT_EQ(matrix.batches(k), std::min(acked_of(s), acked_of(t)))
          << s << " × " << t;
      const double expected = ReferenceMinibatchCka(batches, s, t, true);
      // Float64 inputs and float64 sums on both sides; 1e-9 relative leaves
      // room for summation order over a few thousand batches only.
      EXPECT_NEAR(matrix.values(k), expected, 1e-9 * std::abs(expected))
          << s << " × " << t;
    }
  }
}

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    data_dir_ = dir_ + "/data";
    log_ = dir_ + "/ckad.log";
    port_ = FreePort();
    server_ = std::make_unique<CkadProcess>(port_, data_dir_, log_);
    stub_ = v1::Similarity::NewStub(Connect(port_));
  }
  void TearDown() override {
    server_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  void StartServing() {
    server_->Start();
    ASSERT_TRUE(server_->WaitServing(stub_.get(), absl::Seconds(20)))
        << "ckad did not start; its log is " << log_;
  }

  // Starts one streamer per source into `session`.
  std::vector<std::unique_ptr<Streamer>> StartStreamers(
      const std::string& session) {
    std::vector<std::unique_ptr<Streamer>> streamers;
    for (size_t s = 0; s < kSources.size(); ++s) {
      streamers.push_back(
          std::make_unique<Streamer>(port_, session, static_cast<int>(s)));
      streamers.back()->Start();
    }
    return streamers;
  }

  std::string dir_, data_dir_, log_;
  int port_ = 0;
  std::unique_ptr<CkadProcess> server_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
};

TEST_F(CrashTest, AckedBatchesSurviveRepeatedSigkillAndNoneCountsTwice) {
  constexpr int kKills = 12;
  const std::string session = "crash";
  ASSERT_NO_FATAL_FAILURE(StartServing());
  ASSERT_TRUE(CreateSession(stub_.get(), session).ok());

  std::vector<std::unique_ptr<Streamer>> streamers = StartStreamers(session);
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  std::uniform_int_distribution<int> alive_ms(50, 600);
  const absl::Time started = absl::Now();
  for (int kill = 0; kill < kKills; ++kill) {
    absl::SleepFor(absl::Milliseconds(alive_ms(rng)));
    const int status = server_->Signal(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "ckad exited by itself (status " << status << "); log " << log_;
    ASSERT_NO_FATAL_FAILURE(StartServing());
    // The session itself is durable.
    v1::GetSessionRequest get;
    get.set_session_id(session);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::Session info;
    ASSERT_TRUE(stub_->GetSession(&context, get, &info).ok());
  }
  const absl::Duration kill_phase = absl::Now() - started;
  for (auto& s : streamers) s->StopSending();
  for (auto& s : streamers) s->Join();

  std::vector<int> acked;
  int duplicates = 0, reconnects = 0;
  for (auto& s : streamers) {
    EXPECT_EQ(s->error(), "");
    acked.push_back(s->acked());
    duplicates += s->duplicates();
    reconnects += s->reconnects();
  }
  std::printf(
      "%d SIGKILLs in %s; acknowledged batches per source: %d %d %d; %d "
      "reconnects, %d resent batches answered as duplicates\n",
      kKills, absl::FormatDuration(kill_phase).c_str(), acked[0], acked[1],
      acked[2], reconnects, duplicates);
  for (int a : acked) EXPECT_GT(a, 0);
  EXPECT_GE(reconnects, kKills);
  ASSERT_NO_FATAL_FAILURE(
      ExpectMatrixOverAckedBatches(stub_.get(), session, acked));

  // And once more after a crash with nothing in flight.
  server_->Signal(SIGKILL);
  ASSERT_NO_FATAL_FAILURE(StartServing());
  ASSERT_NO_FATAL_FAILURE(
      ExpectMatrixOverAckedBatches(stub_.get(), session, acked));
}

TEST_F(CrashTest, EverythingAckedBeforeSigtermIsThereAfterRestart) {
  const std::string session = "term";
  ASSERT_NO_FATAL_FAILURE(StartServing());
  ASSERT_TRUE(CreateSession(stub_.get(), session).ok());
  std::vector<std::unique_ptr<Streamer>> streamers = StartStreamers(session);
  absl::SleepFor(absl::Milliseconds(1500));
  server_->Send(SIGTERM);
  // Before the drain ends their streams, so that they do not reconnect.
  for (auto& s : streamers) s->StopSending(/*give_up=*/true);
  const int status = server_->Wait();
  for (auto& s : streamers) s->Join();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "status " << status << "; log " << log_;

  std::vector<int> acked;
  for (auto& s : streamers) {
    EXPECT_EQ(s->error(), "");
    acked.push_back(s->acked());
    EXPECT_GT(s->acked(), 0);
  }
  std::printf("acknowledged before SIGTERM per source: %d %d %d\n", acked[0],
              acked[1], acked[2]);
  ASSERT_NO_FATAL_FAILURE(StartServing());
  // A graceful stop acknowledges every batch it read and reads no more, so
  // what is stored is exactly what was acknowledged.
  ASSERT_NO_FATAL_FAILURE(
      ExpectMatrixOverAckedBatches(stub_.get(), session, acked));
}

}  // namespace
}  // namespace cka::testing
