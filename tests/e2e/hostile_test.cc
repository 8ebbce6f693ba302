// Hostile clients against the real ckad binary (issue 14: no request can take
// ckad down).
//
// ckad runs as a subprocess on a free loopback port, its address space capped
// at 2 GiB (RLIMIT_AS; not in an ASan build, whose shadow memory reserves
// terabytes of address space), no core files, and --memory-limit-mb 512 when
// its --help lists the flag. Its stderr goes to a file whose end is printed
// when it dies.
//
// Every case sends small crafted requests (each under 2 MB on the wire)
// through the real gRPC API and checks that ckad answers each one: a status
// code, with a message when it is not OK; a BatchAck with a code and a message
// for every ActivationBatch, after which the same stream still applies a good
// batch. Where the right code is clear it is asserted (INVALID_ARGUMENT for
// malformed input, RESOURCE_EXHAUSTED over a budget, NOT_FOUND for unknown
// names); elsewhere any refusal that names itself is accepted, never
// UNAVAILABLE, INTERNAL, UNKNOWN or a missed deadline. After every case ckad
// must still be running and SERVING.
//
// Before, between and after the cases an honest session streams a fixed set of
// batches; at the end its CKA matrices equal the float64 reference of exactly
// those batches and its counters are exact.
//
// The payloads are seeded (CKA_HOSTILE_SEED, printed at the start);
// CKA_HOSTILE_CKAD names another ckad binary to run instead of the one built
// with this test (e.g. an older build, to see what it does).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/client/client.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "reference_cka.h"
#include "spawn.h"

#if defined(__SANITIZE_ADDRESS__)
#define CKA_HOSTILE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CKA_HOSTILE_ASAN 1
#endif
#endif
#ifndef CKA_HOSTILE_ASAN
#define CKA_HOSTILE_ASAN 0
#endif

namespace cka::testing {
namespace {

namespace fs = std::filesystem;
using BatchStream = grpc::ClientReaderWriter<v1::ActivationBatch, v1::BatchAck>;
using grpc::StatusCode;

// ASan maps terabytes of shadow memory: an address-space cap would stop it
// from starting, so the sanitizer build runs the cases without one.
constexpr bool kAsan = CKA_HOSTILE_ASAN != 0;
constexpr rlim_t kAddressSpaceBytes = rlim_t{2} << 30;
constexpr int kMemoryLimitMb = 512;
constexpr int kMaxStreamsPerClient = 16;
// Every crafted request stays under this many bytes on the wire.
constexpr size_t kMaxRequestBytes = size_t{2} << 20;
constexpr size_t kOneMb = size_t{1} << 20;
constexpr int kRepeats = 30000;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
const absl::Duration kCallTimeout = absl::Seconds(30);
const absl::Duration kStreamTimeout = absl::Seconds(60);

// The honest session: source "s", three layers, declared, two measures.
constexpr char kSteady[] = "steady";
constexpr int kSteadyRows = 8;
const std::vector<std::pair<std::string, int>> kSteadyLayers = {
    {"a", 4}, {"b", 3}, {"c", 5}};
// A four-stream session the query cases read.
constexpr char kFour[] = "h-four";
// A session without declared streams that most bad batches are sent to.
constexpr char kPlain[] = "h-plain";

uint64_t PayloadSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("CKA_HOSTILE_SEED");
    return env != nullptr ? std::strtoull(env, nullptr, 10) : uint64_t{14};
  }();
  return seed;
}

std::string CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code >= 0 && code < 17) return kNames[code];
  return absl::StrCat("code ", code);
}

// Codes that mean ckad failed to answer the request itself: it died, broke,
// or did not answer in time.
bool IsFailureCode(int code) {
  switch (static_cast<StatusCode>(code)) {
    case StatusCode::UNAVAILABLE:
    case StatusCode::INTERNAL:
    case StatusCode::UNKNOWN:
    case StatusCode::DEADLINE_EXCEEDED:
    case StatusCode::CANCELLED:
    case StatusCode::DATA_LOSS:
    case StatusCode::UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}

// What a request may be answered with.
struct Want {
  enum Kind {
    kCodes,    // one of `codes`
    kRefused,  // any refusal that is not a failure code
    kAnswered  // OK or such a refusal
  };
  Kind kind = kAnswered;
  std::vector<StatusCode> codes;

  static Want Is(std::vector<StatusCode> codes) {
    return {kCodes, std::move(codes)};
  }
  static Want Refused() { return {kRefused, {}}; }
  static Want Answered() { return {kAnswered, {}}; }

  bool Accepts(int code) const {
    switch (kind) {
      case kCodes:
        return std::find(codes.begin(), codes.end(),
                         static_cast<StatusCode>(code)) != codes.end();
      case kRefused:
        return code != 0 && !IsFailureCode(code);
      case kAnswered:
        return !IsFailureCode(code);
    }
    return false;
  }
  std::string Describe() const {
    switch (kind) {
      case kCodes: {
        std::string s;
        for (StatusCode c : codes)
          absl::StrAppend(&s, s.empty() ? "" : " or ", CodeName(c));
        return s;
      }
      case kRefused:
        return "a refusal (not UNAVAILABLE/INTERNAL/UNKNOWN/...)";
      case kAnswered:
        return "OK or a refusal (not UNAVAILABLE/INTERNAL/UNKNOWN/...)";
    }
    return "";
  }
};

const Want kOk = Want::Is({StatusCode::OK});
const Want kInvalid = Want::Is({StatusCode::INVALID_ARGUMENT});
const Want kNotFound = Want::Is({StatusCode::NOT_FOUND});
const Want kExhausted = Want::Is({StatusCode::RESOURCE_EXHAUSTED});
const Want kInvalidOrExhausted =
    Want::Is({StatusCode::INVALID_ARGUMENT, StatusCode::RESOURCE_EXHAUSTED});
const Want kOkOrExhausted =
    Want::Is({StatusCode::OK, StatusCode::RESOURCE_EXHAUSTED});

// Returns the first `most` bytes of `s` with control and non-ASCII bytes as
// '?' (newlines too unless `keep_newlines`), and its size when cut.
std::string Shorten(const std::string& s, size_t most = 200,
                    bool keep_newlines = false) {
  std::string out;
  for (char c : s.substr(0, most)) {
    const bool printable = static_cast<unsigned char>(c) >= 0x20 &&
                           static_cast<unsigned char>(c) < 0x7f;
    out += printable || (keep_newlines && c == '\n') ? c : '?';
  }
  if (s.size() > most) absl::StrAppend(&out, "… (", s.size(), " bytes)");
  return out;
}

// Returns a loopback port that was free a moment ago.
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

// The ckad under test: the one built with this test, or $CKA_HOSTILE_CKAD (to
// compare another build).
std::string CkadBinary() {
  const char* env = std::getenv("CKA_HOSTILE_CKAD");
  return env != nullptr && *env != '\0' ? env : CKAD_BINARY;
}

// Returns true when `ckad --help` lists --memory-limit-mb.
bool CkadHasMemoryLimitFlag() {
  static const bool has = [] {
    std::string help;
    FILE* p = ::popen((CkadBinary() + " --help 2>&1").c_str(), "r");
    if (p == nullptr) return false;
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof(buffer), p)) > 0)
      help.append(buffer, n);
    ::pclose(p);
    return help.find("--memory-limit-mb") != std::string::npos;
  }();
  return has;
}

// ---------------------------------------------------------------------------
// Payloads.

std::string Float32Bytes(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(PayloadSeed() * 1000003 + seed);
  std::normal_distribution<float> normal;
  std::string bytes(static_cast<size_t>(count) * 4, '\0');
  for (int64_t i = 0; i < count; ++i) {
    const float v = normal(rng);
    std::memcpy(bytes.data() + i * 4, &v, 4);
  }
  return bytes;
}

// bfloat16: the upper half of a float32.
std::string Bfloat16Bytes(int64_t count, uint64_t seed) {
  const std::string f = Float32Bytes(count, seed);
  std::string bytes(static_cast<size_t>(count) * 2, '\0');
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(&bytes[i * 2], &f[i * 4 + 2], 2);
  return bytes;
}

v1::Tensor MakeTensor(std::vector<int64_t> shape, v1::DType dtype,
                      std::string data) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(dtype);
  t.set_data(std::move(data));
  return t;
}

v1::Tensor Float32Tensor(int64_t n, int64_t d, uint64_t seed) {
  return MakeTensor({n, d}, v1::FLOAT32, Float32Bytes(n * d, seed));
}

v1::ActivationBatch MakeBatch(const std::string& session,
                              const std::string& source,
                              const std::string& batch_id, int64_t step) {
  v1::ActivationBatch b;
  b.set_session_id(session);
  b.set_source(source);
  b.set_batch_id(batch_id);
  b.set_step(step);
  return b;
}

void AddLayer(v1::ActivationBatch* b, const std::string& layer, v1::Tensor t) {
  v1::LayerActivation* l = b->add_layers();
  l->set_layer(layer);
  *l->mutable_activations() = std::move(t);
}

v1::ActivationBatch OneLayer(const std::string& session,
                             const std::string& batch_id, v1::Tensor t,
                             const std::string& layer = "a",
                             const std::string& source = "m") {
  v1::ActivationBatch b = MakeBatch(session, source, batch_id, 1);
  AddLayer(&b, layer, std::move(t));
  return b;
}

v1::Measure MakeMeasure(const std::string& name, v1::Kernel kernel,
                        v1::Estimator estimator, double threshold = 0) {
  v1::Measure m;
  m.set_name(name);
  m.set_kernel(kernel);
  m.set_estimator(estimator);
  m.set_rbf_threshold(threshold);
  return m;
}

// The honest session's activations of layer `layer` in batch `index`: a
// seeded normal matrix plus a component shared by the batch's layers, so that
// CKA values are far from 0.
Activations SteadyActivations(int layer, int index) {
  std::mt19937_64 shared_rng(7777 + index);
  std::mt19937_64 rng(1000003ULL * index + 31ULL * layer + 5);
  std::normal_distribution<double> normal;
  Activations a;
  a.n = kSteadyRows;
  a.d = kSteadyLayers[layer].second;
  a.x.resize(static_cast<size_t>(a.n) * a.d);
  std::vector<double> shared(static_cast<size_t>(a.n) * 8);
  for (double& v : shared) v = normal(shared_rng);
  for (int i = 0; i < a.n; ++i) {
    for (int j = 0; j < a.d; ++j)
      a.x[i * a.d + j] = normal(rng) + 0.7 * shared[i * 8 + j];
  }
  return a;
}

// ---------------------------------------------------------------------------
// ckad as a subprocess.

// A GetSimilarity call whose client never reads the answer, over a raw
// HTTP/2 connection: it sends the preface, acknowledges ckad's settings, sends
// the request and then reads nothing more, so ckad's answer waits in its
// buffers (HTTP/2 lets ckad send the first 64 KiB only) until the socket is
// closed. Ends the connection when destroyed.
class StalledSimilarityCall {
 public:
  StalledSimilarityCall(int port, const v1::GetSimilarityRequest& request) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      return;
    std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    out += Frame(0x4, 0, 0, "");  // our SETTINGS: the defaults
    if (!SendAll(out) || !AckServerSettings()) return;
    // HPACK literal header fields without indexing, new names, no Huffman.
    std::string headers;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{
             {":method", "POST"},
             {":scheme", "http"},
             {":path", "/cka.v1.Similarity/GetSimilarity"},
             {":authority", "127.0.0.1"},
             {"content-type", "application/grpc"},
             {"te", "trailers"}}) {
      headers += '\0';
      headers += static_cast<char>(name.size());
      headers += name;
      headers += static_cast<char>(value.size());
      headers += value;
    }
    const std::string body = request.SerializeAsString();
    std::string message(5, '\0');  // uncompressed, 4-byte big-endian length
    for (int i = 0; i < 4; ++i)
      message[1 + i] = static_cast<char>((body.size() >> (24 - 8 * i)) & 0xff);
    message += body;
    sent_ = SendAll(Frame(0x1, 0x4, 1, headers) +  // HEADERS, END_HEADERS
                    Frame(0x0, 0x1, 1, message));  // DATA, END_STREAM
  }
  ~StalledSimilarityCall() {
    if (fd_ >= 0) ::close(fd_);
  }
  StalledSimilarityCall(const StalledSimilarityCall&) = delete;
  StalledSimilarityCall& operator=(const StalledSimilarityCall&) = delete;

  // Returns true when the request went out.
  bool sent() const { return sent_; }

 private:
  static std::string Frame(uint8_t type, uint8_t flags, uint32_t stream,
                           const std::string& payload) {
    std::string f(9, '\0');
    f[0] = static_cast<char>((payload.size() >> 16) & 0xff);
    f[1] = static_cast<char>((payload.size() >> 8) & 0xff);
    f[2] = static_cast<char>(payload.size() & 0xff);
    f[3] = static_cast<char>(type);
    f[4] = static_cast<char>(flags);
    for (int i = 0; i < 4; ++i)
      f[5 + i] = static_cast<char>((stream >> (24 - 8 * i)) & 0xff);
    return f + payload;
  }
  bool SendAll(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n =
          ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool ReadExactly(char* data, size_t size) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::recv(fd_, data + done, size - done, 0);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads frames until ckad's SETTINGS (not an ACK) and acknowledges it.
  bool AckServerSettings() {
    for (int frames = 0; frames < 16; ++frames) {
      unsigned char header[9];
      if (!ReadExactly(reinterpret_cast<char*>(header), 9)) return false;
      const size_t size = (size_t{header[0]} << 16) | (size_t{header[1]} << 8) |
                          size_t{header[2]};
      std::string payload(size, '\0');
      if (!ReadExactly(payload.data(), size)) return false;
      if (header[3] == 0x4 && (header[4] & 0x1) == 0)
        return SendAll(Frame(0x4, 0x1, 0, ""));
    }
    return false;
  }

  int fd_ = -1;
  bool sent_ = false;
};

class Ckad {
 public:
  // `index` numbers the ckads of one test: each writes its own stderr file.
  Ckad(const std::string& dir, int index)
      : stderr_path_(absl::StrCat(dir, "/ckad.", index, ".stderr")) {}
  ~Ckad() { Kill(); }

  // Starts ckad and waits until it is SERVING; fails the test otherwise.
  void Start() {
    port_ = FreePort();
    std::vector<std::string> argv = {CkadBinary(),
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", port_),
                                     "--threads",
                                     "2",
                                     "--log-level",
                                     "warn",
                                     "--max-streams-per-client",
                                     absl::StrCat(kMaxStreamsPerClient),
                                     "--shutdown-grace-s",
                                     "1"};
    if (CkadHasMemoryLimitFlag()) {
      argv.push_back("--memory-limit-mb");
      argv.push_back(absl::StrCat(kMemoryLimitMb));
    }
    const std::string banner =
        absl::StrCat("---- the test started: ", absl::StrJoin(argv, " "), "\n");
    { std::ofstream(stderr_path_, std::ios::app) << banner; }
    SpawnLimits limits;
    limits.no_core_files = true;
    if (!kAsan) limits.address_space = kAddressSpaceBytes;
    pid_ = SpawnWithLog(argv, stderr_path_, limits);
    ASSERT_GE(pid_, 0);
    exited_ = false;
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(256 << 20);
    channel_args.SetMaxSendMessageSize(16 << 20);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                         grpc::InsecureChannelCredentials(),
                                         channel_args);
    stub_ = v1::Similarity::NewStub(channel_);
    client::ClientOptions options;
    options.server = absl::StrCat("127.0.0.1:", port_);
    absl::StatusOr<std::unique_ptr<client::Client>> c =
        client::Client::Create(options);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);

    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (Exited()) break;
      absl::StatusOr<client::ServingStatus> health =
          client_->Health("", absl::Seconds(2));
      if (health.ok() && *health == client::ServingStatus::kServing) return;
      absl::SleepFor(absl::Milliseconds(20));  // polling its start-up
    }
    FAIL() << "ckad did not start serving: " << DeathReport();
  }

  // Returns true once ckad has exited (reaping it).
  bool Exited() {
    if (exited_) return true;
    if (pid_ <= 0) return true;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      exited_ = true;
      pid_ = -1;
    }
    return exited_;
  }

  // Returns an empty string when ckad runs and answers its health check with
  // SERVING, else what is wrong (with the end of its stderr if it died).
  std::string Problem() {
    if (Exited()) return DeathReport();
    const absl::StatusOr<client::ServingStatus> health =
        client_->Health("", absl::Seconds(10));
    if (!health.ok()) {
      // A dying ckad refuses connections a moment before it can be reaped.
      const absl::Time deadline = absl::Now() + absl::Seconds(5);
      while (absl::Now() < deadline) {
        if (Exited()) return DeathReport();
        absl::SleepFor(absl::Milliseconds(10));  // polling its exit
      }
      return absl::StrCat("ckad runs but its health check failed: ",
                          health.status().ToString());
    }
    if (*health != client::ServingStatus::kServing) {
      return absl::StrCat("ckad runs but is ",
                          client::ServingStatusName(*health));
    }
    return "";
  }

  std::string DeathReport() {
    std::string how = "ckad is running";
    if (exited_) {
      how =
          WIFSIGNALED(status_)
              ? absl::StrCat("ckad died: killed by signal ", WTERMSIG(status_),
                             " (", strsignal(WTERMSIG(status_)), ")")
              : absl::StrCat("ckad died: exited with status ",
                             WEXITSTATUS(status_));
    }
    return absl::StrCat(how, "; the end of its stderr (", stderr_path_, "):\n",
                        StderrTail());
  }

  std::string StderrTail(size_t bytes = 3000) {
    std::ifstream in(stderr_path_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string all = ss.str();
    if (all.size() > bytes) all = all.substr(all.size() - bytes);
    return Shorten(all, bytes, /*keep_newlines=*/true);
  }

  void Kill() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    pid_ = -1;
  }

  v1::Similarity::Stub* stub() { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() { return channel_; }
  int port() const { return port_; }

 private:
  const std::string stderr_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
  std::unique_ptr<client::Client> client_;
};

// One open StreamActivations call.
struct Stream {
  grpc::ClientContext context;
  std::unique_ptr<BatchStream> rw;
  bool writes_done = false;

  // Writes `batch` and returns its ack; nullopt when the stream has ended.
  std::optional<v1::BatchAck> Send(const v1::ActivationBatch& batch) {
    v1::BatchAck ack;
    if (!rw->Write(batch) || !rw->Read(&ack)) return std::nullopt;
    return ack;
  }

  // Sends `batches` keeping at most `window` unacknowledged; returns the acks
  // received (fewer than the batches when the stream ended).
  std::vector<v1::BatchAck> SendAll(
      const std::vector<v1::ActivationBatch>& batches, size_t window = 16) {
    std::vector<v1::BatchAck> acks;
    size_t sent = 0;
    bool writable = true;
    while (acks.size() < batches.size()) {
      if (writable && sent < batches.size() && sent - acks.size() < window) {
        if (rw->Write(batches[sent])) {
          ++sent;
        } else {
          writable = false;
        }
        continue;
      }
      if (acks.size() >= sent) break;  // nothing more can come
      v1::BatchAck ack;
      if (!rw->Read(&ack)) break;
      acks.push_back(std::move(ack));
    }
    return acks;
  }

  // Half-closes, reads what is left and returns the call's status.
  grpc::Status Close() {
    if (!writes_done) rw->WritesDone();
    writes_done = true;
    v1::BatchAck ack;
    while (rw->Read(&ack)) {
    }
    return rw->Finish();
  }
};

// One case's record for the summary.
struct CaseLog {
  std::string name;
  std::vector<std::string> observed;
  std::vector<std::string> failures;
  double seconds = 0;
};

struct HostileCase {
  std::string name;
  std::function<void()> run;
};

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (fs::path(::testing::TempDir()) / "ckad_hostile_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    std::printf(
        "ckad: %s; address space %s; --memory-limit-mb %s; payload seed %llu "
        "(CKA_HOSTILE_SEED)\n",
        CkadBinary().c_str(),
        kAsan ? "not capped (ASan build)" : "capped at 2 GiB",
        CkadHasMemoryLimitFlag() ? "512" : "not offered by this ckad",
        static_cast<unsigned long long>(PayloadSeed()));
    ckad_ = std::make_unique<Ckad>(dir_, restarts_);
    ASSERT_NO_FATAL_FAILURE(ckad_->Start());
    ASSERT_NO_FATAL_FAILURE(CreateBaseSessions());
  }

  void TearDown() override {
    ckad_.reset();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // ---- recording --------------------------------------------------------

  void Note(const std::string& line) {
    if (log_ != nullptr) log_->observed.push_back(line);
  }
  void Fail(const std::string& why) {
    ADD_FAILURE() << why;
    if (log_ != nullptr) log_->failures.push_back(why);
  }

  // Checks one answer against `want`: its code, and a message for a refusal.
  bool Check(const std::string& what, int code, const std::string& message,
             const Want& want) {
    const bool accepted = want.Accepts(code);
    const bool named = code == 0 || !message.empty();
    Note(absl::StrCat(what, " → ", CodeName(code), message.empty() ? "" : " '",
                      Shorten(message), message.empty() ? "" : "'",
                      accepted && named ? "" : "   ✗ wanted ",
                      accepted && named ? "" : want.Describe()));
    if (!accepted) {
      Fail(absl::StrCat(what, ": got ", CodeName(code), " '", Shorten(message),
                        "', wanted ", want.Describe()));
    } else if (!named) {
      Fail(absl::StrCat(what, ": ", CodeName(code), " without a message"));
    }
    return accepted && named;
  }
  bool Check(const std::string& what, const grpc::Status& s, const Want& want) {
    return Check(what, s.error_code(), s.error_message(), want);
  }

  // Checks the acks of `batches`: one per batch, in order, each accepted by
  // `want` (summarised per code).
  void CheckAcks(const std::string& what,
                 const std::vector<v1::ActivationBatch>& batches,
                 const std::vector<v1::BatchAck>& acks, const Want& want) {
    std::map<int, int> per_code;
    std::map<int, std::string> first_message;
    int bad = 0;
    for (size_t i = 0; i < acks.size(); ++i) {
      const v1::BatchAck& ack = acks[i];
      ++per_code[ack.code()];
      first_message.emplace(ack.code(), ack.message());
      if (ack.batch_id() != batches[i].batch_id()) {
        Fail(absl::StrCat(what, ": ack ", i, " is for '",
                          Shorten(ack.batch_id()), "', not '",
                          Shorten(batches[i].batch_id()), "'"));
        break;
      }
      if (!want.Accepts(ack.code()) ||
          (ack.code() != 0 && ack.message().empty())) {
        if (bad++ == 0) {
          Fail(absl::StrCat(what, ": batch '", Shorten(batches[i].batch_id()),
                            "' acked ", CodeName(ack.code()), " '",
                            Shorten(ack.message()), "', wanted ",
                            want.Describe()));
        }
      }
    }
    std::string summary =
        absl::StrCat(what, ": ", acks.size(), " acks of ", batches.size());
    for (const auto& [code, count] : per_code) {
      absl::StrAppend(&summary, "; ", count, " ", CodeName(code));
      if (code != 0)
        absl::StrAppend(&summary, " '", Shorten(first_message[code], 160), "'");
    }
    if (bad > 0) absl::StrAppend(&summary, "   ✗ wanted ", want.Describe());
    Note(summary);
    if (acks.size() < batches.size()) {
      Fail(absl::StrCat(what, ": the stream ended after ", acks.size(), " of ",
                        batches.size(), " acks"));
    }
  }

  // ---- calls ------------------------------------------------------------

  void Prepare(grpc::ClientContext* context,
               absl::Duration timeout = kCallTimeout) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }

  void CheckSize(const std::string& what,
                 const google::protobuf::Message& request) {
    if (request.ByteSizeLong() >= kMaxRequestBytes) {
      Fail(absl::StrCat(what, ": the crafted request has ",
                        request.ByteSizeLong(), " bytes, over 2 MB"));
    }
  }

  grpc::Status Create(const v1::CreateSessionRequest& request) {
    CheckSize("CreateSession", request);
    grpc::ClientContext context;
    Prepare(&context);
    v1::Session session;
    return ckad_->stub()->CreateSession(&context, request, &session);
  }
  grpc::Status Create(const std::string& id, const v1::SessionConfig& config) {
    v1::CreateSessionRequest request;
    request.set_session_id(id);
    *request.mutable_config() = config;
    return Create(request);
  }
  grpc::Status Delete(const std::string& id) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::DeleteSessionRequest request;
    request.set_session_id(id);
    v1::DeleteSessionResponse response;
    return ckad_->stub()->DeleteSession(&context, request, &response);
  }
  grpc::Status GetSession(const std::string& id, v1::Session* session) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::GetSessionRequest request;
    request.set_session_id(id);
    return ckad_->stub()->GetSession(&context, request, session);
  }
  grpc::Status Similarity(const v1::GetSimilarityRequest& request,
                          v1::SimilarityMatrix* matrix) {
    CheckSize("GetSimilarity", request);
    grpc::ClientContext context;
    Prepare(&context);
    return ckad_->stub()->GetSimilarity(&context, request, matrix);
  }

  std::unique_ptr<Stream> OpenStream() {
    auto s = std::make_unique<Stream>();
    Prepare(&s->context, kStreamTimeout);
    s->rw = ckad_->stub()->StreamActivations(&s->context);
    return s;
  }

  // Sends `batches` on one new stream and checks their acks against `want`;
  // then, on the same stream, a batch of the honest session, which must be
  // applied; then closes the stream, which must end OK.
  std::vector<v1::BatchAck> SendBatches(
      const std::string& what, const std::vector<v1::ActivationBatch>& batches,
      const Want& want, size_t window = 16) {
    for (const v1::ActivationBatch& b : batches) CheckSize(what, b);
    std::unique_ptr<Stream> s = OpenStream();
    std::vector<v1::BatchAck> acks = s->SendAll(batches, window);
    if (batches.size() == 1 && acks.size() == 1) {
      Check(what, acks[0].code(), acks[0].message(), want);
      if (acks[0].batch_id() != batches[0].batch_id())
        Fail(absl::StrCat(what, ": the ack is for another batch_id"));
    } else {
      CheckAcks(what, batches, acks, want);
    }
    if (acks.size() == batches.size())
      SendSteady(s.get(), "then a good batch on the same stream");
    const grpc::Status end = s->Close();
    if (!end.ok()) {
      Check(absl::StrCat(what, ": the stream's end"), end, kOk);
    }
    return acks;
  }
  v1::BatchAck SendBatch(const std::string& what,
                         const v1::ActivationBatch& batch, const Want& want) {
    std::vector<v1::BatchAck> acks = SendBatches(what, {batch}, want);
    return acks.empty() ? v1::BatchAck() : acks[0];
  }

  // ---- the honest session -----------------------------------------------

  v1::SessionConfig SteadyConfig() {
    v1::SessionConfig config;
    *config.add_measures() = MakeMeasure("lin", v1::LINEAR, v1::UNBIASED);
    *config.add_measures() = MakeMeasure("biased", v1::LINEAR, v1::BIASED);
    for (const auto& [layer, width] : kSteadyLayers)
      config.add_streams(absl::StrCat("s/", layer));
    return config;
  }

  // Creates the honest session, the session without declared streams most
  // bad batches go to, and the four-stream session the queries read.
  void CreateBaseSessions() {
    const grpc::Status steady = Create(kSteady, SteadyConfig());
    ASSERT_TRUE(steady.ok()) << steady.error_message();
    steady_acked_.clear();
    const grpc::Status plain = Create(kPlain, v1::SessionConfig());
    ASSERT_TRUE(plain.ok()) << plain.error_message();

    v1::SessionConfig four;
    for (const char* s : {"x/a", "x/b", "y/a", "y/b"}) four.add_streams(s);
    const grpc::Status created = Create(kFour, four);
    ASSERT_TRUE(created.ok()) << created.error_message();
    std::vector<v1::ActivationBatch> batches;
    for (int i = 0; i < 2; ++i) {
      for (const char* source : {"x", "y"}) {
        v1::ActivationBatch b =
            MakeBatch(kFour, source, absl::StrCat("four/", i), i);
        AddLayer(&b, "a", Float32Tensor(8, 3, 100 + i * 10 + source[0]));
        AddLayer(&b, "b", Float32Tensor(8, 2, 200 + i * 10 + source[0]));
        batches.push_back(std::move(b));
      }
    }
    std::unique_ptr<Stream> s = OpenStream();
    std::vector<v1::BatchAck> acks = s->SendAll(batches);
    ASSERT_EQ(acks.size(), batches.size());
    for (const v1::BatchAck& ack : acks)
      ASSERT_EQ(ack.code(), 0) << ack.message();
    ASSERT_TRUE(s->Close().ok());
  }

  v1::ActivationBatch SteadyBatch(int index) {
    v1::ActivationBatch b =
        MakeBatch(kSteady, "s", absl::StrCat("steady/", index), index);
    for (int layer = 0; layer < static_cast<int>(kSteadyLayers.size());
         ++layer) {
      const Activations a = SteadyActivations(layer, index);
      AddLayer(&b, kSteadyLayers[layer].first,
               MakeTensor({a.n, a.d}, v1::FLOAT64,
                          std::string(reinterpret_cast<const char*>(a.x.data()),
                                      a.x.size() * sizeof(double))));
    }
    return b;
  }

  // Sends the honest session's next batch on `s` (a new stream when null) and
  // expects it applied.
  void SendSteady(Stream* s = nullptr, const std::string& what = "") {
    std::unique_ptr<Stream> own;
    if (s == nullptr) {
      own = OpenStream();
      s = own.get();
    }
    const int index = steady_next_++;
    const std::string label =
        what.empty() ? absl::StrCat("honest batch ", index) : what;
    std::optional<v1::BatchAck> ack = s->Send(SteadyBatch(index));
    if (!ack.has_value()) {
      Fail(absl::StrCat(label, ": the stream ended: ",
                        own != nullptr ? own->Close().error_message() : ""));
      return;
    }
    if (Check(label, ack->code(), ack->message(), kOk) && !ack->duplicate()) {
      ReferenceBatch batch;
      for (int layer = 0; layer < static_cast<int>(kSteadyLayers.size());
           ++layer) {
        batch[absl::StrCat("s/", kSteadyLayers[layer].first)] =
            SteadyActivations(layer, index);
      }
      steady_acked_.push_back(std::move(batch));
    }
    if (own != nullptr) {
      const grpc::Status end = own->Close();
      if (!end.ok()) Check(absl::StrCat(label, ": stream end"), end, kOk);
    }
  }

  // The honest session's counters are exact and its matrices equal the
  // reference over exactly the acknowledged batches.
  void CheckSteady() {
    const int64_t applied = static_cast<int64_t>(steady_acked_.size());
    v1::Session session;
    const grpc::Status got = GetSession(kSteady, &session);
    ASSERT_TRUE(got.ok()) << got.error_message();
    EXPECT_EQ(session.batches_applied(), applied);
    EXPECT_EQ(session.batches_pending(), 0);
    EXPECT_EQ(session.batches_evicted(), 0);
    EXPECT_EQ(session.pending_bytes(), 0);
    ASSERT_EQ(session.streams_size(), 3);
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(session.streams(i), absl::StrCat("s/", kSteadyLayers[i].first));

    for (const auto& [measure, unbiased] :
         std::vector<std::pair<std::string, bool>>{{"lin", true},
                                                   {"biased", false}}) {
      v1::GetSimilarityRequest request;
      request.set_session_id(kSteady);
      request.set_measure(measure);
      v1::SimilarityMatrix m;
      const grpc::Status status = Similarity(request, &m);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ASSERT_EQ(m.rows_size(), 3);
      ASSERT_EQ(m.cols_size(), 3);
      ASSERT_EQ(m.values_size(), 9);
      ASSERT_EQ(m.batches_size(), 9);
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
          const int k = i * 3 + j;
          EXPECT_EQ(m.batches(k), applied) << m.rows(i) << " × " << m.cols(j);
          const double expected = ReferenceMinibatchCka(
              steady_acked_, m.rows(i), m.cols(j), unbiased);
          // float64 activations and float64 sums on both sides: 1e-6 leaves
          // room for summation order only.
          EXPECT_NEAR(m.values(k), expected, 1e-6)
              << measure << " " << m.rows(i) << " × " << m.cols(j);
        }
      }
    }
  }

  // ---- liveness ----------------------------------------------------------

  // Fails the case when ckad died or does not answer SERVING, and then starts
  // a fresh one (with fresh base sessions) so that later cases still run.
  void EnsureAlive(const std::string& after) {
    const std::string problem = ckad_->Problem();
    if (problem.empty()) return;
    Fail(absl::StrCat("after '", after, "': ", problem));
    ckad_->Kill();
    ++restarts_;
    ckad_ = std::make_unique<Ckad>(dir_, restarts_);
    ASSERT_NO_FATAL_FAILURE(ckad_->Start());
    ASSERT_NO_FATAL_FAILURE(CreateBaseSessions());
    Note("ckad restarted; the honest session starts over");
  }

  // Runs `c` as one case: then ckad must be alive, and the honest session
  // applies its next batch.
  void RunCase(const HostileCase& c) {
    SCOPED_TRACE(c.name);
    logs_.push_back({c.name, {}, {}, 0});
    log_ = &logs_.back();
    const absl::Time start = absl::Now();
    c.run();
    EnsureAlive(c.name);
    SendSteady();
    log_->seconds = absl::ToDoubleSeconds(absl::Now() - start);
    log_ = nullptr;
  }

  void PrintSummary() {
    int failed = 0;
    std::string out = "\n==== hostile cases ====\n";
    for (const CaseLog& l : logs_) {
      if (!l.failures.empty()) ++failed;
      absl::StrAppendFormat(&out, "[%s] %s (%.2f s)\n",
                            l.failures.empty() ? "PASS" : "FAIL", l.name,
                            l.seconds);
      for (const std::string& o : l.observed)
        absl::StrAppend(&out, "    ", o, "\n");
      for (const std::string& f : l.failures)
        absl::StrAppend(&out, "    FAILURE: ", Shorten(f, 4000, true), "\n");
    }
    absl::StrAppendFormat(
        &out, "==== %d of %d cases failed; ckad restarted %d times\n", failed,
        logs_.size(), restarts_);
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
  }

  // ---- the cases -----------------------------------------------------------

  // The first reproduction: rows and cols each name one stream 30,000
  // times on a four-stream session (a 30,000 × 30,000 answer).
  void RepeatedRowsCase() {
    v1::GetSimilarityRequest request;
    request.set_session_id(kFour);
    for (int i = 0; i < kRepeats; ++i) {
      request.add_rows("x/a");
      request.add_cols("x/a");
    }
    v1::SimilarityMatrix m;
    Check("GetSimilarity rows = cols = 30,000 × 'x/a'", Similarity(request, &m),
          kInvalidOrExhausted);
  }

  // The second reproduction: 64 layers of 8192 × 1 bfloat16 in a
  // session without declared streams.
  void SixtyFourLayersCase() {
    v1::SessionConfig config;
    Check("CreateSession h-wide", Create("h-wide", config), kOk);
    v1::ActivationBatch b = MakeBatch("h-wide", "m", "wide/1", 1);
    for (int l = 0; l < 64; ++l) {
      AddLayer(
          &b, absl::StrCat("l", l),
          MakeTensor({8192, 1}, v1::BFLOAT16, Bfloat16Bytes(8192, 500 + l)));
    }
    SendBatch("64 layers of [8192, 1] bfloat16", b, kOkOrExhausted);
  }

  std::vector<HostileCase> Cases() {
    std::vector<HostileCase> cases;
    auto add = [&](std::string name, std::function<void()> run) {
      cases.push_back({std::move(name), std::move(run)});
    };
    auto plain_batch = [this](const std::string& id, v1::Tensor t) {
      return OneLayer(kPlain, id, std::move(t));
    };
    auto gram_batch = [this](const std::string& id, v1::Tensor t) {
      v1::ActivationBatch b = MakeBatch(kPlain, "m", id, 1);
      v1::LayerActivation* l = b.add_layers();
      l->set_layer("g");
      *l->mutable_gram() = std::move(t);
      return b;
    };
    const int64_t k2p31 = int64_t{1} << 31;
    const int64_t k2p32 = int64_t{1} << 32;

    // Huge shapes carried by few bytes.
    add("a [2^31, 2^31] float32 tensor carrying 8 bytes", [=] {
      SendBatch(
          "[2^31, 2^31] with 8 bytes",
          plain_batch("shape/2p31", MakeTensor({k2p31, k2p31}, v1::FLOAT32,
                                               std::string(8, '\1'))),
          kInvalidOrExhausted);
    });
    add("a shape whose product overflows int64: [2^32, 2^32, 2^32]", [=] {
      SendBatch("[2^32, 2^32, 2^32] with 16 bytes",
                plain_batch("shape/overflow",
                            MakeTensor({k2p32, k2p32, k2p32}, v1::FLOAT32,
                                       std::string(16, '\1'))),
                kInvalidOrExhausted);
    });
    add("8 rows whose width product overflows int64: [8, 2^62, 4]", [=] {
      SendBatch("[8, 2^62, 4] with 32 bytes",
                plain_batch("shape/wide-overflow",
                            MakeTensor({8, int64_t{1} << 62, 4}, v1::FLOAT32,
                                       std::string(32, '\1'))),
                kInvalidOrExhausted);
    });
    add("a negative first dimension [-8, 4]", [=] {
      SendBatch("[-8, 4]",
                plain_batch("shape/negative", MakeTensor({-8, 4}, v1::FLOAT32,
                                                         Float32Bytes(32, 2))),
                kInvalid);
    });
    add("a negative width [8, -4]", [=] {
      SendBatch(
          "[8, -4]",
          plain_batch("shape/negative-width",
                      MakeTensor({8, -4}, v1::FLOAT32, Float32Bytes(32, 3))),
          kInvalid);
    });
    add("INT64_MIN dimensions [INT64_MIN, INT64_MIN]", [=] {
      SendBatch("[INT64_MIN, INT64_MIN]",
                plain_batch("shape/min",
                            MakeTensor({kInt64Min, kInt64Min}, v1::FLOAT32,
                                       std::string(8, '\1'))),
                kInvalid);
    });
    add("zero dimensions [0, 0]", [=] {
      SendBatch("[0, 0] with no bytes",
                plain_batch("shape/zero", MakeTensor({0, 0}, v1::FLOAT32, "")),
                kInvalid);
    });
    add("40 dimensions of size 2 (2^40 values) carrying 64 bytes", [=] {
      SendBatch("40 × [2] with 64 bytes",
                plain_batch("shape/forty",
                            MakeTensor(std::vector<int64_t>(40, 2), v1::FLOAT32,
                                       std::string(64, '\1'))),
                kInvalidOrExhausted);
    });
    add("40 dimensions [8, 1, ..., 1] carrying exactly their 32 bytes", [=] {
      std::vector<int64_t> shape(40, 1);
      shape[0] = 8;
      SendBatch("[8, 1 × 39] with 32 bytes",
                plain_batch("shape/forty-ones",
                            MakeTensor(shape, v1::FLOAT32, Float32Bytes(8, 4))),
                Want::Answered());
    });
    add("8,192 rows of width 2^40 carrying 16 bytes", [=] {
      SendBatch("[8192, 2^40] with 16 bytes",
                plain_batch("shape/huge-width",
                            MakeTensor({8192, int64_t{1} << 40}, v1::FLOAT32,
                                       std::string(16, '\1'))),
                kInvalidOrExhausted);
    });
    add("a dtype outside the enum (42)", [=] {
      SendBatch(
          "dtype 42",
          plain_batch("dtype/42", MakeTensor({8, 4}, static_cast<v1::DType>(42),
                                             Float32Bytes(32, 5))),
          kInvalid);
    });
    add("a negative dtype (-7)", [=] {
      SendBatch(
          "dtype -7",
          plain_batch("dtype/-7", MakeTensor({8, 4}, static_cast<v1::DType>(-7),
                                             Float32Bytes(32, 6))),
          kInvalid);
    });
    add("an n × n Gram with n = 8192 carrying 1 MB", [=] {
      SendBatch(
          "gram [8192, 8192] with 1 MB",
          gram_batch("gram/truncated", MakeTensor({8192, 8192}, v1::FLOAT32,
                                                  Float32Bytes(kOneMb / 4, 7))),
          kInvalidOrExhausted);
    });
    add("a Gram of shape [2^31, 2^31] carrying 16 bytes", [=] {
      SendBatch("gram [2^31, 2^31] with 16 bytes",
                gram_batch("gram/2p31", MakeTensor({k2p31, k2p31}, v1::FLOAT64,
                                                   std::string(16, '\1'))),
                kInvalidOrExhausted);
    });

    // Many layers, streams, buckets, sessions, batch ids.
    add("64 layers of [8192, 1] bfloat16 in a session without declared "
        "streams",
        [this] { SixtyFourLayersCase(); });
    add("n = 8192 with linear, biased and two RBF measures", [this] {
      v1::SessionConfig config;
      *config.add_measures() = MakeMeasure("lin", v1::LINEAR, v1::UNBIASED);
      *config.add_measures() = MakeMeasure("biased", v1::LINEAR, v1::BIASED);
      *config.add_measures() = MakeMeasure("rbf", v1::RBF, v1::BIASED, 0.5);
      *config.add_measures() = MakeMeasure("rbfu", v1::RBF, v1::UNBIASED, 1.0);
      Check("CreateSession h-rbf", Create("h-rbf", config), kOk);
      v1::ActivationBatch b = MakeBatch("h-rbf", "m", "rbf/1", 1);
      AddLayer(&b, "a", Float32Tensor(8192, 2, 8));
      AddLayer(&b, "b", Float32Tensor(8192, 2, 9));
      SendBatch("two layers of [8192, 2] float32", b, kOkOrExhausted);
      v1::GetSimilarityRequest request;
      request.set_session_id("h-rbf");
      request.set_measure("rbf");
      v1::SimilarityMatrix m;
      Check("GetSimilarity rbf", Similarity(request, &m), kOk);
    });
    add("2,000 layers of [4, 1] in one batch of a session without declared "
        "streams",
        [this] {
          Check("CreateSession h-streams",
                Create("h-streams", v1::SessionConfig()), kOk);
          v1::ActivationBatch b = MakeBatch("h-streams", "m", "streams/1", 1);
          for (int l = 0; l < 2000; ++l)
            AddLayer(&b, absl::StrCat("l", l), Float32Tensor(4, 1, 10 + l));
          SendBatch("2,000 layers (over --max-streams-per-session 1024)", b,
                    kExhausted);
        });
    add("200 new step buckets of a session with 1,024 declared streams",
        [this] {
          v1::SessionConfig config;
          for (int s = 0; s < 1024; ++s)
            config.add_streams(absl::StrFormat("s/l%04d", s));
          config.set_step_bucket(1);
          if (!Check("CreateSession h-buckets (1,024 streams, step_bucket 1)",
                     Create("h-buckets", config), kOkOrExhausted)) {
            return;
          }
          std::vector<v1::ActivationBatch> batches;
          for (int step = 0; step < 200; ++step) {
            v1::ActivationBatch b = MakeBatch(
                "h-buckets", "s", absl::StrCat("bucket/", step), step);
            AddLayer(&b, "l0000", Float32Tensor(4, 1, 3000 + step));
            AddLayer(&b, "l0001", Float32Tensor(4, 1, 4000 + step));
            batches.push_back(std::move(b));
          }
          SendBatches("200 batches, each in a new bucket", batches,
                      kOkOrExhausted);
          v1::GetSimilarityRequest request;
          request.set_session_id("h-buckets");
          v1::SimilarityMatrix m;
          Check("GetSimilarity of all 1,024 × 1,024 over every bucket",
                Similarity(request, &m), kOkOrExhausted);
          Check("DeleteSession h-buckets", Delete("h-buckets"), kOk);
        });
    add("sessions created until refused", [this] {
      int created = 0;
      grpc::Status refusal;
      for (int i = 0; i < 1100; ++i) {
        v1::SessionConfig config;
        config.add_streams("p/a");
        const grpc::Status s =
            Create(absl::StrFormat("h-many-%04d", i), config);
        if (!s.ok()) {
          refusal = s;
          break;
        }
        ++created;
      }
      Note(absl::StrCat(created, " sessions created"));
      Check("the first refused CreateSession", refusal, kExhausted);
      int deleted = 0;
      for (int i = 0; i < created; ++i)
        deleted += Delete(absl::StrFormat("h-many-%04d", i)).ok();
      if (deleted != created)
        Fail(absl::StrCat(deleted, " of ", created, " sessions deleted"));
    });
    add("5,000 distinct 200-byte batch ids waiting for a stream that never "
        "sends",
        [this] {
          v1::SessionConfig config;
          config.add_streams("p/a");
          config.add_streams("q/a");
          Check("CreateSession h-pending", Create("h-pending", config), kOk);
          std::vector<v1::ActivationBatch> batches;
          for (int i = 0; i < 5000; ++i) {
            std::string id = absl::StrCat("pending/", i, "/");
            id.resize(200, 'p');
            v1::ActivationBatch b = MakeBatch("h-pending", "p", id, i);
            AddLayer(&b, "a", Float32Tensor(4, 1, 6000 + i));
            batches.push_back(std::move(b));
          }
          SendBatches("5,000 pending batches", batches, kOkOrExhausted, 64);
          v1::Session session;
          if (Check("GetSession h-pending", GetSession("h-pending", &session),
                    kOk)) {
            Note(absl::StrCat("pending ", session.batches_pending(),
                              ", evicted ", session.batches_evicted(),
                              ", pending_bytes ", session.pending_bytes()));
          }
        });
    add("5,000 applied batches of distinct 200-byte batch ids", [this] {
      Check("CreateSession h-applied", Create("h-applied", v1::SessionConfig()),
            kOk);
      std::vector<v1::ActivationBatch> batches;
      for (int i = 0; i < 5000; ++i) {
        std::string id = absl::StrCat("applied/", i, "/");
        id.resize(200, 'a');
        v1::ActivationBatch b = MakeBatch("h-applied", "p", id, i);
        AddLayer(&b, "a", Float32Tensor(4, 1, 12000 + i));
        batches.push_back(std::move(b));
      }
      SendBatches("5,000 applied batches", batches, kOkOrExhausted, 64);
    });

    // Long and odd names.
    add("CreateSession with a 1 MB session id", [this] {
      Check("CreateSession id of 1 MB",
            Create(std::string(kOneMb, 's'), v1::SessionConfig()), kInvalid);
    });
    add("a batch with a 1 MB session id", [this] {
      SendBatch(
          "session_id of 1 MB",
          OneLayer(std::string(kOneMb, 's'), "long/session",
                   Float32Tensor(8, 4, 20)),
          Want::Is({StatusCode::INVALID_ARGUMENT, StatusCode::NOT_FOUND}));
    });
    add("a batch with a 1 MB layer name", [this] {
      SendBatch("layer of 1 MB",
                OneLayer(kPlain, "long/layer", Float32Tensor(8, 4, 21),
                         std::string(kOneMb, 'l')),
                kInvalid);
    });
    add("a batch with a 1 MB source", [this] {
      SendBatch("source of 1 MB",
                OneLayer(kPlain, "long/source", Float32Tensor(8, 4, 22), "a",
                         std::string(kOneMb, 'm')),
                kInvalid);
    });
    add("a batch with a 1 MB batch_id", [this] {
      SendBatch(
          "batch_id of 1 MB",
          OneLayer(kPlain, std::string(kOneMb, 'b'), Float32Tensor(8, 4, 23)),
          kInvalid);
    });
    add("GetSimilarity with a 512 KB session id and a 512 KB measure", [this] {
      v1::GetSimilarityRequest request;
      request.set_session_id(std::string(kOneMb / 2, 's'));
      request.set_measure(std::string(kOneMb / 2, 'm'));
      v1::SimilarityMatrix m;
      Check("GetSimilarity with 512 KB names", Similarity(request, &m),
            Want::Is({StatusCode::INVALID_ARGUMENT, StatusCode::NOT_FOUND}));
    });
    add("NUL bytes in a layer name and in a session id", [this] {
      SendBatch("layer 'a\\0b'",
                OneLayer(kPlain, "nul/layer", Float32Tensor(8, 4, 24),
                         std::string("a\0b", 3)),
                kInvalid);
      Check("CreateSession id 'h\\0nul'",
            Create(std::string("h\0nul", 5), v1::SessionConfig()), kInvalid);
    });
    add("invalid UTF-8 in the source and in a layer name of a batch", [this] {
      // Proto3 strings are UTF-8, so the message is not a
      // cka.v1.ActivationBatch: ckad reads it as bytes and refuses it in its
      // own ack, naming the field; the stream goes on.
      std::unique_ptr<Stream> s = OpenStream();
      struct Case {
        std::string what, layer, source, field;
      };
      for (const Case& c : std::vector<Case>{
               {"source '\\xff\\xfe\\xc3'", "a", "\xff\xfe\xc3", "'source'"},
               {"layer 'ok\\xc3'", "ok\xc3", "m", "'layers[0].layer'"}}) {
        std::optional<v1::BatchAck> ack = s->Send(OneLayer(
            kPlain, "utf8/bad", Float32Tensor(8, 4, 25), c.layer, c.source));
        if (!ack.has_value()) {
          Fail(absl::StrCat(c.what, ": no ack; the stream ended with '",
                            s->Close().error_message(), "'"));
          return;
        }
        Check(c.what, ack->code(), ack->message(), kInvalid);
        if (!absl::StrContains(ack->message(), c.field) ||
            ack->batch_id() != "utf8/bad") {
          Fail(absl::StrCat(c.what, ": the ack (batch '", ack->batch_id(),
                            "') does not name field ", c.field, ": ",
                            Shorten(ack->message())));
        }
      }
      SendSteady(s.get(), "then a good batch on the same stream");
      Check("the stream's end", s->Close(), kOk);
    });
    add("invalid UTF-8 in a GetSimilarity session id", [this] {
      v1::GetSimilarityRequest request;
      request.set_session_id("h-\xff\xfe");
      v1::SimilarityMatrix m;
      // gRPC C++ answers a request it cannot parse with UNIMPLEMENTED and no
      // message before ckad sees it (README, Limits).
      const grpc::Status s = Similarity(request, &m);
      Check(
          "GetSimilarity session '\\xff\\xfe'", s.error_code(),
          s.error_message().empty() ? "(gRPC: the request cannot be parsed)"
                                    : s.error_message(),
          Want::Is({StatusCode::UNIMPLEMENTED, StatusCode::INVALID_ARGUMENT}));
    });
    add("names with '/', '..' and an empty source", [this] {
      SendBatch(
          "source 'a/b'",
          OneLayer(kPlain, "odd/slash", Float32Tensor(8, 4, 26), "a", "a/b"),
          kInvalid);
      SendBatch(
          "source '..', layer '..'",
          OneLayer(kPlain, "odd/dots", Float32Tensor(8, 4, 27), "..", ".."),
          Want::Answered());
      SendBatch(
          "layer '/'",
          OneLayer(kPlain, "odd/layer-slash", Float32Tensor(8, 4, 28), "/"),
          Want::Answered());
      SendBatch("empty source, layer 'x'",
                OneLayer(kPlain, "odd/empty-source", Float32Tensor(8, 4, 29),
                         "x", ""),
                Want::Answered());
      SendBatch(
          "empty layer",
          OneLayer(kPlain, "odd/empty-layer", Float32Tensor(8, 4, 30), ""),
          kInvalid);
      Check("CreateSession id '../../etc/passwd'",
            Create("../../etc/passwd", v1::SessionConfig()), Want::Answered());
      Check("CreateSession with an empty id", Create("", v1::SessionConfig()),
            kInvalid);
    });

    // Queries.
    add("GetSimilarity with rows and cols each naming one stream 30,000 times",
        [this] { RepeatedRowsCase(); });
    add("GetSimilarity with 30,000 distinct unknown names in rows and cols",
        [this] {
          v1::GetSimilarityRequest request;
          request.set_session_id(kFour);
          for (int i = 0; i < kRepeats; ++i) {
            request.add_rows(absl::StrFormat("u/%05d", i));
            request.add_cols(absl::StrFormat("v/%05d", i));
          }
          v1::SimilarityMatrix m;
          Check("GetSimilarity 30,000 unknown rows and cols",
                Similarity(request, &m), kNotFound);
        });
    add("GetSimilarity with 30,000 repeated rows and one column", [this] {
      v1::GetSimilarityRequest request;
      request.set_session_id(kFour);
      for (int i = 0; i < kRepeats; ++i) request.add_rows("y/b");
      request.add_cols("x/a");
      v1::SimilarityMatrix m;
      Check("GetSimilarity 30,000 × 'y/b' rows, 1 col", Similarity(request, &m),
            Want::Answered());
    });
    add("WatchSimilarity with min_interval_ms 0 and 30,000 repeated rows",
        [this] {
          v1::WatchSimilarityRequest request;
          request.mutable_query()->set_session_id(kFour);
          for (int i = 0; i < kRepeats; ++i) {
            request.mutable_query()->add_rows("x/b");
            request.mutable_query()->add_cols("y/a");
          }
          request.set_min_interval_ms(0);
          CheckSize("WatchSimilarity", request);
          grpc::ClientContext context;
          Prepare(&context);
          std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> reader =
              ckad_->stub()->WatchSimilarity(&context, request);
          v1::SimilarityMatrix m;
          int matrices = 0;
          while (matrices < 2 && reader->Read(&m)) ++matrices;
          if (matrices > 0) context.TryCancel();
          Note(absl::StrCat(matrices, " matrices before the end"));
          const grpc::Status end = reader->Finish();
          if (matrices == 0) {
            Check("WatchSimilarity 30,000 × 30,000", end, kInvalidOrExhausted);
          } else {
            Fail("a 30,000 × 30,000 watch was answered with a matrix");
          }
        });
    add("WatchSimilarity with min_interval_ms INT32_MIN while batches arrive",
        [this] {
          v1::WatchSimilarityRequest request;
          request.mutable_query()->set_session_id(kFour);
          request.set_min_interval_ms(std::numeric_limits<int32_t>::min());
          grpc::ClientContext context;
          Prepare(&context, absl::Seconds(20));
          std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> reader =
              ckad_->stub()->WatchSimilarity(&context, request);
          v1::SimilarityMatrix m;
          int matrices = reader->Read(&m) ? 1 : 0;
          if (matrices == 1) {
            std::vector<v1::ActivationBatch> batches;
            for (const char* source : {"x", "y"}) {
              v1::ActivationBatch b = MakeBatch(kFour, source, "four/watch", 5);
              AddLayer(&b, "a", Float32Tensor(8, 3, 300 + source[0]));
              AddLayer(&b, "b", Float32Tensor(8, 2, 400 + source[0]));
              batches.push_back(std::move(b));
            }
            SendBatches("a batch of both sources while watching", batches, kOk);
            if (reader->Read(&m)) ++matrices;
          }
          Note(absl::StrCat(matrices, " matrices"));
          if (matrices < 2) Fail("the watch did not send the changed matrix");
          context.TryCancel();
          const grpc::Status end = reader->Finish();
          if (matrices == 0) Check("WatchSimilarity", end, kOk);
        });
    add("128 concurrent GetSimilarity calls", [this] {
      constexpr int kCalls = 128;
      struct Call {
        grpc::ClientContext context;
        v1::GetSimilarityRequest request;
        v1::SimilarityMatrix matrix;
        grpc::Status status;
      };
      std::vector<std::unique_ptr<Call>> calls;
      absl::BlockingCounter done(kCalls);
      for (int i = 0; i < kCalls; ++i) {
        auto c = std::make_unique<Call>();
        Prepare(&c->context);
        c->request.set_session_id(i % 2 == 0 ? kFour : kSteady);
        calls.push_back(std::move(c));
      }
      for (auto& c : calls) {
        Call* call = c.get();
        ckad_->stub()->async()->GetSimilarity(&call->context, &call->request,
                                              &call->matrix,
                                              [call, &done](grpc::Status s) {
                                                call->status = std::move(s);
                                                done.DecrementCount();
                                              });
      }
      done.Wait();
      std::map<int, int> per_code;
      for (auto& c : calls) {
        ++per_code[c->status.error_code()];
        if (!c->status.ok() && per_code[c->status.error_code()] == 1)
          Check("a concurrent GetSimilarity", c->status, kOk);
      }
      std::string summary = absl::StrCat(kCalls, " calls:");
      for (const auto& [code, count] : per_code)
        absl::StrAppend(&summary, " ", count, " ", CodeName(code));
      Note(summary);
    });
    add("40 concurrent streams from one client (--max-streams-per-client 16)",
        [this] {
          std::vector<std::unique_ptr<Stream>> streams;
          int accepted = 0, refused = 0;
          for (int i = 0; i < 40; ++i) {
            streams.push_back(OpenStream());
            std::optional<v1::BatchAck> ack = streams.back()->Send(
                OneLayer("no-such-session", absl::StrCat("probe/", i),
                         Float32Tensor(8, 2, 40 + i)));
            if (ack.has_value()) {
              ++accepted;
              if (ack->code() != static_cast<int>(StatusCode::NOT_FOUND))
                Check("a probe batch to an unknown session", ack->code(),
                      ack->message(), kNotFound);
            } else {
              ++refused;
              const grpc::Status end = streams.back()->Close();
              if (refused == 1)
                Check("the first refused stream", end, kExhausted);
              else if (end.error_code() != StatusCode::RESOURCE_EXHAUSTED)
                Check("a refused stream", end, kExhausted);
              streams.pop_back();
            }
          }
          Note(absl::StrCat(accepted, " streams accepted, ", refused,
                            " refused"));
          if (refused == 0) Fail("no stream was refused");
          if (accepted == 0) Fail("no stream was accepted");
          // Each accepted stream still works, then closes cleanly.
          for (auto& s : streams) {
            std::optional<v1::BatchAck> ack = s->Send(OneLayer(
                "no-such-session", "probe/again", Float32Tensor(8, 2, 99)));
            if (!ack.has_value()) {
              Fail("an accepted stream ended");
              break;
            }
          }
          for (auto& s : streams) {
            const grpc::Status end = s->Close();
            if (!end.ok()) Check("an accepted stream's end", end, kOk);
          }
          streams.clear();
          // The places are given back once ckad sees the calls end.
          const absl::Time deadline = absl::Now() + absl::Seconds(10);
          bool reopened = false;
          while (!reopened && absl::Now() < deadline) {
            std::unique_ptr<Stream> s = OpenStream();
            if (s->Send(OneLayer("no-such-session", "probe/reopen",
                                 Float32Tensor(8, 2, 98)))
                    .has_value()) {
              reopened = true;
              s->Close();
            } else {
              s->Close();
              absl::SleepFor(absl::Milliseconds(10));  // polling the release
            }
          }
          if (!reopened) Fail("no stream could be opened after closing them");
        });
    add("a stream that sends a batch, half-closes and is cancelled unread",
        [this] {
          std::unique_ptr<Stream> s = OpenStream();
          s->rw->Write(OneLayer(kPlain, "abrupt/1", Float32Tensor(8, 4, 50)));
          s->rw->WritesDone();
          s->context.TryCancel();
          const grpc::Status end = s->rw->Finish();
          Note(absl::StrCat("the cancelled call ended ",
                            CodeName(end.error_code())));
        });
    add("a stream cancelled with 20 pipelined batches unacknowledged", [this] {
      std::unique_ptr<Stream> s = OpenStream();
      for (int i = 0; i < 20; ++i) {
        if (!s->rw->Write(OneLayer(kPlain, absl::StrCat("abrupt/pipe/", i),
                                   Float32Tensor(8, 4, 60 + i))))
          break;
      }
      s->context.TryCancel();
      const grpc::Status end = s->rw->Finish();
      Note(absl::StrCat("the cancelled call ended ",
                        CodeName(end.error_code())));
    });

    // Session configurations.
    add("CreateSession with 100,000 measures", [this] {
      v1::SessionConfig config;
      for (int i = 0; i < 100000; ++i) {
        *config.add_measures() =
            MakeMeasure(absl::StrFormat("m%05d", i), v1::LINEAR, v1::UNBIASED);
      }
      if (Check("CreateSession h-measures with 100,000 measures",
                Create("h-measures", config), Want::Answered())) {
        v1::Session session;
        if (GetSession("h-measures", &session).ok()) {
          SendBatch(
              "a [8, 4] batch to 100,000 measures",
              OneLayer("h-measures", "measures/1", Float32Tensor(8, 4, 70)),
              kOkOrExhausted);
        }
      }
    });
    add("CreateSession with 100,000 declared streams", [this] {
      v1::SessionConfig config;
      for (int i = 0; i < 100000; ++i)
        config.add_streams(absl::StrFormat("s/%05d", i));
      Check("CreateSession with 100,000 streams", Create("h-100k", config),
            kInvalidOrExhausted);
    });
    add("an RBF measure with a NaN threshold", [this] {
      v1::SessionConfig config;
      *config.add_measures() = MakeMeasure(
          "rbf", v1::RBF, v1::BIASED, std::numeric_limits<double>::quiet_NaN());
      Check("CreateSession rbf_threshold NaN", Create("h-nan", config),
            kInvalid);
    });
    add("an RBF measure with an infinite threshold", [this] {
      v1::SessionConfig config;
      *config.add_measures() = MakeMeasure(
          "rbf", v1::RBF, v1::BIASED, std::numeric_limits<double>::infinity());
      Check("CreateSession rbf_threshold inf", Create("h-inf", config),
            kInvalid);
    });
    add("RBF measures with thresholds 1e308 and 5e-324, then a batch", [this] {
      v1::SessionConfig config;
      *config.add_measures() = MakeMeasure("huge", v1::RBF, v1::BIASED, 1e308);
      *config.add_measures() =
          MakeMeasure("tiny", v1::RBF, v1::UNBIASED, 5e-324);
      if (Check("CreateSession rbf_threshold 1e308 and 5e-324",
                Create("h-thresholds", config), Want::Answered())) {
        v1::Session session;
        if (GetSession("h-thresholds", &session).ok()) {
          v1::ActivationBatch b =
              MakeBatch("h-thresholds", "m", "thresholds/1", 1);
          AddLayer(&b, "a", Float32Tensor(8, 4, 80));
          AddLayer(&b, "b", Float32Tensor(8, 3, 81));
          SendBatch("a batch under both thresholds", b, Want::Answered());
          for (const char* measure : {"huge", "tiny"}) {
            v1::GetSimilarityRequest request;
            request.set_session_id("h-thresholds");
            request.set_measure(measure);
            v1::SimilarityMatrix m;
            Check(absl::StrCat("GetSimilarity ", measure),
                  Similarity(request, &m), kOk);
          }
        }
      }
    });
    add("exact measures with declared widths [2^31, 2^31]: (Σd)² overflows",
        [=] {
          v1::SessionConfig config;
          *config.add_measures() = MakeMeasure("ex", v1::LINEAR, v1::EXACT);
          config.add_streams("e/a");
          config.add_streams("e/b");
          config.add_stream_widths(k2p31);
          config.add_stream_widths(k2p31);
          Check("CreateSession widths [2^31, 2^31]",
                Create("h-ex-2p31", config), kInvalidOrExhausted);
        });
    add("exact measures with declared widths [INT64_MAX, INT64_MAX]: Σd "
        "overflows",
        [this] {
          v1::SessionConfig config;
          *config.add_measures() =
              MakeMeasure("ex", v1::LINEAR, v1::EXACT_DEBIASED);
          config.add_streams("e/a");
          config.add_streams("e/b");
          config.add_stream_widths(kInt64Max);
          config.add_stream_widths(kInt64Max);
          Check("CreateSession widths [INT64_MAX, INT64_MAX]",
                Create("h-ex-max", config), kInvalidOrExhausted);
        });
    add("three exact sessions of declared widths [5000, 5000] (800 MB of sums "
        "each)",
        [this] {
          for (int i = 0; i < 3; ++i) {
            const std::string id = absl::StrCat("h-exact-", i);
            v1::SessionConfig config;
            *config.add_measures() = MakeMeasure("ex", v1::LINEAR, v1::EXACT);
            config.add_streams("e/a");
            config.add_streams("e/b");
            config.add_stream_widths(5000);
            config.add_stream_widths(5000);
            if (!Check(absl::StrCat("CreateSession ", id), Create(id, config),
                       kOkOrExhausted)) {
              continue;
            }
            v1::Session session;
            if (!GetSession(id, &session).ok()) continue;
            v1::ActivationBatch b = MakeBatch(id, "e", "exact/1", 1);
            AddLayer(&b, "a", Float32Tensor(4, 5000, 90 + i));
            AddLayer(&b, "b", Float32Tensor(4, 5000, 95 + i));
            SendBatch(absl::StrCat("a [4, 5000] × 2 batch to ", id), b,
                      kOkOrExhausted);
          }
          for (int i = 0; i < 3; ++i) Delete(absl::StrCat("h-exact-", i));
        });
    add("batches at steps INT64_MIN and INT64_MAX with step buckets 1 and "
        "INT64_MAX",
        [this] {
          for (const auto& [id, bucket] :
               std::vector<std::pair<std::string, int64_t>>{
                   {"h-steps-1", 1}, {"h-steps-max", kInt64Max}}) {
            v1::SessionConfig config;
            config.set_step_bucket(bucket);
            Check(absl::StrCat("CreateSession ", id), Create(id, config), kOk);
            std::vector<v1::ActivationBatch> batches;
            for (int64_t step : {kInt64Min, kInt64Max, int64_t{-1}}) {
              v1::ActivationBatch b =
                  MakeBatch(id, "m", absl::StrCat("step/", step), step);
              AddLayer(&b, "a", Float32Tensor(8, 3, 110 + (step & 7)));
              batches.push_back(std::move(b));
            }
            SendBatches(
                absl::StrCat("steps INT64_MIN, INT64_MAX, -1 into ", id),
                batches, Want::Answered());
          }
        });
    add("a query over the whole int64 step range of a step-bucket-1 session",
        [this] {
          for (const auto& [min, max] :
               std::vector<std::pair<int64_t, int64_t>>{
                   {kInt64Min, kInt64Max},
                   {kInt64Max, kInt64Max},
                   {kInt64Min, kInt64Min}}) {
            v1::GetSimilarityRequest request;
            request.set_session_id("h-steps-1");
            request.set_step_min(min);
            request.set_step_max(max);
            v1::SimilarityMatrix m;
            // With buckets of one step every step starts and ends a bucket.
            Check(absl::StrCat("GetSimilarity steps [", min, ", ", max, "]"),
                  Similarity(request, &m), kOk);
          }
          v1::GetSimilarityRequest request;
          request.set_session_id("h-steps-max");
          request.set_step_min(kInt64Min);
          request.set_step_max(kInt64Max);
          v1::SimilarityMatrix m;
          Check("GetSimilarity of step bucket INT64_MAX over all steps",
                Similarity(request, &m), Want::Answered());
        });
    return cases;
  }

  std::string dir_;
  std::unique_ptr<Ckad> ckad_;
  int steady_next_ = 0;
  std::vector<ReferenceBatch> steady_acked_;
  std::vector<CaseLog> logs_;
  CaseLog* log_ = nullptr;
  int restarts_ = 0;
};

TEST_F(HostileTest, NoRequestTakesCkadDownAndAnHonestSessionStaysExact) {
  const absl::Time start = absl::Now();
  const std::vector<HostileCase> cases = Cases();
  ASSERT_GE(cases.size(), 30u);
  for (int i = 0; i < 3; ++i) SendSteady();
  for (const HostileCase& c : cases) {
    RunCase(c);
    if (HasFatalFailure()) break;
  }
  for (int i = 0; i < 3; ++i) SendSteady();
  PrintSummary();
  if (ckad_->Problem().empty()) {
    CheckSteady();
  } else {
    ADD_FAILURE() << ckad_->Problem();
  }
  std::printf("%zu cases, %d honest batches applied, %.1f s\n", cases.size(),
              static_cast<int>(steady_acked_.size()),
              absl::ToDoubleSeconds(absl::Now() - start));
}

// The reproductions, each against a fresh ckad.
TEST_F(HostileTest,
       GetSimilarityWithThirtyThousandRepeatedRowsDoesNotKillCkad) {
  RunCase(
      {"GetSimilarity with rows and cols each naming one stream 30,000 "
       "times",
       [this] { RepeatedRowsCase(); }});
  PrintSummary();
  EXPECT_EQ(ckad_->Problem(), "");
  CheckSteady();
}

TEST_F(HostileTest, SixtyFourLayersOfNEquals8192DoNotKillCkad) {
  RunCase(
      {"64 layers of [8192, 1] bfloat16 in a session without declared "
       "streams",
       [this] { SixtyFourLayersCase(); }});
  PrintSummary();
  EXPECT_EQ(ckad_->Problem(), "");
  CheckSteady();
}

// Answers a client never reads stay in ckad's memory until the call ends: they
// must be priced in the memory budget (--memory-limit-mb 512) for as long as
// they are held. 48 stalled calls for a 1000 × 1000 matrix (tens of MB each
// as a message and its serialised bytes) hold more than the budget; priced,
// the calls past it are refused with RESOURCE_EXHAUSTED, an honest call is
// refused the same way while they hold the budget, and answered again once
// their connections close. (A ckad that did not price them answered every
// call and never refused: this test then fails at its deadline.)
TEST_F(HostileTest, StalledReadersOfLargeAnswersAreHeldInTheMemoryBudget) {
  if (!CkadHasMemoryLimitFlag()) GTEST_SKIP() << "ckad has no memory budget";
  constexpr int kLayers = 1000, kStalled = 48;
  v1::SessionConfig config;
  ASSERT_TRUE(Create("h-wide-answer", config).ok());
  v1::ActivationBatch batch = MakeBatch("h-wide-answer", "w", "wide/1", 1);
  for (int l = 0; l < kLayers; ++l)
    AddLayer(&batch, absl::StrFormat("l%04d", l), Float32Tensor(4, 1, 700 + l));
  SendBatch("a batch of 1000 layers of [4, 1]", batch, kOk);
  v1::GetSimilarityRequest request;
  request.set_session_id("h-wide-answer");
  v1::SimilarityMatrix whole;
  ASSERT_TRUE(Similarity(request, &whole).ok());
  ASSERT_EQ(whole.values_size(), kLayers * kLayers);

  std::vector<std::unique_ptr<StalledSimilarityCall>> stalled;
  for (int i = 0; i < kStalled; ++i) {
    stalled.push_back(
        std::make_unique<StalledSimilarityCall>(ckad_->port(), request));
    ASSERT_TRUE(stalled.back()->sent()) << "stalled call " << i;
  }
  // Until the stalled answers fill the budget, an honest call may still be
  // answered; once they hold it, it is refused, naming the budget.
  grpc::Status refused;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < deadline) {
    ASSERT_EQ(ckad_->Problem(), "");
    v1::SimilarityMatrix m;
    refused = Similarity(request, &m);
    if (!refused.ok()) break;
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "--memory-limit-mb"))
      << refused.error_message();
  EXPECT_EQ(ckad_->Problem(), "");

  stalled.clear();  // the connections close; ckad drops their answers
  grpc::Status answered;
  while (absl::Now() < deadline) {
    v1::SimilarityMatrix m;
    answered = Similarity(request, &m);
    if (answered.ok()) {
      EXPECT_EQ(m.values_size(), kLayers * kLayers);
      break;
    }
  }
  EXPECT_TRUE(answered.ok()) << answered.error_message();
  EXPECT_EQ(ckad_->Problem(), "");
  CheckSteady();
}

}  // namespace
}  // namespace cka::testing
