// Malformed requests over the real gRPC stream of an in-process ckad: each is
// refused with its code and a message naming the problem, the stream goes on
// (a good batch after each bad one is applied), and the sessions' answers are
// bit-identical before and after the bad request.
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cka/server/server.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "test_util.h"

namespace cka::testing {
namespace {

constexpr int kMaxMessageMb = 1;
constexpr int kRows = 8;
// Widths of the streams; the exact session needs them fixed.
constexpr int kWidthA = 4;
constexpr int kWidthB = 3;

std::string Float64Bytes(const std::vector<double>& values) {
  std::string bytes(values.size() * sizeof(double), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<double> RandomValues(int count, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> v(count);
  for (double& x : v) x = normal(rng);
  return v;
}

v1::Tensor ActivationTensor(int n, int d, unsigned seed) {
  v1::Tensor t;
  t.add_shape(n);
  t.add_shape(d);
  t.set_dtype(v1::FLOAT64);
  t.set_data(Float64Bytes(RandomValues(n * d, seed)));
  return t;
}

// A symmetric positive semi-definite n × n Gram X·Xᵀ.
v1::Tensor Gram(int n, unsigned seed) {
  const std::vector<double> x = RandomValues(n * 3, seed);
  std::vector<double> k(n * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int c = 0; c < 3; ++c) s += x[i * 3 + c] * x[j * 3 + c];
      k[i * n + j] = s;
    }
  }
  v1::Tensor t;
  t.add_shape(n);
  t.add_shape(n);
  t.set_dtype(v1::FLOAT64);
  t.set_data(Float64Bytes(k));
  return t;
}

v1::ActivationBatch Batch(const std::string& session, const std::string& source,
                          const std::string& batch_id, int64_t step,
                          const std::vector<std::string>& layers,
                          int n = kRows) {
  v1::ActivationBatch b;
  b.set_session_id(session);
  b.set_source(source);
  b.set_batch_id(batch_id);
  b.set_step(step);
  unsigned seed = static_cast<unsigned>(std::hash<std::string>()(batch_id));
  for (const std::string& layer : layers) {
    v1::LayerActivation* l = b.add_layers();
    l->set_layer(layer);
    *l->mutable_activations() =
        ActivationTensor(n, layer == "b" ? kWidthB : kWidthA, ++seed);
  }
  return b;
}

// The approximate session: streams m/a, m/b and n/a declared, so a batch_id
// is joined once source m (layers a, b) and source n (layer a) have sent it.
constexpr char kApprox[] = "approx";
// The exact session: streams m/a and m/b.
constexpr char kExact[] = "exact";

// Returns the values of `m` as bit patterns, so that NaN == NaN.
std::vector<uint64_t> Bits(const v1::SimilarityMatrix& m) {
  std::vector<uint64_t> bits;
  for (double v : m.values()) {
    uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    bits.push_back(b);
  }
  return bits;
}

// Everything a client can ask of the two sessions.
struct Answers {
  std::vector<std::string> sessions;  // serialized Session messages
  std::vector<std::vector<uint64_t>> values;
  std::vector<std::string> layout;  // rows, cols, batches serialized
  bool operator==(const Answers& o) const {
    return sessions == o.sessions && values == o.values && layout == o.layout;
  }
};

struct BadBatchCase {
  std::string name;  // reads as a sentence with "is refused"
  std::vector<v1::ActivationBatch> setup;  // good messages sent first
  v1::ActivationBatch bad;
  grpc::StatusCode code;
  std::vector<std::string> mentions;  // the ack's message contains each
};

// Returns what differs between two Answers, for a failure message.
std::string Difference(const Answers& before, const Answers& after) {
  std::string out;
  for (size_t i = 0; i < before.sessions.size() && i < after.sessions.size();
       ++i) {
    if (before.sessions[i] != after.sessions[i]) {
      v1::Session b, a;
      b.ParseFromString(before.sessions[i]);
      a.ParseFromString(after.sessions[i]);
      absl::StrAppend(&out, "session before: ", b.ShortDebugString(),
                      "\nsession after:  ", a.ShortDebugString(), "\n");
    }
    if (before.values[i] != after.values[i] ||
        before.layout[i] != after.layout[i]) {
      absl::StrAppend(&out, "the matrix of session ", i, " changed\n");
    }
  }
  return out;
}

// Each test runs twice: with state in memory only, and with a --data-dir of
// its own, where every refusal is also checked against the database (the
// stored records of both sessions are unchanged) and against a restart from
// it (the answers are bit-identical and the batches acked OK before are acked
// as duplicates).
class BadInputTest : public ::testing::TestWithParam<Storage> {
 protected:
  void SetUp() override {
    options_.listen = "127.0.0.1:0";
    options_.threads = 2;
    options_.max_message_mb = kMaxMessageMb;
    options_.shutdown_grace = absl::Seconds(5);
    if (GetParam() == Storage::kDataDir) options_.data_dir = MakeTestDataDir();
    StartAndConnect();
    if (HasFatalFailure()) return;

    approx_.set_session_id(kApprox);
    v1::Measure* lin = approx_.mutable_config()->add_measures();
    lin->set_name("lin");
    lin->set_kernel(v1::LINEAR);
    lin->set_estimator(v1::UNBIASED);
    for (const char* s : {"m/a", "m/b", "n/a"})
      approx_.mutable_config()->add_streams(s);
    approx_.mutable_config()->set_step_bucket(10);
    ASSERT_TRUE(Create(approx_).ok());

    exact_.set_session_id(kExact);
    v1::Measure* ex = exact_.mutable_config()->add_measures();
    ex->set_name("ex");
    ex->set_kernel(v1::LINEAR);
    ex->set_estimator(v1::EXACT);
    for (const char* s : {"m/a", "m/b"})
      exact_.mutable_config()->add_streams(s);
    ASSERT_TRUE(Create(exact_).ok());

    for (int i = 0; i < 3; ++i) SendGood();
  }

  void TearDown() override {
    CloseStream();
    if (server_ != nullptr) server_->Shutdown();
  }

  bool durable() const { return !options_.data_dir.empty(); }

  // Starts ckad with options_ (on its data dir, if any) and opens a channel
  // and a stream to it.
  void StartAndConnect() {
    absl::StatusOr<std::unique_ptr<server::Server>> server =
        server::Server::BuildAndStart(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    // The client may send more than the server accepts: that is the test.
    args.SetMaxSendMessageSize(16 << 20);
    channel_ =
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                  grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Similarity::NewStub(channel_);
    stream_context_ = std::make_unique<grpc::ClientContext>();
    stream_ = stub_->StreamActivations(stream_context_.get());
  }

  void CloseStream() {
    if (stream_ == nullptr) return;
    stream_->WritesDone();
    v1::BatchAck ack;
    while (stream_->Read(&ack)) {
    }
    EXPECT_TRUE(stream_->Finish().ok());
    stream_.reset();
    stream_context_.reset();
  }

  grpc::Status Create(const v1::CreateSessionRequest& request) {
    grpc::ClientContext context;
    v1::Session session;
    return stub_->CreateSession(&context, request, &session);
  }

  // Writes `batch` and returns its ack; fails the test when the stream ends.
  v1::BatchAck Send(const v1::ActivationBatch& batch) {
    v1::BatchAck ack;
    EXPECT_TRUE(stream_->Write(batch)) << "the stream ended";
    EXPECT_TRUE(stream_->Read(&ack)) << "the stream ended";
    EXPECT_EQ(ack.batch_id(), batch.batch_id());
    return ack;
  }

  // Sends a batch that must be acked OK (not a duplicate), and remembers it
  // for the resends after a restart; returns whether it was acked OK.
  bool SendAcked(const v1::ActivationBatch& batch) {
    const v1::BatchAck ack = Send(batch);
    EXPECT_EQ(ack.code(), 0) << ack.message();
    EXPECT_FALSE(ack.duplicate());
    if (ack.code() != 0) return false;
    acked_.push_back(batch);
    return true;
  }

  // Sends one complete good batch to each session and checks that it is
  // applied.
  void SendGood() {
    const int64_t before_approx = Applied(kApprox);
    const int64_t before_exact = Applied(kExact);
    const std::string id = absl::StrCat("good/", good_++);
    for (const v1::ActivationBatch& b :
         {Batch(kApprox, "m", id, good_, {"a", "b"}),
          Batch(kApprox, "n", id, good_, {"a"}),
          Batch(kExact, "m", id, good_, {"a", "b"})}) {
      SendAcked(b);
    }
    EXPECT_GT(Applied(kApprox), before_approx);
    EXPECT_GT(Applied(kExact), before_exact);
  }

  int64_t Applied(const std::string& session) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session_id(session);
    v1::Session s;
    EXPECT_TRUE(stub_->GetSession(&context, request, &s).ok());
    return s.batches_applied();
  }

  Answers Snapshot() {
    Answers a;
    for (const char* id : {kApprox, kExact}) {
      grpc::ClientContext context;
      v1::GetSessionRequest request;
      request.set_session_id(id);
      v1::Session s;
      EXPECT_TRUE(stub_->GetSession(&context, request, &s).ok());
      a.sessions.push_back(s.SerializeAsString());
      grpc::ClientContext query_context;
      v1::GetSimilarityRequest query;
      query.set_session_id(id);
      v1::SimilarityMatrix m;
      grpc::Status status = stub_->GetSimilarity(&query_context, query, &m);
      EXPECT_TRUE(status.ok()) << status.error_message();
      a.values.push_back(Bits(m));
      m.clear_values();
      a.layout.push_back(m.SerializeAsString());
    }
    return a;
  }

  // Data dir only: returns the stored sessions once every change both
  // sessions have in memory is written. A CreateSession of an existing
  // session with its config answers only then (and changes nothing), so a
  // refused batch that had changed a session in memory would show here.
  std::map<std::string, StoredRecords> Stored() {
    for (const v1::CreateSessionRequest* r : {&approx_, &exact_}) {
      const grpc::Status status = Create(*r);
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
    return ReadStoredSessions(options_.data_dir);
  }

  // Data dir only: stops ckad (closing the stream), checks that the shutdown
  // wrote nothing new, starts it again from the data dir and checks that both
  // sessions answer `expected` bit for bit (every counter, pending ones
  // included: both sessions declare their streams, so their join buffers are
  // stored too) and still store `stored`; then resends the batches acked OK
  // since `first_resend` (an index into acked_), each of which must be acked
  // as a duplicate that changes nothing.
  void RestartAndCheck(const Answers& expected,
                       const std::map<std::string, StoredRecords>& stored,
                       size_t first_resend) {
    CloseStream();
    server_->Shutdown();
    server_.reset();
    EXPECT_EQ(
        DescribeStoredDifference(stored, ReadStoredSessions(options_.data_dir)),
        "")
        << "the shutdown wrote records";
    StartAndConnect();
    ASSERT_FALSE(HasFatalFailure());
    const Answers restarted = Snapshot();
    EXPECT_TRUE(restarted == expected)
        << "the answers changed across the restart:\n"
        << Difference(expected, restarted);
    for (size_t i = first_resend; i < acked_.size(); ++i) {
      const v1::BatchAck ack = Send(acked_[i]);
      EXPECT_EQ(ack.code(), 0) << ack.message();
      EXPECT_TRUE(ack.duplicate())
          << "batch '" << acked_[i].batch_id() << "' of source '"
          << acked_[i].source() << "' to '" << acked_[i].session_id()
          << "' was acked OK before the restart but not as a duplicate after";
    }
    const Answers resent = Snapshot();
    EXPECT_TRUE(resent == expected) << "a resend changed the answers:\n"
                                    << Difference(expected, resent);
    EXPECT_EQ(DescribeStoredDifference(stored, Stored()), "")
        << "a restart or a resend changed the stored records";
  }

  server::ServerOptions options_;
  v1::CreateSessionRequest approx_;
  v1::CreateSessionRequest exact_;
  std::unique_ptr<server::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> stream_context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ActivationBatch, v1::BatchAck>>
      stream_;
  int good_ = 0;
  std::vector<v1::ActivationBatch> acked_;  // every batch acked OK, in order
};

// Returns a one-layer batch of source m to the approximate session whose
// tensor `mutate` changes.
v1::ActivationBatch Mutated(const std::string& batch_id,
                            const std::function<void(v1::Tensor*)>& mutate,
                            const std::string& session = kApprox) {
  v1::ActivationBatch b = Batch(session, "m", batch_id, 1, {"a", "b"});
  mutate(b.mutable_layers(0)->mutable_activations());
  return b;
}

std::vector<BadBatchCase> BadBatchCases() {
  std::vector<BadBatchCase> cases;
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const grpc::StatusCode kExhausted = grpc::StatusCode::RESOURCE_EXHAUSTED;
  auto add = [&](std::string name, v1::ActivationBatch bad,
                 grpc::StatusCode code, std::vector<std::string> mentions,
                 std::vector<v1::ActivationBatch> setup = {}) {
    cases.push_back({std::move(name), std::move(setup), std::move(bad), code,
                     std::move(mentions)});
  };

  add("an unspecified dtype",
      Mutated("bad/dtype0",
              [](v1::Tensor* t) { t->set_dtype(v1::DTYPE_UNSPECIFIED); }),
      kInvalid, {"dtype", "DTYPE_UNSPECIFIED"});
  add("a dtype outside the enum",
      Mutated("bad/dtype42",
              [](v1::Tensor* t) { t->set_dtype(static_cast<v1::DType>(42)); }),
      kInvalid, {"dtype", "42"});
  add("fewer bytes than the shape needs",
      Mutated("bad/short",
              [](v1::Tensor* t) {
                t->set_data(t->data().substr(0, t->data().size() - 8));
              }),
      kInvalid, {"shape", "needs", "bytes"});
  add("float16 dtype with float64 bytes",
      Mutated("bad/f16", [](v1::Tensor* t) { t->set_dtype(v1::FLOAT16); }),
      kInvalid, {"float16", "bytes"});
  add("a rank-1 tensor",
      Mutated("bad/rank1",
              [](v1::Tensor* t) {
                t->clear_shape();
                t->add_shape(kRows * kWidthA);
              }),
      kInvalid, {"rank 1"});
  add("an empty shape",
      Mutated("bad/noshape", [](v1::Tensor* t) { t->clear_shape(); }), kInvalid,
      {"shape: empty"});
  add("a negative dimension",
      Mutated("bad/negative", [](v1::Tensor* t) { t->set_shape(0, -kRows); }),
      kInvalid, {"shape[0]", "-8", "non-negative"});
  add("zero rows",
      Mutated("bad/zerorows",
              [](v1::Tensor* t) {
                t->set_shape(0, 0);
                t->clear_data();
              }),
      kInvalid, {"size 0", "dimension 0"});
  add("zero width",
      Mutated("bad/zerowidth",
              [](v1::Tensor* t) {
                t->set_shape(1, 0);
                t->clear_data();
              }),
      kInvalid, {"size 0", "dimension 1"});
  add("a shape whose size overflows",
      Mutated("bad/overflow",
              [](v1::Tensor* t) {
                t->set_shape(0, int64_t{1} << 40);
                t->set_shape(1, int64_t{1} << 40);
              }),
      kInvalid, {"more than 2^64"});
  add("a NaN",
      Mutated("bad/nan",
              [](v1::Tensor* t) {
                const double nan = std::numeric_limits<double>::quiet_NaN();
                std::memcpy(t->mutable_data()->data() + 8 * 5, &nan, 8);
              }),
      kInvalid, {"not finite", "row 1, column 1"});
  add("an infinity",
      Mutated("bad/inf",
              [](v1::Tensor* t) {
                const double inf = -std::numeric_limits<double>::infinity();
                std::memcpy(t->mutable_data()->data(), &inf, 8);
              }),
      kInvalid, {"not finite", "row 0, column 0"});
  add("three examples (n < 4 for the unbiased estimator)",
      Batch(kApprox, "m", "bad/n3", 1, {"a", "b"}, 3), kInvalid,
      {"3 examples", "at least 4"});
  add("more examples than --max-examples",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "n", "bad/huge-n", 1, {"a"});
        v1::Tensor* t = b.mutable_layers(0)->mutable_activations();
        t->set_shape(0, 8193);
        t->set_shape(1, 1);
        t->set_dtype(v1::FLOAT32);
        t->set_data(std::string(8193 * 4, '\0'));
        return b;
      }(),
      kExhausted, {"8193 examples", "limit of 8192"});
  add("layers of one batch with different rows",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "bad/rows", 1, {"a"});
        *b.add_layers() = Batch(kApprox, "m", "x", 1, {"b"}, 6).layers(0);
        return b;
      }(),
      kInvalid, {"6 rows", "8 rows"});
  add("a source whose rows differ from another's for the same batch_id",
      Batch(kApprox, "n", "join/1", 1, {"a"}, 6), kInvalid,
      {"6 rows", "had 8 rows for this batch_id"},
      {Batch(kApprox, "m", "join/1", 1, {"a", "b"})});
  add("a message over --max-message-mb",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "n", "bad/oversize", 1, {"a"});
        *b.mutable_layers(0)->mutable_activations() =
            ActivationTensor(kRows, (3 << 20) / 2 / 8 / kRows, 7);
        return b;
      }(),
      kExhausted, {"--max-message-mb", "bad/oversize"});
  add("an unknown session", Batch("no-such-session", "m", "bad/s", 1, {"a"}),
      grpc::StatusCode::NOT_FOUND, {"no-such-session"});
  add("an empty session id", Batch("", "m", "bad/nosession", 1, {"a"}),
      kInvalid, {"session_id", "empty"});
  add("a non-symmetric gram",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "n", "bad/asym", 1, {"a"});
        v1::Tensor g = Gram(kRows, 3);
        const double v = 1e3;
        std::memcpy(g.mutable_data()->data() + 8 * 1, &v, 8);  // (0, 1)
        *b.mutable_layers(0)->mutable_gram() = g;
        return b;
      }(),
      kInvalid, {"not symmetric", "(0, 1)"});
  add("a gram that is not square",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "n", "bad/rect", 1, {"a"});
        v1::Tensor* g = b.mutable_layers(0)->mutable_gram();
        *g = ActivationTensor(kRows, 6, 5);
        return b;
      }(),
      kInvalid, {"gram shape [8, 6]", "not square"});
  add("a gram with a negative diagonal",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "n", "bad/diag", 1, {"a"});
        v1::Tensor g = Gram(kRows, 4);
        const double v = -1;
        std::memcpy(g.mutable_data()->data(), &v, 8);  // (0, 0)
        *b.mutable_layers(0)->mutable_gram() = g;
        return b;
      }(),
      kInvalid, {"diagonal", "(0, 0)"});
  add("a gram in an exact session",
      [] {
        v1::ActivationBatch b = Batch(kExact, "m", "bad/exact-gram", 1, {"a"});
        *b.mutable_layers(0)->mutable_gram() = Gram(kRows, 6);
        return b;
      }(),
      kInvalid, {"gram", "exact"});
  add("a width change in an exact session",
      [] {
        v1::ActivationBatch b = Batch(kExact, "m", "bad/width", 1, {"a"});
        *b.mutable_layers(0)->mutable_activations() =
            ActivationTensor(kRows, kWidthA + 1, 8);
        return b;
      }(),
      kInvalid, {"5 features", "had 4 before"});
  add("an empty layer name",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "bad/nolayer", 1, {"a"});
        b.mutable_layers(0)->set_layer("");
        return b;
      }(),
      kInvalid, {"layer is empty"});
  add("a layer name of 10000 bytes",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "bad/longlayer", 1, {"a"});
        b.mutable_layers(0)->set_layer(std::string(10000, 'l'));
        return b;
      }(),
      kInvalid, {"10000 bytes", "limit of 256"});
  add("an empty batch_id",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "", 1, {"a", "b"});
        return b;
      }(),
      kInvalid, {"batch_id is empty"});
  add("a batch_id of 5000 bytes",
      Batch(kApprox, "m", std::string(5000, 'b'), 1, {"a", "b"}), kInvalid,
      {"batch_id", "5000 bytes"});
  add("a source containing '/'", Batch(kApprox, "m/x", "bad/slash", 1, {"a"}),
      kInvalid, {"source 'm/x'", "'/'"});
  add("a control character in a layer name",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "bad/ctl", 1, {"a"});
        b.mutable_layers(0)->set_layer("a\x01");
        return b;
      }(),
      kInvalid, {"control character 0x01"});
  add("a control character in the source",
      Batch(kApprox, "m\n", "bad/ctl-source", 1, {"a"}), kInvalid,
      {"source", "control character 0x0a"});
  add("a layer without a payload",
      [] {
        v1::ActivationBatch b = Batch(kApprox, "m", "bad/payload", 1, {"a"});
        b.mutable_layers(0)->clear_payload();
        return b;
      }(),
      kInvalid, {"payload: not set"});
  add("the same layer twice in one batch",
      Batch(kApprox, "m", "bad/twice", 1, {"a", "a"}), kInvalid,
      {"stream 'm/a' appears twice"});
  add("a batch without layers", Batch(kApprox, "m", "bad/nolayers", 1, {}),
      kInvalid, {"has no layers"});
  add("a stream the session does not declare",
      Batch(kApprox, "z", "bad/undeclared", 1, {"a"}), kInvalid,
      {"stream 'z/a' is not declared"});
  return cases;
}

TEST(BadInputCasesTest, ThereAreAtLeastTwentyFive) {
  EXPECT_GE(BadBatchCases().size(), 25u);
}

TEST_P(BadInputTest, EveryBadBatchIsRefusedAloneAndChangesNothing) {
  for (const BadBatchCase& c : BadBatchCases()) {
    SCOPED_TRACE(absl::StrCat("a batch with ", c.name, " is refused"));
    for (const v1::ActivationBatch& setup : c.setup) {
      ASSERT_TRUE(SendAcked(setup));
    }
    const size_t acked_before = acked_.size();
    const Answers before = Snapshot();
    std::map<std::string, StoredRecords> stored;
    if (durable()) stored = Stored();
    const v1::BatchAck ack = Send(c.bad);
    EXPECT_EQ(ack.code(), static_cast<int>(c.code)) << ack.message();
    for (const std::string& m : c.mentions) {
      EXPECT_NE(ack.message().find(m), std::string::npos)
          << "'" << ack.message() << "' does not mention '" << m << "'";
    }
    const Answers after = Snapshot();
    EXPECT_TRUE(after == before) << "the answers changed:\n"
                                 << Difference(before, after);
    if (durable()) {
      EXPECT_EQ(DescribeStoredDifference(stored, Stored()), "")
          << "the stored records changed";
      // The batches of the last SendGood and this case's setup: every one
      // before stays applied across the restart, as the answers show.
      RestartAndCheck(before, stored, acked_before - 3 - c.setup.size());
    }
    // The stream survives and still applies good batches.
    SendGood();
    if (durable()) {
      // The check above can see a change: a good batch makes one.
      EXPECT_NE(DescribeStoredDifference(stored, Stored()), "")
          << "a good batch changed no stored record";
    }
    if (::testing::Test::HasFatalFailure()) return;
  }
  if (durable()) RestartAndCheck(Snapshot(), Stored(), 0);
}

struct BadQueryCase {
  std::string name;
  std::string session;
  std::string measure;
  std::vector<std::string> rows;
  std::optional<int64_t> step_min;
  std::optional<int64_t> step_max;
  grpc::StatusCode code;
  std::vector<std::string> mentions;
};

TEST_P(BadInputTest, EveryBadQueryIsRefusedWithItsCode) {
  const std::vector<BadQueryCase> cases = {
      {"an unknown session",
       "no-such-session",
       "",
       {},
       {},
       {},
       grpc::StatusCode::NOT_FOUND,
       {"no-such-session"}},
      {"an unknown measure",
       kApprox,
       "nope",
       {},
       {},
       {},
       grpc::StatusCode::NOT_FOUND,
       {"measure 'nope'", "lin"}},
      {"an unknown stream",
       kApprox,
       "",
       {"x/y"},
       {},
       {},
       grpc::StatusCode::NOT_FOUND,
       {"stream 'x/y'"}},
      {"a step_min inside a bucket",
       kApprox,
       "",
       {},
       3,
       19,
       grpc::StatusCode::INVALID_ARGUMENT,
       {"step_min 3"}},
      {"a step_max inside a bucket",
       kApprox,
       "",
       {},
       0,
       3,
       grpc::StatusCode::INVALID_ARGUMENT,
       {"step_max 3"}},
      {"an empty step range",
       kApprox,
       "",
       {},
       20,
       9,
       grpc::StatusCode::INVALID_ARGUMENT,
       {"step range is empty"}},
      {"a step range on an exact measure",
       kExact,
       "",
       {},
       0,
       9,
       grpc::StatusCode::FAILED_PRECONDITION,
       {"measure 'ex'", "exact"}},
  };
  const Answers before = Snapshot();
  std::map<std::string, StoredRecords> stored;
  if (durable()) stored = Stored();
  for (const BadQueryCase& c : cases) {
    SCOPED_TRACE(absl::StrCat("a query with ", c.name, " is refused"));
    v1::GetSimilarityRequest request;
    request.set_session_id(c.session);
    request.set_measure(c.measure);
    for (const std::string& r : c.rows) request.add_rows(r);
    if (c.step_min.has_value()) request.set_step_min(*c.step_min);
    if (c.step_max.has_value()) request.set_step_max(*c.step_max);
    grpc::ClientContext context;
    v1::SimilarityMatrix matrix;
    const grpc::Status status =
        stub_->GetSimilarity(&context, request, &matrix);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    for (const std::string& m : c.mentions) {
      EXPECT_NE(status.error_message().find(m), std::string::npos)
          << "'" << status.error_message() << "' does not mention '" << m
          << "'";
    }
    // A watch of the same query ends with the same code.
    v1::WatchSimilarityRequest watch;
    *watch.mutable_query() = request;
    grpc::ClientContext watch_context;
    watch_context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> reader =
        stub_->WatchSimilarity(&watch_context, watch);
    while (reader->Read(&matrix)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), c.code);
  }
  EXPECT_TRUE(Snapshot() == before);
  if (durable()) {
    EXPECT_EQ(DescribeStoredDifference(stored, Stored()), "")
        << "the stored records changed";
    RestartAndCheck(before, stored, 0);
  }
  SendGood();
}

INSTANTIATE_TEST_SUITE_P(Storage, BadInputTest,
                         ::testing::Values(Storage::kMemory, Storage::kDataDir),
                         StorageName);

}  // namespace
}  // namespace cka::testing
