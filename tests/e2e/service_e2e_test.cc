// The real server in-process on 127.0.0.1:0 and the real client library, over
// gRPC.
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cka/client/activation_streamer.h"
#include "cka/client/client.h"
#include "cka/core/engine.h"
#include "cka/core/measures/cka_standard_error.h"
#include "cka/server/server.h"
#include "reference_cka.h"
#include "test_util.h"

namespace cka::testing {
namespace {

using client::ActivationStreamer;
using client::Batch;
using client::BatchError;
using client::StreamerOptions;

absl::Time Soon() { return absl::Now() + absl::Seconds(30); }

// Returns the delta-method standard error of CKA(s, t) (core/MATH.md,
// "Standard error of a minibatch CKA entry") from the reference's per-batch
// HSIC values of the batches holding both streams.
double ReferenceStandardError(const std::vector<ReferenceBatch>& batches,
                              const std::string& s, const std::string& t,
                              bool unbiased) {
  core::CkaBatchSums sums;
  for (const ReferenceBatch& batch : batches) {
    auto x = batch.find(s), y = batch.find(t);
    if (x == batch.end() || y == batch.end()) continue;
    const std::vector<double> k = ReferenceGram(x->second);
    const std::vector<double> l = ReferenceGram(y->second);
    const int n = x->second.n;
    auto hsic = [&](const std::vector<double>& p,
                    const std::vector<double>& q) {
      return unbiased ? ReferenceHsicUnbiased(p, q, n)
                      : ReferenceHsicBiased(p, q, n);
    };
    sums.Add(hsic(k, l), hsic(k, k), hsic(l, l));
  }
  return core::CkaStandardError(sums);
}

v1::Measure MakeMeasure(const std::string& name, v1::Estimator estimator,
                        v1::Kernel kernel = v1::LINEAR, double threshold = 0) {
  v1::Measure m;
  m.set_name(name);
  m.set_kernel(kernel);
  m.set_estimator(estimator);
  m.set_rbf_threshold(threshold);
  return m;
}

// Returns the index of `name` in `names`, or -1.
int IndexOf(const google::protobuf::RepeatedPtrField<std::string>& names,
            const std::string& name) {
  for (int i = 0; i < names.size(); ++i) {
    if (names[i] == name) return i;
  }
  return -1;
}

class ServiceE2eTest : public ServerTest {
 protected:
  std::unique_ptr<ActivationStreamer> Streamer(const std::string& session,
                                               const std::string& source,
                                               bool reduce_to_gram = false) {
    StreamerOptions options;
    options.session_id = session;
    options.source = source;
    options.reduce_to_gram = reduce_to_gram;
    options.initial_backoff = absl::Milliseconds(20);
    options.max_backoff = absl::Milliseconds(200);
    absl::StatusOr<std::unique_ptr<ActivationStreamer>> s =
        ActivationStreamer::Create(*client_, options);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  // Creates session `id` (declared `streams`, or none with a join window of
  // `join_window` batches, 0 = the default).
  void CreateSession(const std::string& id, std::vector<v1::Measure> measures,
                     std::vector<std::string> streams = {},
                     int64_t join_window = 0) {
    v1::SessionConfig config;
    for (v1::Measure& m : measures) *config.add_measures() = std::move(m);
    for (const std::string& s : streams) config.add_streams(s);
    config.set_join_window(join_window);
    absl::StatusOr<v1::Session> s = client_->CreateSession(id, config);
    ASSERT_TRUE(s.ok()) << s.status();
  }

  // Sends `batches` (stream names "source/layer") from one streamer per source,
  // as float64 (or float32 when `as_float32`), and expects every batch acked
  // without error.
  void SendBatches(const std::string& session,
                   const std::vector<ReferenceBatch>& batches,
                   bool as_float32 = false, bool reduce_to_gram = false) {
    std::map<std::string, std::unique_ptr<ActivationStreamer>> streamers;
    for (size_t b = 0; b < batches.size(); ++b) {
      std::map<std::string, Batch> per_source;
      for (const auto& [stream, a] : batches[b]) {
        const std::string source = stream.substr(0, stream.find('/'));
        const std::string layer = stream.substr(stream.find('/') + 1);
        auto it =
            per_source.try_emplace(source, absl::StrCat("b", b), 100 + b).first;
        if (as_float32) {
          it->second.AddActivations(layer, ToFloat(a), {a.n, a.d});
        } else {
          it->second.AddActivations(layer, std::vector<double>(a.x),
                                    {a.n, a.d});
        }
      }
      for (auto& [source, batch] : per_source) {
        auto& streamer = streamers[source];
        if (streamer == nullptr)
          streamer = Streamer(session, source, reduce_to_gram);
        ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
      }
    }
    for (auto& [source, streamer] : streamers) {
      absl::StatusOr<std::vector<BatchError>> errors = streamer->Close(Soon());
      ASSERT_TRUE(errors.ok()) << errors.status();
      for (const BatchError& e : *errors)
        ADD_FAILURE() << e.batch_id << ": " << e.message;
    }
  }
};

const std::vector<std::string> kThreeStreams = {"a/l1", "a/l2", "b/m1"};

// Three streams: two layers of model a (the second related to the first) and
// one layer of model b (related to a/l1), over `count` batches of `n` examples.
std::vector<ReferenceBatch> ThreeStreams(int count, int n = 12,
                                         unsigned seed = 1) {
  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < count; ++b) {
    const Activations l1 = RandomActivations(n, 5, seed + 10 * b);
    ReferenceBatch batch;
    batch["a/l1"] = l1;
    batch["a/l2"] = RandomActivations(n, 8, seed + 10 * b + 1, &l1, 1.5);
    batch["b/m1"] = RandomActivations(n, 6, seed + 10 * b + 2, &l1, 0.7);
    batches.push_back(std::move(batch));
  }
  return batches;
}

TEST_F(ServiceE2eTest, EveryUnaryRpcAnswersWithTheDocumentedCodes) {
  v1::SessionConfig config;
  *config.add_measures() = MakeMeasure("lin", v1::UNBIASED);
  config.set_step_bucket(10);
  absl::StatusOr<v1::Session> created = client_->CreateSession("s1", config);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->session_id(), "s1");
  EXPECT_EQ(created->config().step_bucket(), 10);
  // Idempotent for the same config; AlreadyExists for another.
  EXPECT_TRUE(client_->CreateSession("s1", config).ok());
  v1::SessionConfig other = config;
  other.set_step_bucket(20);
  EXPECT_EQ(client_->CreateSession("s1", other).status().code(),
            absl::StatusCode::kAlreadyExists);
  v1::SessionConfig bad;
  *bad.add_measures() = MakeMeasure("r", v1::UNBIASED, v1::RBF, -1.0);
  absl::Status bad_status = client_->CreateSession("s2", bad).status();
  EXPECT_EQ(bad_status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(bad_status.message().empty());

  absl::StatusOr<v1::Session> got = client_->GetSession("s1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->config().measures(0).name(), "lin");
  absl::StatusOr<std::vector<v1::Session>> listed = client_->ListSessions();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].session_id(), "s1");

  v1::GetSimilarityRequest query;
  query.set_session_id("s1");
  absl::StatusOr<v1::SimilarityMatrix> empty = client_->GetSimilarity(query);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->rows_size(), 0);
  query.set_measure("nope");
  EXPECT_EQ(client_->GetSimilarity(query).status().code(),
            absl::StatusCode::kNotFound);

  EXPECT_TRUE(client_->DeleteSession("s1").ok());
  EXPECT_EQ(client_->GetSession("s1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DeleteSession("s1").code(), absl::StatusCode::kNotFound);
  query.set_measure("");
  EXPECT_EQ(client_->GetSimilarity(query).status().code(),
            absl::StatusCode::kNotFound);
}

// Two jobs stream into a session without declared streams, the second after
// the first has sent (and had acknowledged) all its batches: within the join
// window every common batch counts, and the matrix is the reference's; with a
// window smaller than the delay the pairs that could not be joined are
// counted in pairs_missed, never silently lost.
TEST_F(ServiceE2eTest, LateSecondJobWithoutDeclaredStreamsJoinsOrIsCounted) {
  const std::vector<ReferenceBatch> batches = ThreeStreams(8);
  struct Case {
    const char* session;
    int64_t join_window;
    int64_t pairs_missed;  // (8 − window) batches × 2 layers of a × 1 of b
    int64_t cross_batches;
  };
  for (const Case& c : {Case{"late-default-window", 0, 0, 8},
                        Case{"late-window-2", 2, 12, 2}}) {
    SCOPED_TRACE(c.session);
    CreateSession(c.session, {MakeMeasure("linear", v1::UNBIASED)}, {},
                  c.join_window);
    for (const std::string source : {"a", "b"}) {
      std::vector<ReferenceBatch> own;
      for (const ReferenceBatch& batch : batches) {
        ReferenceBatch mine;
        for (const auto& [stream, a] : batch) {
          if (absl::StartsWith(stream, source + "/")) mine[stream] = a;
        }
        own.push_back(std::move(mine));
      }
      SendBatches(c.session, own);  // returns once every batch is acked
    }
    absl::StatusOr<v1::Session> info = client_->GetSession(c.session);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->pairs_missed(), c.pairs_missed);
    v1::GetSimilarityRequest query;
    query.set_session_id(c.session);
    for (const std::string& s : kThreeStreams) {
      query.add_rows(s);
      query.add_cols(s);
    }
    absl::StatusOr<v1::SimilarityMatrix> m = client_->GetSimilarity(query);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->batches(0 * 3 + 2), c.cross_batches);  // a/l1 × b/m1
    EXPECT_EQ(m->batches(0 * 3 + 1), 8);                // a/l1 × a/l2
    if (c.pairs_missed == 0) {
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
          const double reference = ReferenceMinibatchCka(
              batches, kThreeStreams[i], kThreeStreams[j], true);
          EXPECT_NEAR(m->values(i * 3 + j), reference,
                      1e-10 * std::abs(reference))
              << kThreeStreams[i] << " x " << kThreeStreams[j];
        }
      }
    }
  }
}

TEST_F(ServiceE2eTest, MatrixOverGrpcEqualsTheEngineAndAFloat64Reference) {
  CreateSession("s",
                {MakeMeasure("unbiased", v1::UNBIASED),
                 MakeMeasure("biased", v1::BIASED)},
                kThreeStreams);
  const std::vector<ReferenceBatch> batches = ThreeStreams(3);
  SendBatches("s", batches);

  for (const char* measure : {"unbiased", "biased"}) {
    SCOPED_TRACE(measure);
    v1::GetSimilarityRequest query;
    query.set_session_id("s");
    query.set_measure(measure);
    absl::StatusOr<v1::SimilarityMatrix> wire = client_->GetSimilarity(query);
    ASSERT_TRUE(wire.ok()) << wire.status();
    ASSERT_EQ(wire->rows_size(), 3);
    ASSERT_EQ(wire->cols_size(), 3);
    ASSERT_EQ(wire->values_size(), 9);

    absl::StatusOr<std::shared_ptr<core::Session>> session =
        server_->engine().GetSession("s");
    ASSERT_TRUE(session.ok());
    core::SimilarityQuery core_query;
    core_query.measure = measure;
    absl::StatusOr<core::SimilarityMatrix> engine =
        (*session)->Query(core_query);
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ(engine->values.size(), 9u);

    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        const int k = i * 3 + j;
        // gRPC carries doubles bit for bit: the wire answer is the engine's
        // answer.
        EXPECT_EQ(wire->values(k), engine->values[k]);
        EXPECT_EQ(wire->rows(i), engine->rows[i]);
        EXPECT_EQ(wire->batches(k), 3);
        const double reference =
            ReferenceMinibatchCka(batches, wire->rows(i), wire->cols(j),
                                  std::string(measure) == "unbiased");
        // float64 activations, float64 Grams on both sides: only summation
        // order differs.
        EXPECT_NEAR(wire->values(k), reference, 1e-10 * std::abs(reference))
            << wire->rows(i) << " x " << wire->cols(j);
        // The standard error too, bit for bit from the engine (NaN included)
        // and, off the diagonal (where it is 0 up to rounding), near the
        // reference's: the covariances from raw sums lose a few digits.
        ASSERT_EQ(wire->standard_errors_size(), 9);
        EXPECT_EQ(std::isnan(wire->standard_errors(k)),
                  std::isnan(engine->standard_errors[k]));
        if (!std::isnan(engine->standard_errors[k])) {
          EXPECT_EQ(wire->standard_errors(k), engine->standard_errors[k]);
        }
        if (i != j) {
          const double se =
              ReferenceStandardError(batches, wire->rows(i), wire->cols(j),
                                     std::string(measure) == "unbiased");
          EXPECT_GT(se, 0.0);
          EXPECT_NEAR(wire->standard_errors(k), se, 1e-6 * se)
              << wire->rows(i) << " x " << wire->cols(j);
        }
      }
    }
    // The diagonal is 1 and the matrix symmetric (core/MATH.md, "Properties").
    EXPECT_NEAR(wire->values(0), 1.0, 1e-12);
    EXPECT_DOUBLE_EQ(wire->values(1), wire->values(3));
  }

  // Rows and cols select the rectangular block; it equals the square matrix's
  // block.
  v1::GetSimilarityRequest block;
  block.set_session_id("s");
  block.add_rows("a/l1");
  block.add_rows("a/l2");
  block.add_cols("b/m1");
  absl::StatusOr<v1::SimilarityMatrix> rect = client_->GetSimilarity(block);
  ASSERT_TRUE(rect.ok()) << rect.status();
  ASSERT_EQ(rect->values_size(), 2);
  EXPECT_NEAR(rect->values(1),
              ReferenceMinibatchCka(batches, "a/l2", "b/m1", true), 1e-10);
}

TEST_F(ServiceE2eTest, SeriesEqualsGetSimilarityOverEachBucketsStepRange) {
  v1::SessionConfig config;
  *config.add_measures() = MakeMeasure("unbiased", v1::UNBIASED);
  for (const std::string& s : kThreeStreams) config.add_streams(s);
  config.set_step_bucket(2);
  ASSERT_TRUE(client_->CreateSession("series", config).ok());
  // Steps 100..105: buckets [100, 101], [102, 103], [104, 105].
  SendBatches("series", ThreeStreams(6));

  const v1::GetSimilaritySeriesRequest request = SeriesRequest(
      "series", {{"a/l1", "b/m1"}, {"a/l2", "a/l1"}, {"b/m1", "a/l2"}});
  absl::StatusOr<v1::SimilaritySeries> series =
      client_->GetSimilaritySeries(request);
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_EQ(series->measure(), "unbiased");
  EXPECT_EQ(series->step_bucket(), 2);
  ASSERT_EQ(series->pairs_size(), 3);
  ASSERT_EQ(series->buckets_size(), 3);
  for (int b = 0; b < 3; ++b) {
    const v1::SeriesBucket& bucket = series->buckets(b);
    EXPECT_EQ(bucket.step_first(), 100 + 2 * b);
    EXPECT_EQ(bucket.step_last(), 101 + 2 * b);
    ASSERT_EQ(bucket.values_size(), 3);
    ASSERT_EQ(bucket.batches_size(), 3);
    v1::GetSimilarityRequest range;
    range.set_session_id("series");
    range.set_step_min(bucket.step_first());
    range.set_step_max(bucket.step_last());
    absl::StatusOr<v1::SimilarityMatrix> matrix = client_->GetSimilarity(range);
    ASSERT_TRUE(matrix.ok()) << matrix.status();
    for (int p = 0; p < 3; ++p) {
      const int i = IndexOf(matrix->rows(), request.pairs(p).row());
      const int j = IndexOf(matrix->cols(), request.pairs(p).col());
      ASSERT_GE(i, 0);
      ASSERT_GE(j, 0);
      const int k = i * matrix->cols_size() + j;
      // The same sums divided the same way, carried bit for bit.
      EXPECT_EQ(bucket.values(p), matrix->values(k))
          << "bucket " << b << " pair " << p;
      EXPECT_FALSE(std::isnan(bucket.values(p)));
      EXPECT_EQ(bucket.batches(p), 2);
      EXPECT_EQ(bucket.batches(p), matrix->batches(k));
      EXPECT_EQ(bucket.standard_errors(p), matrix->standard_errors(k));
      EXPECT_GT(bucket.standard_errors(p), 0.0);
    }
  }

  // The service's codes: unknown session or stream, no pairs, exact measure.
  v1::GetSimilaritySeriesRequest bad = request;
  bad.set_session_id("absent");
  EXPECT_EQ(client_->GetSimilaritySeries(bad).status().code(),
            absl::StatusCode::kNotFound);
  bad = request;
  bad.mutable_pairs(1)->set_col("a/none");
  absl::Status unknown = client_->GetSimilaritySeries(bad).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.message(), "pairs[1].col")) << unknown;
  bad.clear_pairs();
  EXPECT_EQ(client_->GetSimilaritySeries(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ServiceE2eTest,
       TwoSourcesInTwoProcessesJoinByBatchIdIntoTheCrossModelBlock) {
  CreateSession("cross", {MakeMeasure("lin", v1::UNBIASED)}, kThreeStreams);
  const std::vector<ReferenceBatch> batches = ThreeStreams(3, 16, 7);
  const std::string dir = MakeTempDir("cross");
  for (size_t b = 0; b < batches.size(); ++b) {
    for (const char* source : {"a", "b"}) {
      std::filesystem::create_directories(absl::StrCat(dir, "/", source, b));
    }
    for (const auto& [stream, a] : batches[b]) {
      const std::string source = stream.substr(0, 1);
      WriteNpy(absl::StrCat(dir, "/", source, b, "/", stream.substr(2), ".npy"),
               a);
    }
  }
  const std::string server = absl::StrCat("127.0.0.1:", server_->port());
  for (size_t b = 0; b < batches.size(); ++b) {
    // Both models' processes run at the same time, as two training jobs would.
    std::vector<std::unique_ptr<Subprocess>> jobs;
    for (const char* source : {"a", "b"}) {
      jobs.push_back(std::make_unique<Subprocess>(std::vector<std::string>{
          CKACTL_BINARY, "--server", server, "send", "--session", "cross",
          "--source", source, "--batch-id", absl::StrCat("batch-", b), "--step",
          absl::StrCat(b), absl::StrCat(dir, "/", source, b)}));
    }
    for (auto& job : jobs) {
      const ProcessResult result = job->Wait();
      ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
      EXPECT_NE(result.out.find("acked"), std::string::npos) << result.out;
    }
  }
  v1::GetSimilarityRequest query;
  query.set_session_id("cross");
  query.add_rows("a/l1");
  query.add_rows("a/l2");
  query.add_cols("b/m1");
  absl::StatusOr<v1::SimilarityMatrix> block = client_->GetSimilarity(query);
  ASSERT_TRUE(block.ok()) << block.status();
  ASSERT_EQ(block->values_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(block->batches(i), 3);
    const double reference =
        ReferenceMinibatchCka(batches, block->rows(i), "b/m1", true);
    EXPECT_NEAR(block->values(i), reference, 1e-10 * std::abs(reference));
  }
}

TEST_F(ServiceE2eTest,
       BadBatchMidStreamGetsItsCodeWhileLaterBatchesAreApplied) {
  CreateSession("bad", {MakeMeasure("lin", v1::UNBIASED)});
  std::unique_ptr<ActivationStreamer> streamer = Streamer("bad", "m");
  for (int b = 0; b < 5; ++b) {
    Activations a = RandomActivations(8, 4, 100 + b);
    if (b == 2) a.x[5] = std::nan("");  // NaN activations are InvalidArgument
    Batch batch(absl::StrCat("b", b), b);
    batch.AddActivations("fc", std::vector<double>(a.x), {a.n, a.d});
    ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
  }
  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  ASSERT_EQ(errors->size(), 1u);
  EXPECT_EQ((*errors)[0].batch_id, "b2");
  EXPECT_EQ((*errors)[0].code, absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((*errors)[0].message.empty());
  EXPECT_EQ(streamer->stats().acked, 4);
  EXPECT_EQ(streamer->stats().reconnects, 0)
      << "a bad batch must not end the stream";
  absl::StatusOr<v1::Session> session = client_->GetSession("bad");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->batches_applied(), 4);
}

TEST_F(ServiceE2eTest,
       DuplicatesResentAfterAForcedReconnectAreNotCountedTwice) {
  CreateSession("dup", {MakeMeasure("lin", v1::UNBIASED)});
  const std::vector<ReferenceBatch> batches = ThreeStreams(3);
  std::unique_ptr<ActivationStreamer> streamer = Streamer("dup", "a");
  streamer->DiscardAcksForTesting(
      true);  // the acks are "lost": the streamer will resend
  for (size_t b = 0; b < batches.size(); ++b) {
    Batch batch(absl::StrCat("b", b), 0);
    for (const char* layer : {"l1", "l2"}) {
      const Activations& a = batches[b].at(absl::StrCat("a/", layer));
      batch.AddActivations(layer, std::vector<double>(a.x), {a.n, a.d});
    }
    ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
  }
  const absl::Time give_up = Soon();
  while (absl::Now() < give_up) {
    absl::StatusOr<v1::Session> s = client_->GetSession("dup");
    if (s.ok() && s->batches_applied() == 3) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(client_->GetSession("dup")->batches_applied(), 3);
  streamer->BreakStreamForTesting();
  absl::StatusOr<std::vector<BatchError>> errors = streamer->Flush(Soon());
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty());
  EXPECT_EQ(streamer->stats().reconnects, 1);
  EXPECT_EQ(streamer->stats().resent, 3);
  EXPECT_EQ(streamer->stats().duplicates, 3);
  EXPECT_EQ(client_->GetSession("dup")->batches_applied(), 3);

  v1::GetSimilarityRequest query;
  query.set_session_id("dup");
  query.add_rows("a/l1");
  query.add_cols("a/l2");
  absl::StatusOr<v1::SimilarityMatrix> m = client_->GetSimilarity(query);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->batches(0), 3);
  EXPECT_NEAR(m->values(0),
              ReferenceMinibatchCka(batches, "a/l1", "a/l2", true), 1e-10);
}

TEST_F(ServiceE2eTest, GramReductionGivesTheServersResultOnActivations) {
  CreateSession("raw", {MakeMeasure("lin", v1::UNBIASED)});
  CreateSession("gram", {MakeMeasure("lin", v1::UNBIASED)});
  // Wide layers (d > n) so that the reduction applies; float32 as a training
  // job sends.
  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < 3; ++b) {
    const Activations x = RandomActivations(16, 200, 300 + b);
    ReferenceBatch batch;
    batch["a/wide"] = x;
    batch["a/wider"] = RandomActivations(16, 300, 400 + b, &x, 0.8);
    batches.push_back(std::move(batch));
  }
  SendBatches("raw", batches, /*as_float32=*/true);
  SendBatches("gram", batches, /*as_float32=*/true, /*reduce_to_gram=*/true);
  v1::GetSimilarityRequest query;
  query.add_rows("a/wide");
  query.add_cols("a/wider");
  query.set_session_id("raw");
  absl::StatusOr<v1::SimilarityMatrix> raw = client_->GetSimilarity(query);
  query.set_session_id("gram");
  absl::StatusOr<v1::SimilarityMatrix> gram = client_->GetSimilarity(query);
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE(gram.ok()) << gram.status();
  // core/MATH.md, "Properties": float32 Grams with float64 centring stay within
  // 1e-6 relative of float64.
  EXPECT_NEAR(gram->values(0), raw->values(0), 1e-6 * std::abs(raw->values(0)));
  std::vector<ReferenceBatch> rounded = batches;
  for (ReferenceBatch& b : rounded) {
    for (auto& [stream, a] : b) a = RoundToFloat(a);
  }
  const double reference =
      ReferenceMinibatchCka(rounded, "a/wide", "a/wider", true);
  EXPECT_NEAR(gram->values(0), reference, 1e-6 * std::abs(reference));
}

TEST_F(ServiceE2eTest, WatchDeliversTheMatrixAndEveryUpdate) {
  CreateSession("w", {MakeMeasure("lin", v1::UNBIASED)}, kThreeStreams);
  v1::WatchSimilarityRequest request;
  request.mutable_query()->set_session_id("w");
  request.set_min_interval_ms(0);
  std::unique_ptr<client::SimilarityWatch> watch =
      client_->StartWatch(request, absl::Seconds(30));
  v1::SimilarityMatrix matrix;
  ASSERT_TRUE(watch->Next(&matrix))
      << watch->Finish();  // the current matrix, at once
  EXPECT_EQ(matrix.session_id(), "w");

  const std::vector<ReferenceBatch> batches = ThreeStreams(1);
  std::thread sender([&] { SendBatches("w", batches); });
  // Updates arrive until the matrix holds the batch.
  bool complete = false;
  while (!complete && watch->Next(&matrix)) {
    complete = matrix.rows_size() == 3 && matrix.batches_size() == 9 &&
               matrix.batches(0) == 1 && matrix.batches(8) == 1;
  }
  sender.join();
  EXPECT_TRUE(complete) << watch->Finish();
  const int i = IndexOf(matrix.rows(), "a/l1");
  const int j = IndexOf(matrix.cols(), "b/m1");
  ASSERT_GE(i, 0);
  ASSERT_GE(j, 0);
  EXPECT_NEAR(matrix.values(i * 3 + j),
              ReferenceMinibatchCka(batches, "a/l1", "b/m1", true), 1e-10);
  watch->Cancel();
  EXPECT_EQ(watch->Finish().code(), absl::StatusCode::kCancelled);

  // The callback style stops when the callback says so.
  int calls = 0;
  absl::Status status = client_->WatchSimilarity(
      request, [&](const v1::SimilarityMatrix&) { return ++calls < 1; },
      absl::Seconds(30));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(calls, 1);
  request.mutable_query()->set_session_id("absent");
  EXPECT_EQ(client_
                ->WatchSimilarity(
                    request, [](const v1::SimilarityMatrix&) { return true; },
                    absl::Seconds(30))
                .code(),
            absl::StatusCode::kNotFound);
}

// Returns the length-delimited fields numbered `field` of a protobuf message's
// bytes.
std::vector<std::string> LengthDelimitedFields(const std::string& bytes,
                                               int field) {
  std::vector<std::string> out;
  size_t i = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; i < bytes.size() && shift < 64; shift += 7) {
      const uint8_t b = static_cast<uint8_t>(bytes[i++]);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  };
  while (i < bytes.size()) {
    uint64_t tag = 0, value = 0;
    if (!varint(&tag)) break;
    switch (tag & 7) {
      case 0:
        varint(&value);
        break;
      case 1:
        i += 8;
        break;
      case 5:
        i += 4;
        break;
      case 2:
        if (!varint(&value) || i + value > bytes.size()) return out;
        if (static_cast<int>(tag >> 3) == field)
          out.push_back(bytes.substr(i, value));
        i += value;
        break;
      default:
        return out;
    }
  }
  return out;
}

// Asks grpc.reflection.v1alpha.ServerReflection for the service list, with
// hand-encoded messages: the reflection protos are not installed with gRPC.
std::vector<std::string> ReflectedServices(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::CompletionQueue cq;
  void* tag = nullptr;
  bool ok = false;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
  const std::string request("\x3a\x00", 2);  // field 7 list_services = ""
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  call->Write(request_buffer, reinterpret_cast<void*>(2));
  EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer response_buffer;
  call->Read(&response_buffer, reinterpret_cast<void*>(3));
  EXPECT_TRUE(cq.Next(&tag, &ok) && ok);
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }

  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  std::vector<std::string> names;
  // ServerReflectionResponse.list_services_response = 6 { repeated
  // ServiceResponse service = 1 { string name = 1 } }
  for (const std::string& list : LengthDelimitedFields(bytes, 6)) {
    for (const std::string& service : LengthDelimitedFields(list, 1)) {
      for (const std::string& name : LengthDelimitedFields(service, 1))
        names.push_back(name);
    }
  }
  return names;
}

TEST_F(ServiceE2eTest, HealthAndReflectionAnswer) {
  absl::StatusOr<client::ServingStatus> health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::ServingStatus::kServing);
  EXPECT_EQ(client_->Health("no.such.Service").status().code(),
            absl::StatusCode::kNotFound);

  const std::vector<std::string> services =
      ReflectedServices(client_->channel());
  EXPECT_NE(std::find(services.begin(), services.end(), "cka.v1.Similarity"),
            services.end())
      << services.size() << " services listed";
  EXPECT_NE(
      std::find(services.begin(), services.end(), "grpc.health.v1.Health"),
      services.end());
}

TEST_F(ServiceE2eTest, GracefulShutdownAcksEveryBatchItApplied) {
  CreateSession("g", {MakeMeasure("lin", v1::UNBIASED)});
  std::unique_ptr<ActivationStreamer> streamer = Streamer("g", "m");
  constexpr int kBatches = 40;
  for (int b = 0; b < kBatches; ++b) {
    const Activations a = RandomActivations(64, 256, 500 + b);
    Batch batch(absl::StrCat("b", b), b);
    batch.AddActivations("fc", ToFloat(a), {a.n, a.d});
    ASSERT_TRUE(streamer->Submit(std::move(batch)).ok());
  }
  // Shut down while batches are on the wire.
  const absl::Time give_up = Soon();
  while (streamer->stats().acked < 5 && absl::Now() < give_up)
    absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GE(streamer->stats().acked, 5);
  const absl::Time start = absl::Now();
  server_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(6)) << "shutdown_grace is 5 s";
  // Whatever the server applied, it acked: give the last acks a moment to
  // arrive, then the client's count of OK acks must equal the engine's count of
  // applied batches.
  const auto last_acks = streamer->Flush(absl::Now() + absl::Milliseconds(500));
  (void)last_acks;
  absl::StatusOr<std::shared_ptr<core::Session>> session =
      server_->engine().GetSession("g");
  ASSERT_TRUE(session.ok());
  const client::StreamerStats stats = streamer->stats();
  EXPECT_EQ(stats.acked, (*session)->Info().batches_applied);
  EXPECT_EQ(stats.rejected, 0);
  server_.reset();
}

// Source "deep": layers l1..l4 are noisy copies of one signal (a block by
// construction), l0 and l5 independent; source "shallow": 3 independent
// layers. Declared streams fix the order that "consecutive" refers to.
std::vector<ReferenceBatch> DeepAndShallow(int count, unsigned seed) {
  std::vector<ReferenceBatch> batches;
  for (int b = 0; b < count; ++b) {
    const unsigned s = seed + 100 * b;
    const Activations signal = RandomActivations(32, 6, s);
    ReferenceBatch batch;
    for (int l = 0; l < 6; ++l) {
      const bool copy = l >= 1 && l <= 4;
      batch[absl::StrCat("deep/l", l)] =
          RandomActivations(32, 6, s + 1 + l, copy ? &signal : nullptr, 20.0);
    }
    for (int l = 0; l < 3; ++l) {
      batch[absl::StrCat("shallow/m", l)] =
          RandomActivations(32, 6, s + 50 + l);
    }
    batches.push_back(std::move(batch));
  }
  return batches;
}

TEST_F(ServiceE2eTest, BlocksSummariseEachSourcesOwnLayersOverGrpc) {
  const std::vector<ReferenceBatch> batches = DeepAndShallow(4, 7);
  std::vector<std::string> streams;
  for (int l = 0; l < 6; ++l) streams.push_back(absl::StrCat("deep/l", l));
  for (int l = 0; l < 3; ++l) streams.push_back(absl::StrCat("shallow/m", l));
  CreateSession("blocks", {MakeMeasure("unbiased", v1::UNBIASED)}, streams);
  SendBatches("blocks", batches);

  v1::GetSimilarityRequest query;
  query.set_session_id("blocks");
  query.add_rows("shallow/m0");  // the blocks cover every source anyway
  query.add_cols("deep/l0");
  absl::StatusOr<v1::SimilarityMatrix> plain = client_->GetSimilarity(query);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->blocks_size(), 0) << "no blocks unless asked";

  query.set_block_threshold(0.9);
  absl::StatusOr<v1::SimilarityMatrix> m = client_->GetSimilarity(query);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->values_size(), 1);
  ASSERT_EQ(m->blocks_size(), 1) << m->DebugString();
  const v1::LayerBlock& b = m->blocks(0);
  EXPECT_EQ(b.source(), "deep");
  EXPECT_EQ(b.first_stream(), "deep/l1");
  EXPECT_EQ(b.last_stream(), "deep/l4");
  EXPECT_EQ(b.first_layer(), 1);
  EXPECT_EQ(b.length(), 4);
  EXPECT_EQ(b.source_layers(), 6);
  EXPECT_TRUE(b.warning()) << "4 of 6 layers";
  // Mean and minimum over the 12 ordered pairs inside, from the float64
  // reference (sums in another order: 1e-10 relative).
  double sum = 0.0, min = 2.0;
  for (int i = 1; i <= 4; ++i) {
    for (int j = 1; j <= 4; ++j) {
      if (i == j) continue;
      const double v = ReferenceMinibatchCka(batches, absl::StrCat("deep/l", i),
                                             absl::StrCat("deep/l", j), true);
      sum += v;
      min = std::min(min, v);
    }
  }
  EXPECT_NEAR(b.mean_value(), sum / 12, 1e-10);
  EXPECT_NEAR(b.min_value(), min, 1e-10);
  // l0 and l5 are independent of the block: their CKA with it stays low, so
  // the block is maximal.
  EXPECT_LT(ReferenceMinibatchCka(batches, "deep/l0", "deep/l1", true), 0.9);
  EXPECT_LT(ReferenceMinibatchCka(batches, "deep/l4", "deep/l5", true), 0.9);

  query.set_block_warn_share(0.75);
  m = client_->GetSimilarity(query);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->blocks_size(), 1);
  EXPECT_FALSE(m->blocks(0).warning()) << "4 is not more than 0.75 × 6";

  struct Bad {
    double threshold, share;
    std::string says;
  };
  for (const Bad& bad : std::vector<Bad>{{0.0, 0.5, "block_threshold 0"},
                                         {1.5, 0.5, "block_threshold 1.5"},
                                         {NAN, 0.5, "block_threshold nan"},
                                         {0.9, 0.0, "block_warn_share 0"},
                                         {0.9, 3.0, "block_warn_share 3"}}) {
    query.set_block_threshold(bad.threshold);
    query.set_block_warn_share(bad.share);
    absl::Status status = client_->GetSimilarity(query).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.says;
    EXPECT_TRUE(absl::StrContains(status.message(), bad.says)) << status;
  }
}

}  // namespace
}  // namespace cka::testing
