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
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "reference_cka.h"
#include "spawn.h"

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

// Returns the seed of a randomised test: CKA_CRASH_SEED when set, else a fresh
// one; prints it (and records it in the test's XML) so that a failure can be
// replayed with CKA_CRASH_SEED=<seed>.
uint64_t CrashSeed() {
  uint64_t seed = 0;
  const char* env = getenv("CKA_CRASH_SEED");
  if (env == nullptr || !absl::SimpleAtoi(env, &seed)) {
    std::random_device device;
    seed = (uint64_t{device()} << 32) | device();
  }
  const ::testing::TestInfo* test =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("%s.%s: CKA_CRASH_SEED=%llu\n", test->test_suite_name(),
              test->name(), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
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
  // Flags added to every later Start.
  void AddFlags(const std::vector<std::string>& flags) {
    extra_flags_.insert(extra_flags_.end(), flags.begin(), flags.end());
  }
  // Returns whether ckad has exited (reaping it).
  bool Exited() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
    return pid_ <= 0;
  }
  ~CkadProcess() {
    if (pid_ > 0) Signal(SIGKILL);
  }

  void Start() {
    std::vector<std::string> argv = {CKAD_BINARY,
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
    argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
    pid_ = SpawnWithLog(argv, log_);
    ASSERT_GE(pid_, 0);
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
  std::vector<std::string> extra_flags_;
  pid_t pid_ = -1;
};

// Returns the bytes of `path` from `offset` on.
std::string ReadFrom(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

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
  std::mt19937_64 rng(CrashSeed());
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

// ---------------------------------------------------------------------------
// Sessions with every kind of state: step buckets, a linear, an RBF and an
// exact measure over declared streams; batches come from source "a" only.

constexpr int kStepBucket = 2;
const std::vector<std::string> kMeasures = {"lin", "rbf", "ex"};

v1::CreateSessionRequest RichSession(const std::string& id) {
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  v1::SessionConfig* config = request.mutable_config();
  auto add = [config](const std::string& name, v1::Kernel kernel,
                      v1::Estimator estimator) {
    v1::Measure* m = config->add_measures();
    m->set_name(name);
    m->set_kernel(kernel);
    m->set_estimator(estimator);
    if (kernel == v1::RBF) m->set_rbf_threshold(0.5);
  };
  add(kMeasures[0], v1::LINEAR, v1::UNBIASED);
  add(kMeasures[1], v1::RBF, v1::BIASED);
  add(kMeasures[2], v1::LINEAR, v1::EXACT);
  for (int layer = 0; layer < static_cast<int>(kLayerWidths.size()); ++layer) {
    config->add_streams(StreamName(kSources[0], layer));
    config->add_stream_widths(kLayerWidths[layer]);
  }
  config->set_step_bucket(kStepBucket);
  return request;
}

std::unique_ptr<grpc::ClientContext> Deadline(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

// Sends batches [first, first + count) of source "a" into `session` one at a
// time over one stream; counts each in *sent before it goes and in *acked
// when acknowledged OK. Returns false at the first failure (of the call or of
// an ack).
bool SendBatches(v1::Similarity::Stub* stub, const std::string& session,
                 int first, int count, std::atomic<int>* sent,
                 std::atomic<int>* acked) {
  std::unique_ptr<grpc::ClientContext> context = Deadline(absl::Seconds(30));
  auto stream = stub->StreamActivations(context.get());
  bool ok = true;
  for (int i = first; i < first + count && ok; ++i) {
    ++*sent;
    v1::BatchAck ack;
    ok = stream->Write(MakeBatch(session, 0, i)) && stream->Read(&ack) &&
         ack.code() == kGrpcOk && !ack.duplicate();
    if (ok) ++*acked;
  }
  if (ok) stream->WritesDone();
  context->TryCancel();
  stream->Finish().IgnoreError();
  return ok;
}

// What a session answers: its counters and, per measure, the whole matrix
// and the matrix of step bucket 0 alone.
struct SessionState {
  int64_t batches_applied = -1;
  std::map<std::string, v1::SimilarityMatrix> matrices;
};

std::optional<SessionState> ReadState(v1::Similarity::Stub* stub,
                                      const std::string& id) {
  SessionState state;
  v1::GetSessionRequest get;
  get.set_session_id(id);
  v1::Session info;
  if (!stub->GetSession(Deadline(absl::Seconds(10)).get(), get, &info).ok())
    return std::nullopt;
  state.batches_applied = info.batches_applied();
  for (const std::string& measure : kMeasures) {
    // The exact measure is kept over all steps: no bucket query.
    for (bool bucket0 : {false, true}) {
      if (bucket0 && measure == kMeasures[2]) continue;
      v1::GetSimilarityRequest query;
      query.set_session_id(id);
      query.set_measure(measure);
      if (bucket0) {
        query.set_step_min(0);
        query.set_step_max(kStepBucket - 1);
      }
      v1::SimilarityMatrix& m =
          state.matrices[absl::StrCat(measure, bucket0 ? " bucket 0" : "")];
      const grpc::Status status =
          stub->GetSimilarity(Deadline(absl::Seconds(10)).get(), query, &m);
      EXPECT_TRUE(status.ok())
          << id << " " << measure << ": " << status.error_message();
      m.clear_session_id();
    }
  }
  return state;
}

// Expects `actual` (session `id` after crashes) to be `expected` (a session
// that got the same batches without a crash). The same sums in the same order
// give the same values; 1e-12 relative covers a different order of the
// additions only.
void ExpectSameState(const std::string& id, const SessionState& actual,
                     const SessionState& expected) {
  EXPECT_EQ(actual.batches_applied, expected.batches_applied) << id;
  for (const auto& [name, want] : expected.matrices) {
    auto it = actual.matrices.find(name);
    ASSERT_NE(it, actual.matrices.end()) << id << " " << name;
    const v1::SimilarityMatrix& got = it->second;
    ASSERT_EQ(got.values_size(), want.values_size()) << id << " " << name;
    ASSERT_EQ(got.batches_size(), want.batches_size()) << id << " " << name;
    for (int k = 0; k < want.values_size(); ++k) {
      EXPECT_EQ(got.batches(k), want.batches(k)) << id << " " << name;
      if (std::isnan(want.values(k))) {
        EXPECT_TRUE(std::isnan(got.values(k))) << id << " " << name;
      } else {
        EXPECT_NEAR(got.values(k), want.values(k),
                    1e-12 * std::abs(want.values(k)))
            << id << " " << name << " entry " << k;
      }
    }
  }
}

// Checks the linear measure of `state` against the float64 reference over
// batches [0, count) of source "a".
void ExpectLinearMatchesReference(const SessionState& state, int count) {
  std::vector<ReferenceBatch> batches(count);
  for (int i = 0; i < count; ++i) {
    for (int layer = 0; layer < static_cast<int>(kLayerWidths.size()); ++layer)
      batches[i][StreamName(kSources[0], layer)] =
          BatchActivations(0, layer, i);
  }
  const v1::SimilarityMatrix& m = state.matrices.at(kMeasures[0]);
  ASSERT_EQ(m.values_size(), 4);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      const double expected =
          ReferenceMinibatchCka(batches, m.rows(i), m.cols(j), true);
      EXPECT_NEAR(m.values(i * 2 + j), expected, 1e-9 * std::abs(expected));
      EXPECT_EQ(m.batches(i * 2 + j), count);
    }
  }
}

// Runs `sql` on the database of a stopped ckad, as another program would.
void RunSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

TEST_F(CrashTest, SigkillWhileRestoringLosesNothingAcknowledged) {
  // Enough sessions that restoring them takes a while; their rows are copied
  // in SQL from one session ckad wrote (a session's records do not name it).
  constexpr int kCopies = 2000;
  constexpr int kCopiedBatches = 8, kMoreBatches = 6, kKills = 4;
  std::mt19937_64 rng(CrashSeed());
  server_->AddFlags({"--max-sessions", std::to_string(kCopies + 10)});

  ASSERT_NO_FATAL_FAILURE(StartServing());
  v1::Session created;
  ASSERT_TRUE(stub_
                  ->CreateSession(Deadline(absl::Seconds(10)).get(),
                                  RichSession("seed"), &created)
                  .ok());
  std::atomic<int> sent{0}, acked{0};
  ASSERT_TRUE(
      SendBatches(stub_.get(), "seed", 0, kCopiedBatches, &sent, &acked));
  std::optional<SessionState> copied = ReadState(stub_.get(), "seed");
  ASSERT_TRUE(copied.has_value());
  ASSERT_NO_FATAL_FAILURE(
      ExpectLinearMatchesReference(*copied, kCopiedBatches));
  server_->Send(SIGTERM);
  ASSERT_TRUE(WIFEXITED(server_->Wait()));
  ASSERT_NO_FATAL_FAILURE(RunSql(
      data_dir_ + "/ckad.db",
      absl::StrCat("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                   "FROM n WHERE i < ",
                   kCopies,
                   ") INSERT INTO sessions SELECT 'copy' || i FROM n;"
                   "INSERT INTO records SELECT s.session_id, r.key, r.value "
                   "FROM sessions s, records r WHERE s.session_id LIKE "
                   "'copy%' AND r.session_id = 'seed';")));

  // More batches into the seed, then SIGKILL: the restarts below also find
  // commits in the WAL, not yet in the database file.
  ASSERT_NO_FATAL_FAILURE(StartServing());
  ASSERT_TRUE(SendBatches(stub_.get(), "seed", kCopiedBatches, kMoreBatches,
                          &sent, &acked));
  std::optional<SessionState> seed = ReadState(stub_.get(), "seed");
  ASSERT_TRUE(seed.has_value());
  server_->Signal(SIGKILL);

  // SIGKILL while ckad restores: after the k-th session of its log, k random
  // in the first half, so that the kill lands before the last.
  const std::string restored_line = "' restored: ";
  int during_restore = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    const size_t offset = fs::file_size(log_);
    const int after = std::uniform_int_distribution<int>(1, kCopies / 2)(rng);
    server_->Start();
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (CountOf(ReadFrom(log_, offset), restored_line) < after) {
      ASSERT_FALSE(server_->Exited()) << "ckad exited; log " << log_;
      ASSERT_LT(absl::Now(), deadline) << "ckad restores no session; " << log_;
      absl::SleepFor(absl::Milliseconds(1));
    }
    const int status = server_->Signal(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
    const std::string run = ReadFrom(log_, offset);
    const int restored = CountOf(run, restored_line);
    if (restored < kCopies + 1 && !absl::StrContains(run, "ckad listening"))
      ++during_restore;
    std::printf("kill %d: after %d of %d sessions restored\n", kill, restored,
                kCopies + 1);
  }
  // Each kill lands in the restore unless this process was descheduled for
  // the whole second half of it.
  EXPECT_GE(during_restore, kKills / 2);

  const size_t offset = fs::file_size(log_);
  const absl::Time started = absl::Now();
  ASSERT_NO_FATAL_FAILURE(StartServing());
  std::printf("clean restart restored %d sessions in %s\n",
              CountOf(ReadFrom(log_, offset), restored_line),
              absl::FormatDuration(absl::Now() - started).c_str());
  std::optional<SessionState> seed_now = ReadState(stub_.get(), "seed");
  ASSERT_TRUE(seed_now.has_value());
  ExpectSameState("seed", *seed_now, *seed);
  ASSERT_NO_FATAL_FAILURE(
      ExpectLinearMatchesReference(*seed_now, kCopiedBatches + kMoreBatches));
  // Every copy is there with its counters; a sample with its matrices.
  v1::ListSessionsResponse list;
  ASSERT_TRUE(stub_
                  ->ListSessions(Deadline(absl::Seconds(30)).get(),
                                 v1::ListSessionsRequest(), &list)
                  .ok());
  ASSERT_EQ(list.sessions_size(), kCopies + 1);
  for (const v1::Session& session : list.sessions()) {
    EXPECT_EQ(session.batches_applied(), session.session_id() == "seed"
                                             ? kCopiedBatches + kMoreBatches
                                             : kCopiedBatches)
        << session.session_id();
    EXPECT_EQ(session.config().measures_size(), 3) << session.session_id();
  }
  std::uniform_int_distribution<int> copy(1, kCopies);
  for (int i = 0; i < 10; ++i) {
    const std::string id = absl::StrCat("copy", copy(rng));
    std::optional<SessionState> state = ReadState(stub_.get(), id);
    ASSERT_TRUE(state.has_value()) << id;
    ExpectSameState(id, *state, *copied);
  }
}

// What the client of the test below knows of one session.
struct TrackedSession {
  bool create_acked = false;
  bool delete_sent = false;
  bool delete_acked = false;
  bool gone = false;  // known to be absent (its delete was acknowledged, or
                      // a restart showed that an unacknowledged call did it)
  std::atomic<int> batches_sent{0};
  std::atomic<int> batches_acked{0};
};

TEST_F(CrashTest,
       SigkillDuringCreateAndDeleteSessionKeepsExactlyTheAcknowledged) {
  constexpr int kRounds = 4;
  constexpr int kMaxBatches = 3;  // per session
  std::mt19937_64 rng(CrashSeed());
  ASSERT_NO_FATAL_FAILURE(StartServing());

  // Control sessions, never killed during: the state of a session after
  // batches [0, j).
  std::vector<SessionState> control;
  for (int j = 0; j <= kMaxBatches; ++j) {
    const std::string id = absl::StrCat("control", j);
    v1::Session created;
    ASSERT_TRUE(stub_
                    ->CreateSession(Deadline(absl::Seconds(10)).get(),
                                    RichSession(id), &created)
                    .ok());
    std::atomic<int> sent{0}, acked{0};
    ASSERT_TRUE(SendBatches(stub_.get(), id, 0, j, &sent, &acked));
    std::optional<SessionState> state = ReadState(stub_.get(), id);
    ASSERT_TRUE(state.has_value());
    if (j >= 1)
      ASSERT_NO_FATAL_FAILURE(ExpectLinearMatchesReference(*state, j));
    control.push_back(*std::move(state));
  }

  std::map<std::string, std::unique_ptr<TrackedSession>> tracked;
  int total_ops = 0;
  for (int round = 0; round < kRounds; ++round) {
    // The client: creates a session, streams 0 to kMaxBatches batches into
    // it, and deletes it or an older one half of the time, until a call
    // fails (ckad was killed). Only its thread writes `tracked` meanwhile.
    std::atomic<int> ops{0};
    std::mt19937_64 client_rng(rng());
    std::thread client([&] {
      for (int i = 0;; ++i) {
        const std::string id = absl::StrCat("r", round, "s", i);
        TrackedSession& t =
            *tracked.emplace(id, std::make_unique<TrackedSession>())
                 .first->second;
        v1::Session created;
        if (!stub_
                 ->CreateSession(Deadline(absl::Seconds(10)).get(),
                                 RichSession(id), &created)
                 .ok())
          return;
        t.create_acked = true;
        ++ops;
        const int batches =
            std::uniform_int_distribution<int>(0, kMaxBatches)(client_rng);
        if (!SendBatches(stub_.get(), id, 0, batches, &t.batches_sent,
                         &t.batches_acked))
          return;
        ++ops;
        if (std::uniform_int_distribution<int>(0, 1)(client_rng) == 0) continue;
        // The new session, or any live one.
        std::vector<std::string> live;
        for (const auto& [other, o] : tracked) {
          if (o->create_acked && !o->delete_sent && !o->gone)
            live.push_back(other);
        }
        const std::string victim = live[std::uniform_int_distribution<size_t>(
            0, live.size() - 1)(client_rng)];
        TrackedSession& v = *tracked.at(victim);
        v.delete_sent = true;
        v1::DeleteSessionRequest del;
        del.set_session_id(victim);
        v1::DeleteSessionResponse deleted;
        if (!stub_
                 ->DeleteSession(Deadline(absl::Seconds(10)).get(), del,
                                 &deleted)
                 .ok())
          return;
        v.delete_acked = true;
        ++ops;
      }
    });
    // SIGKILL once the client has done a random number of calls: the kill
    // lands in the middle of the next ones.
    const int kill_after = std::uniform_int_distribution<int>(1, 12)(rng);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (ops < kill_after && absl::Now() < deadline)
      absl::SleepFor(absl::Milliseconds(1));
    ASSERT_GE(ops.load(), kill_after) << "the client stalled; log " << log_;
    const int status = server_->Signal(SIGKILL);
    client.join();
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status << "; " << log_;
    total_ops += ops;
    ASSERT_NO_FATAL_FAILURE(StartServing());

    v1::ListSessionsResponse list;
    ASSERT_TRUE(stub_
                    ->ListSessions(Deadline(absl::Seconds(10)).get(),
                                   v1::ListSessionsRequest(), &list)
                    .ok());
    std::set<std::string> present;
    for (const v1::Session& s : list.sessions()) present.insert(s.session_id());
    for (int j = 0; j <= kMaxBatches; ++j)
      EXPECT_EQ(present.count(absl::StrCat("control", j)), 1u);
    for (auto& [id, t] : tracked) {
      if (t->gone) {
        EXPECT_EQ(present.count(id), 0u) << id << " came back";
        continue;
      }
      const bool must_exist = t->create_acked && !t->delete_sent;
      if (t->delete_acked) {
        EXPECT_EQ(present.count(id), 0u) << id << ": its delete was acked";
        t->gone = true;
        continue;
      }
      if (present.count(id) == 0) {
        EXPECT_FALSE(must_exist) << id << ": acknowledged, but lost";
        t->gone = true;
        continue;
      }
      // Present: with every acknowledged batch, and at most the one batch
      // in flight at the kill besides.
      std::optional<SessionState> state = ReadState(stub_.get(), id);
      ASSERT_TRUE(state.has_value()) << id;
      const int applied = static_cast<int>(state->batches_applied);
      EXPECT_GE(applied, t->batches_acked.load()) << id;
      EXPECT_LE(applied, t->batches_sent.load()) << id;
      if (applied >= 0 && applied <= kMaxBatches)
        ExpectSameState(id, *state, control[applied]);
      // From now on what the restart showed is what is known.
      t->create_acked = true;
      t->delete_sent = false;
      t->batches_sent = applied;
      t->batches_acked = applied;
    }
  }
  int alive = 0, gone = 0;
  for (const auto& [id, t] : tracked) (t->gone ? gone : alive)++;
  std::printf(
      "%d SIGKILLs amid %d acknowledged calls; %d sessions alive, %d gone\n",
      kRounds, total_ops, alive, gone);
}

}  // namespace
}  // namespace cka::testing
