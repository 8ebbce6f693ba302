// The limits of --max-streams-per-client and --max-pending-total-mb over the
// real gRPC service in-process on 127.0.0.1:0. Each test runs twice: with
// state in memory only, and with a --data-dir of its own, where a refused
// batch is also checked against the database (no stored record changes) and
// against a restart from it (the same answers, bit for bit, and a batch acked
// OK before is acked as a duplicate when resent).
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cka/server/server.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "test_util.h"

namespace cka::testing {
namespace {

using BatchStream = grpc::ClientReaderWriter<v1::ActivationBatch, v1::BatchAck>;

v1::ActivationBatch Batch(const std::string& session, const std::string& source,
                          const std::string& batch_id, int n, int d) {
  v1::ActivationBatch b;
  b.set_session_id(session);
  b.set_source(source);
  b.set_batch_id(batch_id);
  v1::LayerActivation* layer = b.add_layers();
  layer->set_layer("a");
  v1::Tensor* t = layer->mutable_activations();
  t->add_shape(n);
  t->add_shape(d);
  t->set_dtype(v1::FLOAT64);
  const Activations a =
      RandomActivations(n, d, static_cast<unsigned>(batch_id.size() * 131 + n));
  t->set_data(std::string(reinterpret_cast<const char*>(a.x.data()),
                          a.x.size() * sizeof(double)));
  return b;
}

// One open StreamActivations call.
struct OpenStream {
  grpc::ClientContext context;
  std::unique_ptr<BatchStream> stream;

  // Sends `batch`; returns its ack, or nullopt when the stream has ended.
  std::optional<v1::BatchAck> Send(const v1::ActivationBatch& batch) {
    v1::BatchAck ack;
    if (!stream->Write(batch) || !stream->Read(&ack)) return std::nullopt;
    return ack;
  }
  grpc::Status Close() {
    stream->WritesDone();
    v1::BatchAck ack;
    while (stream->Read(&ack)) {
    }
    return stream->Finish();
  }
};

std::unique_ptr<OpenStream> Open(v1::Similarity::Stub* stub,
                                 const std::string& token = "") {
  auto s = std::make_unique<OpenStream>();
  if (!token.empty())
    s->context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  s->stream = stub->StreamActivations(&s->context);
  return s;
}

std::unique_ptr<v1::Similarity::Stub> Stub(int port) {
  return v1::Similarity::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
}

// Returns the server options of the test's Storage: a fresh --data-dir for
// Storage::kDataDir.
server::ServerOptions OptionsFor(Storage storage) {
  server::ServerOptions options;
  if (storage == Storage::kDataDir) options.data_dir = MakeTestDataDir();
  return options;
}

class StreamsPerClientTest : public ::testing::TestWithParam<Storage> {};

TEST_P(StreamsPerClientTest, AStreamBeyondTheLimitEndsWithResourceExhausted) {
  server::ServerOptions options = OptionsFor(GetParam());
  options.max_streams_per_client = 2;
  std::unique_ptr<server::Server> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  std::unique_ptr<v1::Similarity::Stub> stub = Stub(server->port());

  // A round trip on each makes sure the server holds both.
  std::unique_ptr<OpenStream> first = Open(stub.get());
  std::unique_ptr<OpenStream> second = Open(stub.get());
  for (OpenStream* s : {first.get(), second.get()}) {
    std::optional<v1::BatchAck> ack = s->Send(Batch("none", "m", "b/1", 8, 2));
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  }
  std::unique_ptr<OpenStream> third = Open(stub.get());
  EXPECT_FALSE(third->Send(Batch("none", "m", "b/1", 8, 2)).has_value());
  const grpc::Status refused = third->stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("--max-streams-per-client"),
            std::string::npos)
      << refused.error_message();

  // Another connection from the same address is the same client.
  std::unique_ptr<v1::Similarity::Stub> other_channel = Stub(server->port());
  std::unique_ptr<OpenStream> fourth = Open(other_channel.get());
  EXPECT_FALSE(fourth->Send(Batch("none", "m", "b/1", 8, 2)).has_value());
  EXPECT_EQ(fourth->stream->Finish().error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Closing one frees its place (the server releases it once the call is
  // done, shortly after the client sees the end).
  EXPECT_TRUE(first->Close().ok());
  bool reopened = false;
  for (int attempt = 0; attempt < 50 && !reopened; ++attempt) {
    std::unique_ptr<OpenStream> again = Open(stub.get());
    std::optional<v1::BatchAck> ack =
        again->Send(Batch("none", "m", "b/2", 8, 2));
    if (ack.has_value()) {
      reopened = true;
      EXPECT_TRUE(again->Close().ok());
    } else {
      again->stream->Finish();
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  EXPECT_TRUE(reopened);
  EXPECT_TRUE(second->Close().ok());
  server->Shutdown();
  // Batches to an unknown session and refused streams store nothing.
  if (!options.data_dir.empty()) {
    EXPECT_EQ(
        DescribeStoredDifference({}, ReadStoredSessions(options.data_dir)), "");
  }
}

TEST_P(StreamsPerClientTest, WithTokensEachTokenHasItsOwnLimit) {
  const std::string dir = MakeTestDataDir() + "-tokens";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokens") << "writer-one-0123456789abcdef writer\n"
                                    "writer-two-0123456789abcdef writer\n";
  server::ServerOptions options = OptionsFor(GetParam());
  options.max_streams_per_client = 1;
  options.auth_tokens_file = dir + "/tokens";
  std::unique_ptr<server::Server> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  std::unique_ptr<v1::Similarity::Stub> stub = Stub(server->port());

  std::unique_ptr<OpenStream> one =
      Open(stub.get(), "writer-one-0123456789abcdef");
  ASSERT_TRUE(one->Send(Batch("none", "m", "b/1", 8, 2)).has_value());
  std::unique_ptr<OpenStream> two =
      Open(stub.get(), "writer-two-0123456789abcdef");
  ASSERT_TRUE(two->Send(Batch("none", "m", "b/1", 8, 2)).has_value());
  std::unique_ptr<OpenStream> one_again =
      Open(stub.get(), "writer-one-0123456789abcdef");
  EXPECT_FALSE(one_again->Send(Batch("none", "m", "b/1", 8, 2)).has_value());
  const grpc::Status refused = one_again->stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message().find("writer-one"), std::string::npos)
      << "a refusal must not echo the token";
  EXPECT_TRUE(one->Close().ok());
  EXPECT_TRUE(two->Close().ok());
  server->Shutdown();
  if (!options.data_dir.empty()) {
    EXPECT_EQ(
        DescribeStoredDifference({}, ReadStoredSessions(options.data_dir)), "");
  }
}

INSTANTIATE_TEST_SUITE_P(Storage, StreamsPerClientTest,
                         ::testing::Values(Storage::kMemory, Storage::kDataDir),
                         StorageName);

grpc::Status CreateJoinedSession(v1::Similarity::Stub* stub,
                                 const std::string& id) {
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  v1::Measure* m = request.mutable_config()->add_measures();
  m->set_name("lin");
  m->set_kernel(v1::LINEAR);
  m->set_estimator(v1::UNBIASED);
  // Two declared sources: a batch of source p waits in the join buffer until
  // source q sends the same batch_id.
  request.mutable_config()->add_streams("p/a");
  request.mutable_config()->add_streams("q/a");
  grpc::ClientContext context;
  v1::Session session;
  return stub->CreateSession(&context, request, &session);
}

// Returns what a client sees of session `id`: its counters and its matrix,
// as text that is equal only when every counter and every matrix value (as a
// double: protobuf prints the shortest text that reads back exactly) is.
std::string Answers(v1::Similarity::Stub* stub, const std::string& id) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  v1::Session session;
  const grpc::Status got = stub->GetSession(&context, request, &session);
  if (!got.ok()) return absl::StrCat("GetSession: ", got.error_message());
  grpc::ClientContext query_context;
  v1::GetSimilarityRequest query;
  query.set_session_id(id);
  v1::SimilarityMatrix matrix;
  const grpc::Status queried =
      stub->GetSimilarity(&query_context, query, &matrix);
  if (!queried.ok())
    return absl::StrCat("GetSimilarity: ", queried.error_message());
  return absl::StrCat(session.ShortDebugString(), "\n",
                      matrix.ShortDebugString());
}

class PendingTotalTest : public ::testing::TestWithParam<Storage> {
 protected:
  // Data dir only: returns the stored sessions once every change of
  // `sessions` is written (a CreateSession of an existing session answers
  // only then, and changes nothing).
  std::map<std::string, StoredRecords> Stored(
      v1::Similarity::Stub* stub, const std::vector<std::string>& sessions) {
    for (const std::string& id : sessions) {
      const grpc::Status status = CreateJoinedSession(stub, id);
      EXPECT_TRUE(status.ok()) << status.error_message();
    }
    return ReadStoredSessions(options_.data_dir);
  }

  server::ServerOptions options_ = OptionsFor(GetParam());
};

TEST_P(PendingTotalTest, TheJoinBuffersOfAllSessionsShareOneBudget) {
  constexpr int kRows = 64;  // a pending 64 × 64 Gram is 32 KiB
  const bool durable = !options_.data_dir.empty();
  options_.max_pending_total_bytes = 256 << 10;
  std::unique_ptr<server::Server> server = StartServer(options_);
  ASSERT_NE(server, nullptr);
  // Far below each session's own budget: only the total can refuse.
  ASSERT_GT(server->engine().limits().session.max_pending_bytes,
            int64_t{64} << 20);
  std::unique_ptr<v1::Similarity::Stub> stub = Stub(server->port());
  ASSERT_TRUE(CreateJoinedSession(stub.get(), "one").ok());
  ASSERT_TRUE(CreateJoinedSession(stub.get(), "two").ok());
  std::unique_ptr<OpenStream> stream = Open(stub.get());

  // Fill the budget from session one until a batch is refused; the refused
  // batch changes nothing, in memory or stored.
  int accepted = 0;
  std::string refusal;
  std::vector<v1::ActivationBatch> acked;
  std::map<std::string, StoredRecords> stored;
  for (int i = 0; i < 64 && refusal.empty(); ++i) {
    const std::string before = Answers(stub.get(), "one");
    if (durable) stored = Stored(stub.get(), {"one", "two"});
    const v1::ActivationBatch batch =
        Batch("one", "p", absl::StrCat("one/", i), kRows, 16);
    std::optional<v1::BatchAck> ack = stream->Send(batch);
    ASSERT_TRUE(ack.has_value());
    if (ack->code() == 0) {
      EXPECT_FALSE(ack->duplicate());
      ++accepted;
      acked.push_back(batch);
      if (durable) {
        // The check below can see a change: an accepted batch makes one.
        EXPECT_NE(DescribeStoredDifference(stored,
                                           Stored(stub.get(), {"one", "two"})),
                  "");
      }
    } else {
      EXPECT_EQ(ack->code(),
                static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
      refusal = ack->message();
      EXPECT_EQ(Answers(stub.get(), "one"), before);
      if (durable) {
        EXPECT_EQ(DescribeStoredDifference(stored,
                                           Stored(stub.get(), {"one", "two"})),
                  "");
      }
    }
  }
  ASSERT_FALSE(refusal.empty()) << "the budget was never reached";
  EXPECT_GE(accepted, 2);
  EXPECT_NE(refusal.find("--max-pending-total-mb"), std::string::npos)
      << refusal;

  // Session two has an empty join buffer but shares the full budget.
  const std::string before_two = Answers(stub.get(), "two");
  std::optional<v1::BatchAck> other =
      stream->Send(Batch("two", "p", "two/0", kRows, 16));
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->code(),
            static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_EQ(Answers(stub.get(), "two"), before_two);
  if (durable) {
    EXPECT_EQ(
        DescribeStoredDifference(stored, Stored(stub.get(), {"one", "two"})),
        "");
  }

  if (durable) {
    // A restart from the data dir answers the same (both sessions declare
    // their streams, so their join buffers are stored and the pending
    // counters compare too), holds the same join buffers against the total,
    // and acks every batch acked before as a duplicate.
    const std::string before_one = Answers(stub.get(), "one");
    EXPECT_TRUE(stream->Close().ok());
    server->Shutdown();
    server = StartServer(options_);
    ASSERT_NE(server, nullptr);
    stub = Stub(server->port());
    stream = Open(stub.get());
    EXPECT_EQ(Answers(stub.get(), "one"), before_one);
    EXPECT_EQ(Answers(stub.get(), "two"), before_two);
    for (const v1::ActivationBatch& batch : acked) {
      SCOPED_TRACE(absl::StrCat("resending ", batch.batch_id()));
      std::optional<v1::BatchAck> ack = stream->Send(batch);
      ASSERT_TRUE(ack.has_value());
      EXPECT_EQ(ack->code(), 0) << ack->message();
      EXPECT_TRUE(ack->duplicate());
    }
    other = stream->Send(Batch("two", "p", "two/0", kRows, 16));
    ASSERT_TRUE(other.has_value());
    EXPECT_EQ(other->code(),
              static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED))
        << "the restored join buffers count against the total";
    EXPECT_EQ(Answers(stub.get(), "one"), before_one);
    EXPECT_EQ(Answers(stub.get(), "two"), before_two);
    EXPECT_EQ(
        DescribeStoredDifference(stored, Stored(stub.get(), {"one", "two"})),
        "");
  }

  // Deleting session one frees its join buffer for session two.
  {
    grpc::ClientContext context;
    v1::DeleteSessionRequest request;
    request.set_session_id("one");
    v1::DeleteSessionResponse response;
    ASSERT_TRUE(stub->DeleteSession(&context, request, &response).ok());
  }
  if (durable) {
    EXPECT_EQ(ReadStoredSessions(options_.data_dir).count("one"), 0u)
        << "DeleteSession answered before the rows were gone";
  }
  const v1::ActivationBatch two_1 = Batch("two", "p", "two/1", kRows, 16);
  other = stream->Send(two_1);
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->code(), 0) << other->message();
  EXPECT_TRUE(stream->Close().ok());

  if (durable) {
    // After a restart: session one stays deleted, two keeps its batch.
    const std::string before_restart = Answers(stub.get(), "two");
    server->Shutdown();
    server = StartServer(options_);
    ASSERT_NE(server, nullptr);
    stub = Stub(server->port());
    EXPECT_EQ(Answers(stub.get(), "two"), before_restart);
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session_id("one");
    v1::Session deleted;
    EXPECT_EQ(stub->GetSession(&context, request, &deleted).error_code(),
              grpc::StatusCode::NOT_FOUND);
    stream = Open(stub.get());
    other = stream->Send(two_1);
    ASSERT_TRUE(other.has_value());
    EXPECT_EQ(other->code(), 0) << other->message();
    EXPECT_TRUE(other->duplicate());
    EXPECT_TRUE(stream->Close().ok());
  }
  server->Shutdown();
}

INSTANTIATE_TEST_SUITE_P(Storage, PendingTotalTest,
                         ::testing::Values(Storage::kMemory, Storage::kDataDir),
                         StorageName);

}  // namespace
}  // namespace cka::testing
