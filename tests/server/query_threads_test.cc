// SimilarityServiceImpl answers queries on threads of their own: with every
// batch worker held, GetSimilarity and WatchSimilarity still answer.
#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
#include "cka/core/engine.h"
#include "cka/core/thread_pool.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/similarity_service_impl.h"

namespace cka::server {
namespace {

constexpr int kExamples = 8;

// Ingests one batch of layers a (d = 5) and b (d = 3) into `session` directly.
void IngestOneBatch(core::Session& session) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> a(kExamples * 5), b(kExamples * 3);
  for (float& v : a) v = normal(rng);
  for (float& v : b) v = normal(rng);
  core::BatchInput batch;
  batch.batch_id = "b0";
  batch.layers.push_back(
      {"a",
       core::LayerInput::Kind::kActivations,
       {{kExamples, 5}, core::DType::kFloat32, a.data(), a.size() * 4}});
  batch.layers.push_back(
      {"b",
       core::LayerInput::Kind::kActivations,
       {{kExamples, 3}, core::DType::kFloat32, b.data(), b.size() * 4}});
  ASSERT_TRUE(session.Ingest(batch, nullptr).ok());
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(10));
}

TEST(QueryThreadsTest, QueriesAreAnsweredWhileEveryBatchWorkerIsBusy) {
  core::Engine engine;
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      engine.CreateSession("s", core::SessionConfig{});
  ASSERT_TRUE(session.ok()) << session.status();
  IngestOneBatch(**session);
  absl::StatusOr<core::SimilarityMatrix> expected =
      (*session)->Query(core::SimilarityQuery{});
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->values.size(), 4u);

  // The only batch worker stays busy until the end of the test (also when an
  // assertion ends it early: the pool's destructor waits for the worker).
  absl::Notification release;
  core::ThreadPool batch_pool(1);
  absl::Cleanup released = [&] {
    if (!release.HasBeenNotified()) release.Notify();
  };
  batch_pool.Schedule([&] { release.WaitForNotification(); });
  core::ThreadPool query_pool(1);
  SimilarityServiceImpl service(&engine, &batch_pool, &query_pool,
                                /*committer=*/nullptr);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  absl::Cleanup stopped = [&] {
    if (!release.HasBeenNotified()) release.Notify();
    service.BeginShutdown();
    server->Shutdown();
    server->Wait();
    service.WaitForReactors();
  };
  std::unique_ptr<v1::Similarity::Stub> stub = v1::Similarity::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                          grpc::InsecureChannelCredentials()));

  v1::GetSimilarityRequest request;
  request.set_session_id("s");
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::SimilarityMatrix matrix;
    const grpc::Status status = stub->GetSimilarity(&context, request, &matrix);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(matrix.values_size(), 4);
    for (int e = 0; e < 4; ++e) {
      EXPECT_EQ(matrix.values(e), expected->values[e]) << "entry " << e;
    }
  }
  {
    v1::WatchSimilarityRequest watch_request;
    *watch_request.mutable_query() = request;
    grpc::ClientContext context;
    SetDeadline(&context);
    std::unique_ptr<grpc::ClientReader<v1::SimilarityMatrix>> watch =
        stub->WatchSimilarity(&context, watch_request);
    v1::SimilarityMatrix first;
    ASSERT_TRUE(watch->Read(&first));
    ASSERT_EQ(first.values_size(), 4);
    EXPECT_EQ(first.values(1), expected->values[1]);
    context.TryCancel();
    v1::SimilarityMatrix more;
    while (watch->Read(&more)) {
    }
    EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
}

}  // namespace
}  // namespace cka::server
