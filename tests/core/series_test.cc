// Session::QuerySeries: the CKA of chosen pairs in each step bucket on its own,
// checked against Session::Query over that bucket's step range (an independent
// path: Query adds blocks of the bucket sums for a whole matrix).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cka/core/memory_budget.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Every (row, col) pair of the scenario's streams, row-major.
std::vector<StreamPair> AllPairs(const Scenario& s) {
  std::vector<StreamPair> pairs;
  for (const std::string& row : s.StreamNames()) {
    for (const std::string& col : s.StreamNames()) pairs.push_back({row, col});
  }
  return pairs;
}

// Expects each pair's value in `bucket` to be bit-identical to the entry of
// `m` (rows = cols = the scenario's streams), and the batch counts equal.
void ExpectBucketEqualsMatrix(const SeriesBucket& bucket,
                              const SimilarityMatrix& m,
                              const std::string& context) {
  ASSERT_EQ(bucket.values.size(), m.values.size()) << context;
  ASSERT_EQ(bucket.batches.size(), m.batches.size()) << context;
  for (size_t p = 0; p < m.values.size(); ++p) {
    EXPECT_EQ(Bits(bucket.values[p]), Bits(m.values[p]))
        << context << " pair " << p << ": " << bucket.values[p] << " vs "
        << m.values[p];
    EXPECT_EQ(bucket.batches[p], m.batches[p]) << context << " pair " << p;
  }
}

TEST(SeriesTest, EveryBucketEqualsQueryOverItsStepRange) {
  // multibatch.json: steps 0, 3, 10, 15, 27, 29 in buckets of 10.
  const Scenario& s = LoadScenario("multibatch.json");
  ASSERT_GT(s.step_bucket, 0);
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& measure : s.measures) {
    if (IsExact(measure.estimator)) continue;
    SeriesQuery q;
    q.measure = measure.name;
    q.pairs = AllPairs(s);
    absl::StatusOr<SimilaritySeries> series = session->QuerySeries(q);
    ASSERT_TRUE(series.ok()) << series.status();
    EXPECT_EQ(series->measure, measure.name);
    EXPECT_EQ(series->step_bucket, s.step_bucket);
    ASSERT_EQ(series->buckets.size(), 3u) << measure.name;
    int64_t previous = std::numeric_limits<int64_t>::min();
    int with_values = 0;
    for (const SeriesBucket& bucket : series->buckets) {
      EXPECT_GT(bucket.step_first, previous) << "buckets ascend";
      previous = bucket.step_first;
      EXPECT_EQ(bucket.step_first % s.step_bucket, 0);
      EXPECT_EQ(bucket.step_last, bucket.step_first + s.step_bucket - 1);
      SimilarityQuery range = FullQuery(s, measure.name);
      range.step_min = bucket.step_first;
      range.step_max = bucket.step_last;
      const std::string context = measure.name + " steps " +
                                  std::to_string(bucket.step_first) + ".." +
                                  std::to_string(bucket.step_last);
      ExpectBucketEqualsMatrix(bucket, QueryOrDie(*session, range), context);
      for (double v : bucket.values) with_values += std::isnan(v) ? 0 : 1;
    }
    EXPECT_GT(with_values, 0) << "a test of NaNs only could not fail";
  }
}

TEST(SeriesTest, PairsOfDifferentStreamsEqualRectangularQueries) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  const std::vector<std::string> names = s.StreamNames();
  ASSERT_GE(names.size(), 3u);
  SeriesQuery q;
  q.measure = s.measures[0].name;
  q.pairs = {{names[0], names[2]}, {names[2], names[1]}};
  absl::StatusOr<SimilaritySeries> series = session->QuerySeries(q);
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_FALSE(series->buckets.empty());
  for (const SeriesBucket& bucket : series->buckets) {
    for (size_t p = 0; p < q.pairs.size(); ++p) {
      SimilarityQuery one;
      one.measure = q.measure;
      one.rows = {q.pairs[p].row};
      one.cols = {q.pairs[p].col};
      one.step_min = bucket.step_first;
      one.step_max = bucket.step_last;
      const SimilarityMatrix m = QueryOrDie(*session, one);
      ASSERT_EQ(m.values.size(), 1u);
      EXPECT_EQ(Bits(bucket.values[p]), Bits(m.values[0]))
          << "pair " << p << " at step " << bucket.step_first;
      EXPECT_EQ(bucket.batches[p], m.batches[0]);
    }
  }
}

TEST(SeriesTest, StepBucketZeroGivesOneEntryOverAllSteps) {
  const Scenario& s = LoadScenario("multibatch.json");
  SessionConfig config = s.Config();
  config.step_bucket = 0;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  IngestAll(**session, s);
  SeriesQuery q;
  q.measure = s.measures[0].name;
  q.pairs = AllPairs(s);
  absl::StatusOr<SimilaritySeries> series = (*session)->QuerySeries(q);
  ASSERT_TRUE(series.ok()) << series.status();
  ASSERT_EQ(series->buckets.size(), 1u);
  EXPECT_EQ(series->buckets[0].step_first, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(series->buckets[0].step_last, std::numeric_limits<int64_t>::max());
  ExpectBucketEqualsMatrix(series->buckets[0],
                           QueryOrDie(**session, FullQuery(s, q.measure)),
                           "step_bucket 0");
}

TEST(SeriesTest, SessionWithoutBatchesHasNoBuckets) {
  SessionConfig config;
  config.streams = {"m/a", "m/b"};
  config.step_bucket = 10;
  auto empty = Session::Create(config);
  ASSERT_TRUE(empty.ok()) << empty.status();
  SeriesQuery q;
  q.pairs = {{"m/a", "m/b"}};
  absl::StatusOr<SimilaritySeries> series = (*empty)->QuerySeries(q);
  ASSERT_TRUE(series.ok()) << series.status();
  EXPECT_TRUE(series->buckets.empty());
}

TEST(SeriesTest, BadRequestsAreRefusedWithTheirCodes) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  const std::string stream = s.StreamNames()[0];
  struct Case {
    std::string name;
    SeriesQuery query;
    absl::StatusCode code;
    std::string in_message;
  };
  std::vector<Case> cases = {
      {"no pairs",
       {s.measures[0].name, {}},
       absl::StatusCode::kInvalidArgument,
       "pairs"},
      {"too many pairs",
       {s.measures[0].name,
        std::vector<StreamPair>(kMaxSeriesPairs + 1, {stream, stream})},
       absl::StatusCode::kInvalidArgument,
       "1025"},
      {"unknown column",
       {s.measures[0].name, {{stream, stream}, {stream, "nope"}}},
       absl::StatusCode::kNotFound,
       "pairs[1].col: stream 'nope'"},
      {"unknown measure",
       {"nope", {{stream, stream}}},
       absl::StatusCode::kNotFound,
       "measure 'nope'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SimilaritySeries> r = session->QuerySeries(c.query);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.in_message), std::string::npos)
        << c.name << ": " << r.status();
  }
}

TEST(SeriesTest, ExactMeasureIsAFailedPreconditionThatSaysWhy) {
  SessionConfig config;
  config.measures = {Measure{"exact", Kernel::kLinear, 0.0, Estimator::kExact}};
  config.streams = {"a", "b"};
  config.step_bucket = 10;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  absl::StatusOr<SimilaritySeries> r =
      (*session)->QuerySeries({"exact", {{"a", "b"}}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition)
      << r.status();
  EXPECT_NE(r.status().message().find("per step bucket"), std::string::npos)
      << r.status();
}

TEST(SeriesTest, SeriesOverTheMemoryBudgetIsRefusedBeforeAllocating) {
  const Scenario& s = LoadScenario("multibatch.json");
  SessionLimits limits;
  // Room for the session's state but not for a series of 1024 pairs × 3
  // buckets (at least 32 bytes each).
  std::unique_ptr<Session> session = SessionWithAll(s, false, limits);
  ASSERT_NE(session, nullptr);
  const int64_t held = session->Info().held_bytes;
  auto budget = std::make_shared<MemoryBudget>(held + 64 * 1024, "test");
  limits.memory = budget;
  std::unique_ptr<Session> limited = SessionWithAll(s, false, limits);
  ASSERT_NE(limited, nullptr);
  const std::string stream = s.StreamNames()[0];
  SeriesQuery q{s.measures[0].name,
                std::vector<StreamPair>(kMaxSeriesPairs, {stream, stream})};
  absl::StatusOr<SimilaritySeries> r = limited->QuerySeries(q);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
      << r.status();
  q.pairs.resize(1);
  EXPECT_TRUE(limited->QuerySeries(q).ok()) << "one pair fits";
}

}  // namespace
}  // namespace cka::core::testing
