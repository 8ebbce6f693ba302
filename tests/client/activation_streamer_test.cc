#include "cka/client/activation_streamer.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <Eigen/Core>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "cka/client/client.h"
#include "fake_similarity_service.h"

namespace cka::client {
namespace {

using cka::testing::FakeServer;
using Rows =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Generous: these are waits for a local server, not performance assertions.
absl::Time Soon() { return absl::Now() + absl::Seconds(20); }

std::unique_ptr<Client> MakeClient(const std::string& address,
                                   int64_t max_message_bytes = 0) {
  ClientOptions options;
  options.server = address;
  if (max_message_bytes > 0) options.max_message_bytes = max_message_bytes;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return *std::move(client);
}

std::unique_ptr<ActivationStreamer> MakeStreamer(const Client& client,
                                                 StreamerOptions options = {}) {
  if (options.session_id.empty()) options.session_id = "s";
  if (options.source.empty()) options.source = "model";
  options.initial_backoff = absl::Milliseconds(10);
  options.max_backoff = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<ActivationStreamer>> streamer =
      ActivationStreamer::Create(client, options);
  EXPECT_TRUE(streamer.ok()) << streamer.status();
  return *std::move(streamer);
}

Batch SmallBatch(const std::string& id, int n = 4, int d = 3) {
  Batch batch(id, 7);
  const Eigen::MatrixXf x = Eigen::MatrixXf::Random(n, d);
  batch.AddActivations("fc", x);
  return batch;
}

// A name that is not UTF-8 would make the whole message unparseable for the
// server (protobuf strings), so the streamer refuses it before it is queued.
TEST(ActivationStreamerTest, NamesThatAreNotUtf8AreRefusedBeforeSending) {
  std::unique_ptr<Client> client = MakeClient("127.0.0.1:1");
  const std::string bad = "run\xff\xfe";
  for (const char* field : {"session_id", "source"}) {
    StreamerOptions options;
    options.session_id = std::string(field) == "session_id" ? bad : "s";
    options.source = std::string(field) == "source" ? bad : "model";
    absl::StatusOr<std::unique_ptr<ActivationStreamer>> streamer =
        ActivationStreamer::Create(*client, options);
    ASSERT_FALSE(streamer.ok()) << field;
    EXPECT_EQ(streamer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(streamer.status().message().find(field), std::string::npos)
        << streamer.status();
    EXPECT_NE(streamer.status().message().find("UTF-8"), std::string::npos);
  }
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  absl::Status id = streamer->Submit(SmallBatch(bad));
  EXPECT_EQ(id.code(), absl::StatusCode::kInvalidArgument) << id;
  EXPECT_NE(id.message().find("batch_id"), std::string::npos) << id;
  Batch layer("b0", 1);
  layer.AddActivations(bad, Eigen::MatrixXf::Random(4, 3));
  absl::Status named = streamer->Submit(std::move(layer));
  EXPECT_EQ(named.code(), absl::StatusCode::kInvalidArgument) << named;
  EXPECT_NE(named.message().find("layer"), std::string::npos) << named;
}

TEST(ActivationStreamerTest,
     SendsBatchesInOrderWithRowMajorBytesAndCollectsAcks) {
  FakeServer server;
  std::unique_ptr<Client> client = MakeClient(server.address());
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  // A column-major Eigen matrix must arrive row-major: row i = example i.
  Eigen::MatrixXd x(2, 3);
  x << 1, 2, 3, 4, 5, 6;
  Batch first("b0", 3);
  first.AddActivations("conv", x);
  ASSERT_TRUE(streamer->Submit(std::move(first)).ok());
  for (int i = 1; i < 5; ++i)
    ASSERT_TRUE(streamer->Submit(SmallBatch(absl::StrCat("b", i))).ok());

  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty());
  const StreamerStats stats = streamer->stats();
  EXPECT_EQ(stats.submitted, 5);
  EXPECT_EQ(stats.acked, 5);
  EXPECT_EQ(stats.sent, 5);
  EXPECT_EQ(stats.rejected, 0);

  const std::vector<v1::ActivationBatch> received = server.service.received();
  ASSERT_EQ(received.size(), 5u);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(received[i].batch_id(), absl::StrCat("b", i));
  const v1::ActivationBatch& b0 = received[0];
  EXPECT_EQ(b0.session_id(), "s");
  EXPECT_EQ(b0.source(), "model");
  EXPECT_EQ(b0.step(), 3);
  ASSERT_EQ(b0.layers_size(), 1);
  const v1::Tensor& t = b0.layers(0).activations();
  EXPECT_EQ(t.dtype(), v1::FLOAT64);
  EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()),
            (std::vector<int64_t>{2, 3}));
  const double expected[] = {1, 2, 3, 4, 5, 6};
  ASSERT_EQ(t.data().size(), sizeof(expected));
  EXPECT_EQ(std::memcmp(t.data().data(), expected, sizeof(expected)), 0);
}

TEST(ActivationStreamerTest,
     RejectedBatchIsReportedByFlushAndLaterBatchesAreApplied) {
  FakeServer server;
  server.service.RejectBatch("b2", grpc::StatusCode::INVALID_ARGUMENT,
                             "layer 'fc': NaN");
  std::unique_ptr<Client> client = MakeClient(server.address());
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(streamer->Submit(SmallBatch(absl::StrCat("b", i))).ok());
  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_EQ((*errors)[0].batch_id, "b2");
  EXPECT_EQ((*errors)[0].code, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*errors)[0].message, "layer 'fc': NaN");
  EXPECT_EQ(streamer->stats().acked, 4);
  EXPECT_EQ(streamer->stats().rejected, 1);
  EXPECT_EQ(server.service.applied(), 4);
  // The errors were handed over once.
  errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok());
  EXPECT_TRUE(errors->empty());
}

TEST(ActivationStreamerTest, LostAckIsResentOnANewStreamAndCountedAsDuplicate) {
  FakeServer server;
  server.service.BreakNextStreamAfter(
      2);  // b1 is applied but its ack never arrives
  std::unique_ptr<Client> client = MakeClient(server.address());
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(streamer->Submit(SmallBatch(absl::StrCat("b", i))).ok());
  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty());
  const StreamerStats stats = streamer->stats();
  EXPECT_EQ(stats.acked, 4);
  EXPECT_GE(stats.reconnects, 1);
  EXPECT_GE(stats.resent, 1);
  // b1 always comes back as a duplicate; b0 too when the broken stream lost
  // its ack before the client read it (a race the test must not depend on).
  // Every batch the server received again is counted, and none is applied
  // twice.
  EXPECT_GE(stats.duplicates, 1);
  EXPECT_EQ(stats.duplicates,
            static_cast<int64_t>(server.service.received().size()) - 4);
  EXPECT_EQ(server.service.applied(), 4);
  EXPECT_GE(server.service.streams_opened(), 2);
}

TEST(ActivationStreamerTest, BrokenStreamResendsEveryUnackedBatch) {
  FakeServer server;
  std::unique_ptr<Client> client = MakeClient(server.address());
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  streamer->DiscardAcksForTesting(true);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(streamer->Submit(SmallBatch(absl::StrCat("b", i))).ok());
  const absl::Time give_up = Soon();
  while (server.service.applied() < 3 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(server.service.applied(), 3);
  streamer->BreakStreamForTesting();
  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty());
  EXPECT_EQ(streamer->stats().duplicates, 3);
  EXPECT_EQ(streamer->stats().resent, 3);
  EXPECT_EQ(server.service.applied(), 3);
}

// Port 1 on localhost refuses connections: nothing is ever acked.
constexpr char kNowhere[] = "127.0.0.1:1";

TEST(ActivationStreamerTest,
     DropPolicyRefusesBatchesOverTheBoundAndCountsThem) {
  std::unique_ptr<Client> client = MakeClient(kNowhere);
  StreamerOptions options;
  options.policy = QueuePolicy::kDropAndCount;
  options.max_queue_batches = 2;
  options.max_in_flight = 1;
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client, options);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    absl::Status status = streamer->Submit(SmallBatch(absl::StrCat("b", i)));
    if (status.ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
      ++refused;
    }
  }
  // The queue holds 2 and at most one more is out on the (failing) stream.
  EXPECT_GE(accepted, 2);
  EXPECT_LE(accepted, 3);
  EXPECT_EQ(streamer->stats().dropped, refused);
  EXPECT_EQ(streamer->stats().submitted, accepted);
  absl::StatusOr<std::vector<BatchError>> flushed =
      streamer->Flush(absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(flushed.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ActivationStreamerTest, BlockPolicyWaitsForRoomAndCloseReleasesTheWaiter) {
  std::unique_ptr<Client> client = MakeClient(kNowhere);
  StreamerOptions options;
  options.policy = QueuePolicy::kBlock;
  options.max_queue_batches = 1;
  options.max_in_flight = 1;
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client, options);
  ASSERT_TRUE(streamer->Submit(SmallBatch("b0")).ok());
  ASSERT_TRUE(streamer->Submit(SmallBatch("b1")).ok());
  // Now one batch is out (or about to be) and one is queued: the next Submit
  // has to wait.
  absl::SleepFor(absl::Milliseconds(50));
  std::atomic<bool> returned{false};
  absl::Status blocked_status;
  std::thread blocked([&] {
    blocked_status = streamer->Submit(SmallBatch("b2"));
    returned = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(returned.load());
  absl::StatusOr<std::vector<BatchError>> closed = streamer->Close(absl::Now());
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kDeadlineExceeded);
  blocked.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(blocked_status.code(), absl::StatusCode::kFailedPrecondition)
      << blocked_status;
  EXPECT_EQ(streamer->Submit(SmallBatch("b3")).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ActivationStreamerTest,
     OversizedBatchIsRefusedBySubmitNamingSizeAndLimit) {
  std::unique_ptr<Client> client = MakeClient(kNowhere, int64_t{1} << 20);
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  Batch batch("big");
  batch.AddActivations("fc", std::vector<float>(512 * 1024),
                       {512, 1024});  // 2 MiB
  const absl::Status status = streamer->Submit(std::move(batch));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("1048576"), std::string::npos) << status;
  EXPECT_NE(status.message().find("2097"), std::string::npos) << status;
  EXPECT_NE(status.message().find("'big'"), std::string::npos) << status;
  EXPECT_EQ(streamer->stats().submitted, 0);
}

TEST(ActivationStreamerTest,
     TwoHundredMegabyteLayerFailsAtOnceUnderTheDefaultLimit) {
  std::unique_ptr<Client> client = MakeClient(kNowhere);
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  Batch batch("huge");
  batch.AddActivations("fc", std::string(size_t{200} << 20, '\0'),
                       {1024, 51200}, v1::FLOAT32);
  const absl::Time start = absl::Now();
  const absl::Status status = streamer->Submit(std::move(batch));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("67108864"), std::string::npos) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  absl::StatusOr<std::vector<BatchError>> flushed =
      streamer->Flush(absl::Now());
  ASSERT_TRUE(flushed.ok())
      << flushed.status();  // nothing was accepted, nothing waits
}

struct BadBatchCase {
  const char* name;
  std::function<Batch()> make;
  const char* expected_in_message;
};

class ActivationStreamerBadBatchTest
    : public ::testing::TestWithParam<BadBatchCase> {};

TEST_P(ActivationStreamerBadBatchTest, IsInvalidArgumentAtSubmit) {
  std::unique_ptr<Client> client = MakeClient(kNowhere);
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  const absl::Status status = streamer->Submit(GetParam().make());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(GetParam().expected_in_message),
            std::string::npos)
      << status;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ActivationStreamerBadBatchTest,
    ::testing::Values(
        BadBatchCase{"EmptyBatchId", [] { return SmallBatch(""); }, "batch_id"},
        BadBatchCase{"NoLayers", [] { return Batch("b"); }, "no layers"},
        BadBatchCase{"RankOne",
                     [] {
                       Batch b("b");
                       b.AddActivations("fc", std::vector<float>(4), {4});
                       return b;
                     },
                     "rank >= 2"},
        BadBatchCase{"BytesDoNotMatchShape",
                     [] {
                       Batch b("b");
                       b.AddActivations("fc", std::vector<float>(5), {2, 3});
                       return b;
                     },
                     "20 bytes, but shape [2, 3] needs 24"},
        BadBatchCase{"UnknownDType",
                     [] {
                       Batch b("b");
                       b.AddActivations("fc", std::string(8, '\0'), {2, 2},
                                        v1::DTYPE_UNSPECIFIED);
                       return b;
                     },
                     "dtype"},
        BadBatchCase{"NonSquareGram",
                     [] {
                       Batch b("b");
                       float k[6] = {};
                       b.AddActivations("fc", k, {2, 3}, v1::FLOAT32);
                       b.mutable_layers()[0].is_gram = true;
                       return b;
                     },
                     "Gram shape"}),
    [](const ::testing::TestParamInfo<BadBatchCase>& info) {
      return info.param.name;
    });

TEST(BatchTest, RvalueOverloadsTakeOwnershipWithoutCopying) {
  Batch batch("b");
  std::vector<float> values(64 * 32, 1.0f);
  const float* vector_data = values.data();
  batch.AddActivations("v", std::move(values), {64, 32});
  std::string bytes(64 * 32 * 4, 'x');
  const char* string_data = bytes.data();
  batch.AddActivations("s", std::move(bytes), {64, 32}, v1::FLOAT32);
  Rows m = Rows::Ones(64, 32);
  const float* matrix_data = m.data();
  batch.AddActivations("m", std::move(m));
  ASSERT_EQ(batch.layers().size(), 3u);
  EXPECT_EQ(batch.layers()[0].bytes.data(),
            reinterpret_cast<const char*>(vector_data));
  EXPECT_EQ(batch.layers()[1].bytes.data(), string_data);
  EXPECT_EQ(batch.layers()[2].bytes.data(),
            reinterpret_cast<const char*>(matrix_data));
  EXPECT_EQ(batch.layers()[2].dtype, v1::FLOAT32);
  EXPECT_EQ(batch.layers()[2].shape, (std::vector<int64_t>{64, 32}));
}

TEST(BatchTest, EigenScalarTypesMapToWireDTypes) {
  Batch batch("b");
  const Eigen::Matrix<Eigen::half, 2, 3> h =
      Eigen::Matrix<Eigen::half, 2, 3>::Constant(Eigen::half(1.5f));
  const Eigen::Matrix<Eigen::bfloat16, 2, 3> bf =
      Eigen::Matrix<Eigen::bfloat16, 2, 3>::Constant(Eigen::bfloat16(-2.0f));
  batch.AddActivations("h", h)
      .AddActivations("bf", bf)
      .AddActivations("f", Eigen::MatrixXf::Zero(2, 3))
      .AddActivations("d", Eigen::MatrixXd::Zero(2, 3));
  ASSERT_EQ(batch.layers().size(), 4u);
  EXPECT_EQ(batch.layers()[0].dtype, v1::FLOAT16);
  EXPECT_EQ(batch.layers()[1].dtype, v1::BFLOAT16);
  EXPECT_EQ(batch.layers()[2].dtype, v1::FLOAT32);
  EXPECT_EQ(batch.layers()[3].dtype, v1::FLOAT64);
  EXPECT_EQ(batch.layers()[0].bytes.size(), 12u);
  uint16_t first = 0;
  std::memcpy(&first, batch.layers()[0].bytes.data(), 2);
  EXPECT_EQ(first, 0x3e00);  // 1.5 in IEEE half
  std::memcpy(&first, batch.layers()[1].bytes.data(), 2);
  EXPECT_EQ(first, 0xc000);  // -2.0 in bfloat16
}

// The float64 Gram of a row-major n × d float32 matrix.
Eigen::MatrixXd ReferenceGram(const Rows& x) {
  const Eigen::MatrixXd xd = x.cast<double>();
  return xd * xd.transpose();
}

TEST(ActivationStreamerTest, GramReductionSendsTheFloat32GramOfWideLayersOnly) {
  FakeServer server;
  v1::Measure linear;
  linear.set_name("linear");
  server.service.SetMeasures({linear});
  std::unique_ptr<Client> client = MakeClient(server.address());
  StreamerOptions options;
  options.reduce_to_gram = true;
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client, options);
  const Rows wide = Rows::Random(6, 40);
  const Rows narrow = Rows::Random(6, 3);
  Batch batch("b0");
  batch.AddActivations("wide", wide).AddActivations("narrow", narrow);
  ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
  ASSERT_TRUE(streamer->Flush(Soon()).ok());
  EXPECT_EQ(streamer->stats().gram_reduced_layers, 1);

  const std::vector<v1::ActivationBatch> received = server.service.received();
  ASSERT_EQ(received.size(), 1u);
  ASSERT_EQ(received[0].layers_size(), 2);
  const v1::LayerActivation& w = received[0].layers(0);
  ASSERT_TRUE(w.has_gram());
  EXPECT_EQ(w.gram().dtype(), v1::FLOAT32);
  EXPECT_EQ(
      std::vector<int64_t>(w.gram().shape().begin(), w.gram().shape().end()),
      (std::vector<int64_t>{6, 6}));
  ASSERT_EQ(w.gram().data().size(), 36u * 4);
  Rows k(6, 6);
  std::memcpy(k.data(), w.gram().data().data(), 36 * 4);
  const Eigen::MatrixXd reference = ReferenceGram(wide);
  // float32 accumulation over 40 terms of magnitude <= 1: a few ulps of the
  // largest entry.
  EXPECT_LT((k.cast<double>() - reference).cwiseAbs().maxCoeff(),
            1e-5 * reference.cwiseAbs().maxCoeff());
  EXPECT_EQ(k, k.transpose()) << "a Gram must be exactly symmetric";
  EXPECT_TRUE(received[0].layers(1).has_activations());
}

TEST(ActivationStreamerTest, GramReductionIsOffForSessionsWithAnExactMeasure) {
  FakeServer server;
  v1::Measure exact;
  exact.set_name("exact");
  exact.set_estimator(v1::EXACT);
  server.service.SetMeasures({exact});
  std::unique_ptr<Client> client = MakeClient(server.address());
  StreamerOptions options;
  options.reduce_to_gram = true;
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client, options);
  Batch batch("b0");
  batch.AddActivations("wide", Rows::Random(6, 40));
  ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
  ASSERT_TRUE(streamer->Flush(Soon()).ok());
  const std::vector<v1::ActivationBatch> received = server.service.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_TRUE(received[0].layers(0).has_activations());
  EXPECT_EQ(streamer->stats().gram_reduced_layers, 0);
}

TEST(ActivationStreamerTest, CloseDeliversEverythingAndEndsTheStreamCleanly) {
  FakeServer server;
  std::unique_ptr<Client> client = MakeClient(server.address());
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(streamer->Submit(SmallBatch(absl::StrCat("b", i))).ok());
  absl::StatusOr<std::vector<BatchError>> closed = streamer->Close(Soon());
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(server.service.applied(), 20);
  EXPECT_EQ(streamer->stats().reconnects, 0);
  EXPECT_TRUE(streamer->Close(Soon()).ok());  // idempotent
}

#if defined(__linux__)
// The number of this process's threads in scheduling class SCHED_BATCH
// (/proc/self/task/<tid>/stat, field 41, "policy"; SCHED_BATCH is 3).
int ThreadsInSchedBatch() {
  int count = 0;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    // The command name (field 2) is in parentheses and may hold spaces.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 41 && fields >> field; ++i) {
      if (i == 41 && field == "3") ++count;
    }
  }
  return count;
}

TEST(ActivationStreamerTest, ItsBackgroundThreadsDoNotPreemptTheTrainingLoop) {
  FakeServer server;
  std::unique_ptr<Client> client = MakeClient(server.address());
  const int before = ThreadsInSchedBatch();
  std::unique_ptr<ActivationStreamer> streamer = MakeStreamer(*client);
  ASSERT_TRUE(streamer->Submit(SmallBatch("b0")).ok());
  absl::StatusOr<std::vector<BatchError>> flushed = streamer->Flush(Soon());
  ASSERT_TRUE(flushed.ok()) << flushed.status();
  // The sender and, while a stream is open, its ack reader.
  EXPECT_EQ(ThreadsInSchedBatch(), before + 2);
  // The caller's own thread keeps its class.
  EXPECT_EQ(sched_getscheduler(0), SCHED_OTHER);
  ASSERT_TRUE(streamer->Close(Soon()).ok());
  streamer.reset();
  EXPECT_EQ(ThreadsInSchedBatch(), before);
}
#endif

TEST(ClientTest, CallsToAServerThatIsNotThereFailWithUnavailable) {
  ClientOptions options;
  options.server = kNowhere;
  options.default_deadline = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->ListSessions().status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->Health().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(ClientTest, CreateRejectsBadOptions) {
  ClientOptions options;
  options.server = "";
  EXPECT_EQ(Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.server = "127.0.0.1:1";
  options.default_deadline = absl::ZeroDuration();
  EXPECT_EQ(Client::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cka::client
