// The whole service in-process on 127.0.0.1:0, through the generated stub (and
// a generic stub for the standard health service, whose messages this project
// does not compile).
#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/server/server.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

constexpr int kExamples = 8;

std::string NewTempDir() {
  std::string pattern =
      (fs::path(testing::TempDir()) / "ckad_server_XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

// Fills `tensor` with an n × d float32 matrix of pseudo-random normal values.
void RandomActivations(int n, int d, std::mt19937* rng, v1::Tensor* tensor) {
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(n) * d);
  for (float& v : values) v = normal(*rng);
  tensor->add_shape(n);
  tensor->add_shape(d);
  tensor->set_dtype(v1::FLOAT32);
  tensor->set_data(values.data(), values.size() * sizeof(float));
}

// A batch of source "m" with layers conv (d = 6) and fc (d = 3), seeded by its
// number.
v1::ActivationBatch MakeBatch(const std::string& session_id, int number) {
  std::mt19937 rng(1000 + number);
  v1::ActivationBatch batch;
  batch.set_session_id(session_id);
  batch.set_source("m");
  batch.set_batch_id(absl::StrCat("b", number));
  batch.set_step(number);
  v1::LayerActivation* conv = batch.add_layers();
  conv->set_layer("conv");
  RandomActivations(kExamples, 6, &rng, conv->mutable_activations());
  v1::LayerActivation* fc = batch.add_layers();
  fc->set_layer("fc");
  RandomActivations(kExamples, 3, &rng, fc->mutable_activations());
  return batch;
}

void SetDeadline(grpc::ClientContext* context, int seconds = 10) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(seconds));
}

// Writes `batches` on one stream from a second thread while this one reads the
// acks; returns the acks and sets *status to the stream's end.
std::vector<v1::BatchAck> StreamAll(
    v1::Similarity::Stub* stub, const std::vector<v1::ActivationBatch>& batches,
    grpc::Status* status) {
  grpc::ClientContext context;
  SetDeadline(&context, 30);
  auto stream = stub->StreamActivations(&context);
  std::thread writer([&] {
    for (const v1::ActivationBatch& b : batches) {
      if (!stream->Write(b)) break;
    }
    stream->WritesDone();
  });
  std::vector<v1::BatchAck> acks;
  v1::BatchAck ack;
  while (stream->Read(&ack)) acks.push_back(ack);
  writer.join();
  *status = stream->Finish();
  return acks;
}

// grpc.health.v1.Health through a generic stub. HealthCheckRequest{service: ""}
// encodes to no bytes; HealthCheckResponse{status: s} to {0x08, s}, with
// SERVING = 1 and NOT_SERVING = 2.
constexpr int kServing = 1;
constexpr int kNotServing = 2;

grpc::ByteBuffer EmptyMessage() {
  grpc::Slice empty("");
  return grpc::ByteBuffer(&empty, 1);
}

int DecodeHealth(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.size() == 2 && bytes[0] == 0x08) return bytes[1];
  return bytes.empty() ? 0 : -1;
}

int CheckHealth(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                                    EmptyMessage(), &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  EXPECT_TRUE(cq.Next(&tag, &ok));
  if (!status.ok()) return -static_cast<int>(status.error_code());
  return DecodeHealth(response);
}

class SimilarityServiceTest : public testing::Test {
 protected:
  void StartServer(const std::string& data_dir = "") {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.threads = 2;
    options.data_dir = data_dir;
    options.shutdown_grace = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::BuildAndStart(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Similarity::NewStub(channel_);
  }

  void TearDown() override { server_.reset(); }

  grpc::Status CreateSession(const std::string& id, v1::Session* out = nullptr,
                             const v1::SessionConfig& config = {}) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::CreateSessionRequest request;
    request.set_session_id(id);
    *request.mutable_config() = config;
    v1::Session session;
    grpc::Status status = stub_->CreateSession(&context, request, &session);
    if (out != nullptr) *out = session;
    return status;
  }

  grpc::Status GetSession(const std::string& id, v1::Session* out) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetSessionRequest request;
    request.set_session_id(id);
    return stub_->GetSession(&context, request, out);
  }

  grpc::Status GetSimilarity(const v1::GetSimilarityRequest& request,
                             v1::SimilarityMatrix* out) {
    grpc::ClientContext context;
    SetDeadline(&context);
    return stub_->GetSimilarity(&context, request, out);
  }

  grpc::Status DeleteSession(const std::string& id) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::DeleteSessionRequest request;
    request.set_session_id(id);
    v1::DeleteSessionResponse response;
    return stub_->DeleteSession(&context, request, &response);
  }

  std::vector<v1::BatchAck> Stream(
      const std::vector<v1::ActivationBatch>& batches, grpc::Status* status) {
    return StreamAll(stub_.get(), batches, status);
  }

  std::vector<v1::ActivationBatch> Batches(const std::string& session_id,
                                           int count) {
    std::vector<v1::ActivationBatch> batches;
    for (int i = 0; i < count; ++i) batches.push_back(MakeBatch(session_id, i));
    return batches;
  }

  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
};

TEST_F(SimilarityServiceTest, CreateSessionIsIdempotentForTheSameConfig) {
  StartServer();
  v1::SessionConfig config;
  v1::Measure* m = config.add_measures();
  m->set_name("rbf");
  m->set_kernel(v1::RBF);
  m->set_rbf_threshold(0.5);
  v1::Session first;
  ASSERT_TRUE(CreateSession("s", &first, config).ok());
  EXPECT_EQ(first.session_id(), "s");
  ASSERT_EQ(first.config().measures_size(), 1);
  EXPECT_EQ(first.config().measures(0).estimator(),
            v1::UNBIASED);  // default filled in
  v1::Session again;
  EXPECT_TRUE(CreateSession("s", &again, config).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(first, again));

  config.mutable_measures(0)->set_rbf_threshold(0.8);
  EXPECT_EQ(CreateSession("s", nullptr, config).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(SimilarityServiceTest, CreateSessionWithABadConfigIsInvalidArgument) {
  StartServer();
  v1::SessionConfig config;
  config.add_measures()->set_kernel(static_cast<v1::Kernel>(7));
  grpc::Status status = CreateSession("s", nullptr, config);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("kernel"), std::string::npos)
      << status.error_message();
}

TEST_F(SimilarityServiceTest, GetListAndDeleteSessions) {
  StartServer();
  ASSERT_TRUE(CreateSession("b").ok());
  ASSERT_TRUE(CreateSession("a").ok());
  v1::Session session;
  ASSERT_TRUE(GetSession("a", &session).ok());
  EXPECT_EQ(session.session_id(), "a");
  EXPECT_EQ(GetSession("nobody", &session).error_code(),
            grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ListSessionsResponse list;
  ASSERT_TRUE(
      stub_->ListSessions(&context, v1::ListSessionsRequest(), &list).ok());
  ASSERT_EQ(list.sessions_size(), 2);
  EXPECT_EQ(list.sessions(0).session_id(), "a");
  EXPECT_EQ(list.sessions(1).session_id(), "b");

  EXPECT_TRUE(DeleteSession("a").ok());
  EXPECT_EQ(GetSession("a", &session).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DeleteSession("a").error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SimilarityServiceTest, StreamedBatchesGiveTheEnginesOwnMatrix) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::Status status;
  std::vector<v1::BatchAck> acks = Stream(Batches("s", 5), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(acks.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(acks[i].code(), 0) << acks[i].message();
    EXPECT_EQ(acks[i].session_id(), "s");
    EXPECT_EQ(acks[i].source(), "m");
    EXPECT_EQ(acks[i].batch_id(), absl::StrCat("b", i));
    EXPECT_FALSE(acks[i].duplicate());
  }
  EXPECT_EQ(server_->batches_received(), 5);

  v1::GetSimilarityRequest
      request;  // empty measure, rows and cols: first measure, all streams
  request.set_session_id("s");
  v1::SimilarityMatrix matrix;
  ASSERT_TRUE(GetSimilarity(request, &matrix).ok());
  absl::StatusOr<core::SimilarityMatrix> expected =
      (*server_->engine().GetSession("s"))->Query(core::SimilarityQuery());
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(matrix.measure(), expected->measure);
  ASSERT_EQ(matrix.rows_size(), 2);
  EXPECT_EQ(matrix.rows(0), "m/conv");
  EXPECT_EQ(matrix.rows(1), "m/fc");
  ASSERT_EQ(matrix.values_size(), 4);
  for (int i = 0; i < 4; ++i) {
    // The same doubles travel unchanged: exact equality.
    EXPECT_EQ(matrix.values(i), expected->values[i]);
    EXPECT_EQ(matrix.batches(i), 5);
  }
  // CKA(X, X) = 1; 1e-9 covers float32 activations with float64 sums.
  EXPECT_NEAR(matrix.values(0), 1.0, 1e-9);

  request.set_measure("nope");
  EXPECT_EQ(GetSimilarity(request, &matrix).error_code(),
            grpc::StatusCode::NOT_FOUND);
  request.set_session_id("nobody");
  EXPECT_EQ(GetSimilarity(request, &matrix).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// The trailing metadata key that the proto documents for GetSimilarity.
constexpr char kServerTimeKey[] = "x-cka-server-time-ms";

TEST_F(SimilarityServiceTest, GetSimilarityAnswersCarryCkadsOwnTime) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::Status status;
  ASSERT_EQ(Stream(Batches("s", 2), &status).size(), 2u);
  v1::GetSimilarityRequest request;
  request.set_session_id("s");
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::SimilarityMatrix matrix;
  const absl::Time before = absl::Now();
  ASSERT_TRUE(stub_->GetSimilarity(&context, request, &matrix).ok());
  const double call_ms = absl::ToDoubleMilliseconds(absl::Now() - before);
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(kServerTimeKey);
  ASSERT_NE(it, trailers.end());
  double server_ms = -1;
  ASSERT_TRUE(absl::SimpleAtod(
      std::string(it->second.data(), it->second.size()), &server_ms));
  // ckad's share of the call: never negative, never longer than the call.
  EXPECT_GE(server_ms, 0.0);
  EXPECT_LE(server_ms, call_ms);

  // An error answer carries no time.
  request.set_session_id("nobody");
  grpc::ClientContext missing;
  SetDeadline(&missing);
  EXPECT_EQ(stub_->GetSimilarity(&missing, request, &matrix).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(missing.GetServerTrailingMetadata().count(kServerTimeKey), 0u);
}

// A batch of source "m" with `layers` layers l0, l1, ... (d = 4).
v1::ActivationBatch BatchOfLayers(const std::string& session_id, int layers) {
  std::mt19937 rng(7);
  v1::ActivationBatch batch;
  batch.set_session_id(session_id);
  batch.set_source("m");
  batch.set_batch_id("b0");
  for (int l = 0; l < layers; ++l) {
    v1::LayerActivation* layer = batch.add_layers();
    layer->set_layer(absl::StrCat("l", l));
    RandomActivations(kExamples, 4, &rng, layer->mutable_activations());
  }
  return batch;
}

TEST_F(SimilarityServiceTest, GetSessionReportsStateBytesGrowingWithStreams) {
  StartServer();
  std::map<int, int64_t> state_bytes;  // streams → state_bytes
  for (int streams : {2, 4, 8}) {
    const std::string id = absl::StrCat("s", streams);
    ASSERT_TRUE(CreateSession(id).ok());
    v1::Session session;
    ASSERT_TRUE(GetSession(id, &session).ok());
    EXPECT_EQ(session.state_bytes(), 0) << "no batch yet";
    grpc::Status status;
    std::vector<v1::BatchAck> acks =
        Stream({BatchOfLayers(id, streams)}, &status);
    ASSERT_EQ(acks.size(), 1u);
    ASSERT_EQ(acks[0].code(), 0) << acks[0].message();
    ASSERT_TRUE(GetSession(id, &session).ok());
    EXPECT_GT(session.state_bytes(), 0);
    // Complete, and kept for the session's join window.
    EXPECT_EQ(session.batches_pending(), 1);
    state_bytes[streams] = session.state_bytes();
  }
  // One measure, one step bucket: the sums are streams² pairs of a fixed size.
  EXPECT_EQ(state_bytes[4], 4 * state_bytes[2]);
  EXPECT_EQ(state_bytes[8], 16 * state_bytes[2]);
}

TEST_F(SimilarityServiceTest, GetSessionReportsPendingBytesOfTheJoinBuffer) {
  StartServer();
  v1::SessionConfig config;
  for (const char* stream : {"m/l0", "m/l1", "other/l0"})
    config.add_streams(stream);
  ASSERT_TRUE(CreateSession("s", nullptr, config).ok());
  grpc::Status status;
  std::vector<v1::BatchAck> acks = Stream({BatchOfLayers("s", 2)}, &status);
  ASSERT_EQ(acks.size(), 1u);
  ASSERT_EQ(acks[0].code(), 0) << acks[0].message();
  v1::Session session;
  ASSERT_TRUE(GetSession("s", &session).ok());
  EXPECT_EQ(session.batches_pending(), 1);
  EXPECT_GT(session.pending_bytes(), 0);
  EXPECT_EQ(session.pending_bytes(),
            (*server_->engine().GetSession("s"))->Info().pending_bytes);
}

TEST_F(SimilarityServiceTest, BadBatchesGetTheirCodeAndTheStreamGoesOn) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  std::vector<v1::ActivationBatch> batches = Batches("s", 10);
  batches[2].mutable_layers(0)->mutable_activations()->set_dtype(
      v1::DTYPE_UNSPECIFIED);
  batches[4].set_session_id("nobody");
  batches[6].mutable_layers(1)->mutable_activations()->mutable_data()->resize(
      5);
  batches[7].mutable_layers(1)->clear_payload();
  grpc::Status status;
  std::vector<v1::BatchAck> acks = Stream(batches, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(acks.size(), 10u);
  const int expected_codes[] = {0, 0, 3, 0, 5, 0, 3, 3, 0, 0};
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(acks[i].batch_id(), absl::StrCat("b", i));
    EXPECT_EQ(acks[i].code(), expected_codes[i]) << acks[i].message();
    EXPECT_EQ(acks[i].message().empty(), expected_codes[i] == 0);
  }
  EXPECT_NE(acks[2].message().find("dtype"), std::string::npos);
  EXPECT_EQ(acks[4].session_id(), "nobody");
  v1::Session session;
  ASSERT_TRUE(GetSession("s", &session).ok());
  EXPECT_EQ(session.batches_applied(), 6);
}

TEST_F(SimilarityServiceTest, ResentBatchIsAckedAsDuplicateAndNotCountedTwice) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::Status status;
  ASSERT_EQ(Stream(Batches("s", 3), &status).size(), 3u);
  std::vector<v1::BatchAck> acks = Stream({MakeBatch("s", 1)}, &status);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].code(), 0);
  EXPECT_TRUE(acks[0].duplicate());
  v1::Session session;
  ASSERT_TRUE(GetSession("s", &session).ok());
  EXPECT_EQ(session.batches_applied(), 3);
}

TEST_F(SimilarityServiceTest, BackpressureDropsNothing) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  constexpr int kBatches = 200;
  grpc::Status status;
  std::vector<v1::BatchAck> acks = Stream(Batches("s", kBatches), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(acks.size(), static_cast<size_t>(kBatches));
  for (int i = 0; i < kBatches; ++i) {
    ASSERT_EQ(acks[i].batch_id(), absl::StrCat("b", i)) << "acks out of order";
    ASSERT_EQ(acks[i].code(), 0) << acks[i].message();
  }
  v1::Session session;
  ASSERT_TRUE(GetSession("s", &session).ok());
  EXPECT_EQ(session.batches_applied(), kBatches);
}

TEST_F(SimilarityServiceTest,
       WatchSendsAtOnceThenOnChangeAndEndsWhenTheSessionIsDeleted) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::Status status;
  ASSERT_EQ(Stream(Batches("s", 1), &status).size(), 1u);

  grpc::ClientContext context;
  SetDeadline(&context, 20);
  v1::WatchSimilarityRequest request;
  request.mutable_query()->set_session_id("s");
  request.set_min_interval_ms(50);
  auto watch = stub_->WatchSimilarity(&context, request);
  v1::SimilarityMatrix matrix;
  ASSERT_TRUE(watch->Read(&matrix));
  ASSERT_EQ(matrix.batches_size(), 4);
  EXPECT_EQ(matrix.batches(0), 1);

  std::vector<v1::ActivationBatch> more;
  for (int i = 1; i < 4; ++i) more.push_back(MakeBatch("s", i));
  ASSERT_EQ(Stream(more, &status).size(), 3u);
  // Updates may fold several changes into one; the last one seen must show all
  // four batches.
  while (matrix.batches(0) < 4) {
    ASSERT_TRUE(watch->Read(&matrix));
    ASSERT_EQ(matrix.batches_size(), 4);
  }
  EXPECT_EQ(matrix.batches(0), 4);

  ASSERT_TRUE(DeleteSession("s").ok());
  while (watch->Read(&matrix)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SimilarityServiceTest,
       WatchOfAnUnknownSessionIsNotFoundAndCancelEndsAWatch) {
  StartServer();
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::WatchSimilarityRequest request;
    request.mutable_query()->set_session_id("nobody");
    auto watch = stub_->WatchSimilarity(&context, request);
    v1::SimilarityMatrix matrix;
    EXPECT_FALSE(watch->Read(&matrix));
    EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::WatchSimilarityRequest request;
  request.mutable_query()->set_session_id("s");
  auto watch = stub_->WatchSimilarity(&context, request);
  v1::SimilarityMatrix matrix;
  ASSERT_TRUE(watch->Read(&matrix));
  context.TryCancel();
  while (watch->Read(&matrix)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(SimilarityServiceTest, HealthIsServingThenNotServingOnceShutdownBegins) {
  StartServer();
  EXPECT_EQ(CheckHealth(channel_), kServing);

  // Watch the health status, then shut down: the watch must see NOT_SERVING.
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, "/grpc.health.v1.Health/Watch", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->Write(EmptyMessage(), reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  EXPECT_EQ(DecodeHealth(response), kServing);

  const absl::Time start = absl::Now();
  std::thread shutdown([&] { server_->Shutdown(); });
  call->Read(&response, reinterpret_cast<void*>(5));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  EXPECT_EQ(DecodeHealth(response), kNotServing);
  shutdown.join();
  // The open health watch must not hold the shutdown for the whole grace period
  // (5 s).
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  // Whatever else arrives is NOT_SERVING too, until the call ends.
  while (true) {
    call->Read(&response, reinterpret_cast<void*>(6));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    if (!ok) break;
    EXPECT_EQ(DecodeHealth(response), kNotServing);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(7));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_FALSE(status.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

TEST_F(SimilarityServiceTest, ReflectionListsTheSimilarityService) {
  StartServer();
  // ServerReflectionRequest{list_services: ""} is field 7, length 0.
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof(request_bytes));
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_NE(bytes.find("cka.v1.Similarity"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
  call->Read(&response, reinterpret_cast<void*>(5));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_FALSE(ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(6));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(SimilarityServiceTest, ShutdownAcksEveryBatchItRead) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  constexpr int kBatches = 100;
  const std::vector<v1::ActivationBatch> batches = Batches("s", kBatches);
  grpc::ClientContext context;
  SetDeadline(&context, 30);
  auto stream = stub_->StreamActivations(&context);
  std::thread writer([&] {
    for (const v1::ActivationBatch& b : batches) {
      if (!stream->Write(b)) break;
    }
    // No WritesDone: the client still has more to say when the server goes
    // down.
  });
  v1::BatchAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  std::vector<v1::BatchAck> acks = {ack};
  std::thread shutdown([&] { server_->Shutdown(); });
  while (stream->Read(&ack)) acks.push_back(ack);
  const grpc::Status status = stream->Finish();
  shutdown.join();
  writer.join();

  // The stream ends as a whole-stream error (the client reconnects and resends
  // the rest); every batch the server took is acked, in order, and applied
  // exactly when acked.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  for (size_t i = 0; i < acks.size(); ++i) {
    ASSERT_EQ(acks[i].batch_id(), absl::StrCat("b", i));
    ASSERT_EQ(acks[i].code(), 0) << acks[i].message();
  }
  EXPECT_EQ((*server_->engine().GetSession("s"))->Info().batches_applied,
            static_cast<int64_t>(acks.size()));
}

TEST_F(SimilarityServiceTest, ShutdownEndsWatchesWithUnavailable) {
  StartServer();
  ASSERT_TRUE(CreateSession("s").ok());
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::WatchSimilarityRequest request;
  request.mutable_query()->set_session_id("s");
  auto watch = stub_->WatchSimilarity(&context, request);
  v1::SimilarityMatrix matrix;
  ASSERT_TRUE(watch->Read(&matrix));
  server_->Shutdown();
  while (watch->Read(&matrix)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SimilarityServiceTest, AMessageOverTheSizeLimitIsRefusedNamingTheFlag) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_message_mb = 1;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::BuildAndStart(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Similarity::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                          grpc::InsecureChannelCredentials()));
  std::mt19937 rng(7);
  // Over the limit but within twice it: the batch alone is refused in its ack
  // and the stream ends normally.
  v1::ActivationBatch big = MakeBatch("s", 0);
  RandomActivations(kExamples, 40000, &rng,  // 8 × 40000 float32 = 1.28 MB
                    big.mutable_layers(0)->mutable_activations());
  grpc::Status status;
  std::vector<v1::BatchAck> acks = StreamAll(stub.get(), {big}, &status);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0].code(),
            static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_NE(acks[0].message().find("--max-message-mb"), std::string::npos)
      << acks[0].message();
  EXPECT_TRUE(status.ok()) << status.error_message();
  // Over twice the limit: gRPC itself ends the stream.
  v1::ActivationBatch huge = MakeBatch("s", 1);
  RandomActivations(kExamples, 80000, &rng,  // 8 × 80000 float32 = 2.56 MB
                    huge.mutable_layers(0)->mutable_activations());
  acks = StreamAll(stub.get(), {huge}, &status);
  EXPECT_TRUE(acks.empty());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
}

TEST_F(SimilarityServiceTest, RestartOnTheSameDataDirAnswersExactlyAsBefore) {
  const std::string dir = NewTempDir();
  StartServer(dir);
  ASSERT_TRUE(CreateSession("kept").ok());
  ASSERT_TRUE(CreateSession("gone").ok());
  ASSERT_TRUE(CreateSession("empty").ok());
  grpc::Status status;
  ASSERT_EQ(Stream(Batches("kept", 7), &status).size(), 7u);
  ASSERT_TRUE(DeleteSession("gone").ok());
  v1::GetSimilarityRequest request;
  request.set_session_id("kept");
  v1::SimilarityMatrix before;
  ASSERT_TRUE(GetSimilarity(request, &before).ok());
  v1::Session session_before;
  ASSERT_TRUE(GetSession("kept", &session_before).ok());
  server_->Shutdown();

  StartServer(dir);
  v1::SimilarityMatrix after;
  ASSERT_TRUE(GetSimilarity(request, &after).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(before, after))
      << before.DebugString() << "\n"
      << after.DebugString();
  v1::Session session_after;
  ASSERT_TRUE(GetSession("kept", &session_after).ok());
  // Complete batches kept only for the join window are not stored (README,
  // Joining): after the restart they are gone from the join buffer.
  EXPECT_GT(session_before.batches_pending(), 0);
  EXPECT_EQ(session_after.batches_pending(), 0);
  EXPECT_EQ(session_after.pending_bytes(), 0);
  for (v1::Session* s : {&session_before, &session_after}) {
    s->clear_batches_pending();
    s->clear_pending_bytes();
    s->clear_held_bytes();
  }
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(session_before,
                                                                 session_after))
      << session_before.DebugString() << "\n"
      << session_after.DebugString();
  v1::Session empty;
  EXPECT_TRUE(GetSession("empty", &empty).ok());
  EXPECT_EQ(GetSession("gone", &empty).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // A resent batch is still known after the restart.
  std::vector<v1::BatchAck> acks = Stream({MakeBatch("kept", 3)}, &status);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_TRUE(acks[0].duplicate());
  server_.reset();
  fs::remove_all(dir);
}

TEST_F(SimilarityServiceTest, ADamagedDatabaseStopsTheStart) {
  const std::string dir = NewTempDir();
  StartServer(dir);
  ASSERT_TRUE(CreateSession("s").ok());
  server_->Shutdown();
  server_.reset();
  // Page 2 (of 4096 bytes) is the root of the sessions table: garbage there is
  // what a torn or bit-rotted disk block looks like to SQLite.
  const std::string file = dir + "/ckad.db";
  ASSERT_GE(fs::file_size(file), 3 * 4096u);
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(4096);
  f << std::string(4096, '\xab');
  f.close();

  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::BuildAndStart(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(server.status().message()).find(file),
            std::string::npos)
      << server.status();
  EXPECT_NE(std::string(server.status().message()).find("refuses to start"),
            std::string::npos)
      << server.status();
  fs::remove_all(dir);
}

TEST_F(SimilarityServiceTest, BadListenAddressesAreRefused) {
  StartServer();
  ServerOptions options;
  options.listen = "127.0.0.1";
  EXPECT_EQ(Server::BuildAndStart(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.listen = absl::StrCat("127.0.0.1:", server_->port());  // taken
  EXPECT_EQ(Server::BuildAndStart(options).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cka::server
