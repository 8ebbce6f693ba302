// Joining without declared streams: the join window, expected sources, and
// the count of pairs that could not be joined.
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core {
namespace {

using testing::ExpectMatricesNear;
using testing::QueryOrDie;

// The layers of two jobs: source "a" (layers l0, l1) and source "b" (l0, l1),
// n = 12 examples per batch, distinct deterministic values per batch, source
// and layer.
class TwoJobs {
 public:
  BatchInput Batch(const std::string& source, int batch) {
    BatchInput in;
    in.source = source;
    in.batch_id = "b" + std::to_string(batch);
    in.step = batch;
    for (int l = 0; l < 2; ++l) {
      const int64_t n = 12, d = 3 + l;
      std::vector<double>& x = storage_.emplace_back(n * d);
      const double seed = batch * 7.1 + l * 1.3 + (source == "a" ? 0.0 : 0.55);
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = std::sin(seed + 0.91 * i) + 0.3 * std::cos(seed * i);
      in.layers.push_back(
          testing::DoubleLayer("l" + std::to_string(l), n, d, x));
    }
    return in;
  }

 private:
  std::deque<std::vector<double>> storage_;
};

const std::vector<std::string> kStreams = {"a/l0", "a/l1", "b/l0", "b/l1"};

// Job a sends batches 0..5, then job b starts and sends the same batches: what
// a user does who runs the second job a few batches late.
void SendLate(Session& session, TwoJobs& jobs) {
  for (int b = 0; b < 6; ++b)
    ASSERT_TRUE(session.Ingest(jobs.Batch("a", b)).ok());
  for (int b = 0; b < 6; ++b)
    ASSERT_TRUE(session.Ingest(jobs.Batch("b", b)).ok());
}

// The contract's answer: a session that declares the four streams, so every
// batch waits for all of them.
SimilarityMatrix Declared(TwoJobs& jobs) {
  SessionConfig config;
  config.streams = kStreams;
  auto session = Session::Create(config);
  EXPECT_TRUE(session.ok());
  SendLate(**session, jobs);
  SimilarityQuery q;
  q.rows = q.cols = kStreams;
  return QueryOrDie(**session, q);
}

SimilarityQuery AllStreams() {
  SimilarityQuery q;
  q.rows = q.cols = kStreams;
  return q;
}

TEST(JoinWindowTest, LateJobWithinTheWindowPairsWithEveryCommonBatch) {
  TwoJobs jobs;
  auto session = Session::Create({});  // default window: 16 batches
  ASSERT_TRUE(session.ok());
  SendLate(**session, jobs);
  // Sums in another order than the declared session's: rounding only.
  ExpectMatricesNear(QueryOrDie(**session, AllStreams()), Declared(jobs), 1e-12,
                     "late job, default window");
  const SessionInfo info = (*session)->Info();
  EXPECT_EQ(info.pairs_missed, 0);
  EXPECT_EQ(info.batches_applied, 12);
  EXPECT_EQ(info.config.join_window, kDefaultJoinWindow);
}

TEST(JoinWindowTest, PairsOutsideTheWindowAreCountedAsMissed) {
  TwoJobs jobs;
  SessionConfig config;
  config.join_window = 2;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok());
  SendLate(**session, jobs);
  const SessionInfo info = (*session)->Info();
  // b's batches 0..3 came after a's had left the two-batch window: 4 batches ×
  // 2 layers of a × 2 layers of b.
  EXPECT_EQ(info.pairs_missed, 16);
  const SimilarityMatrix m = QueryOrDie(**session, AllStreams());
  EXPECT_EQ(m.batches[0 * 4 + 2], 2);  // a/l0 × b/l0: batches 4 and 5
  EXPECT_EQ(m.batches[0 * 4 + 1], 6);  // a/l0 × a/l1: every batch
  EXPECT_EQ(m.batches[2 * 4 + 3], 6);  // b/l0 × b/l1: every batch
  EXPECT_TRUE(std::isfinite(m.values[0 * 4 + 2]));
}

TEST(JoinWindowTest, ExpectedSourcesKeepBatchesBeyondTheWindow) {
  TwoJobs jobs;
  SessionConfig config;
  config.join_window = 1;
  config.expected_sources = {"a", "b"};
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok());
  SendLate(**session, jobs);
  ExpectMatricesNear(QueryOrDie(**session, AllStreams()), Declared(jobs), 1e-12,
                     "expected sources");
  const SessionInfo info = (*session)->Info();
  EXPECT_EQ(info.pairs_missed, 0);
  EXPECT_LE(info.batches_pending, 1);  // complete batches leave the window
}

TEST(JoinWindowTest, EvictedBatchesCountTheirLatePairsAsMissed) {
  TwoJobs jobs;
  SessionConfig config;
  config.streams = kStreams;
  SessionLimits limits;
  limits.max_pending_batches = 3;
  auto session = Session::Create(config, limits);
  ASSERT_TRUE(session.ok());
  SendLate(**session, jobs);
  const SessionInfo info = (*session)->Info();
  EXPECT_EQ(info.batches_evicted, 3);  // a's batches 0..2
  EXPECT_EQ(info.pairs_missed, 12);    // 3 batches × 2 × 2
}

TEST(JoinWindowTest, MissedPairsAndTheJoinConfigSurviveARestore) {
  TwoJobs jobs;
  SessionConfig config;
  config.join_window = 2;
  config.expected_sources = {"a"};
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok());
  SendLate(**session, jobs);
  auto restored = Session::Restore((*session)->Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->Info().pairs_missed, (*session)->Info().pairs_missed);
  EXPECT_TRUE((*restored)->config() == (*session)->config());
  EXPECT_EQ((*restored)->config().expected_sources,
            std::vector<std::string>{"a"});
}

TEST(JoinWindowTest, BadJoinConfigsAreInvalidArgumentsNamingTheField) {
  struct Case {
    const char* name;
    SessionConfig config;
    const char* field;
  };
  SessionConfig declared_and_sources;
  declared_and_sources.streams = {"a/l0"};
  declared_and_sources.expected_sources = {"a"};
  SessionConfig huge_window;
  huge_window.join_window = kMaxJoinWindow + 1;
  SessionConfig negative_window;
  negative_window.join_window = -1;
  SessionConfig declared_window;
  declared_window.streams = {"a/l0"};
  declared_window.join_window = 4;
  SessionConfig slash_source;
  slash_source.expected_sources = {"a/b"};
  SessionConfig twice;
  twice.expected_sources = {"a", "a"};
  SessionConfig many_measures;
  for (int i = 0; i <= static_cast<int>(kMaxMeasures); ++i)
    many_measures.measures.push_back(Measure{
        "m" + std::to_string(i), Kernel::kLinear, 0.0, Estimator::kUnbiased});
  for (const Case& c : std::vector<Case>{
           {"declared streams and expected sources", declared_and_sources,
            "expected_sources"},
           {"window over the limit", huge_window, "join_window"},
           {"negative window", negative_window, "join_window"},
           {"window with declared streams", declared_window, "join_window"},
           {"source with a slash", slash_source, "'a/b'"},
           {"source named twice", twice, "'a'"},
           {"too many measures", many_measures, "measures"}}) {
    auto session = Session::Create(c.config);
    ASSERT_FALSE(session.ok()) << c.name;
    EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    EXPECT_NE(session.status().message().find(c.field), std::string::npos)
        << c.name << ": " << session.status();
  }
}

}  // namespace
}  // namespace cka::core
