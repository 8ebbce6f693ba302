// The comparison family as measures of a session (core/MATH.md, "Comparison
// family from second moments"): config validation, the config record's
// measure kinds (and records written before them), and Session::Query of a
// moment measure against the numpy oracle of data/measures.json.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "byte_codec.h"  // the record format, to write the older config layout
#include "cka/core/config.h"
#include "cka/core/measures/pwcca.h"
#include "cka/core/memory_budget.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "measures/measure_cases.h"
#include "moment_matrix.h"

namespace cka::core::testing {
namespace {

struct KindCase {
  MeasureKind kind;
  const char* name;      // MeasureKindName
  const char* quantity;  // of data/measures.json for (row x, column y)
  const char* swapped;   // for (row y, column x); null: PWCCA, computed here
};

const std::vector<KindCase>& Kinds() {
  static const auto* kinds = new std::vector<KindCase>{
      {MeasureKind::kCcaR2, "cca_r2", "cca_r2", "cca_r2"},
      {MeasureKind::kCcaMeanRho, "cca_mean_rho", "cca_mean_rho",
       "cca_mean_rho"},
      {MeasureKind::kSvcca, "svcca", "svcca", "svcca"},
      {MeasureKind::kPwcca, "pwcca", "pwcca", nullptr},
      {MeasureKind::kRegressionR2, "regression_r2", "regression_xy",
       "regression_yx"},
      {MeasureKind::kProcrustes, "procrustes", "procrustes", "procrustes"},
  };
  return *kinds;
}

Measure MomentMeasure(const std::string& name, MeasureKind kind) {
  Measure m;
  m.name = name;
  m.estimator = Estimator::kExact;
  m.kind = kind;
  return m;
}

// A session declaring streams "x" and "y" with every moment kind (named as
// MeasureKindName) and exact CKA ("cka").
SessionConfig AllKindsConfig() {
  SessionConfig config;
  for (const KindCase& k : Kinds())
    config.measures.push_back(MomentMeasure(k.name, k.kind));
  Measure cka;
  cka.name = "cka";
  cka.estimator = Estimator::kExact;
  config.measures.push_back(cka);
  config.streams = {"x", "y"};
  return config;
}

// Sends the case's X and Y as one float64 batch `batch_id` of layers x and y.
absl::Status IngestCase(Session& session, const std::vector<double>& x,
                        int64_t dx, const std::vector<double>& y, int64_t dy,
                        int64_t n, const std::string& batch_id) {
  BatchInput batch{"", batch_id, 0, {}};
  batch.layers.push_back(
      {"x",
       LayerInput::Kind::kActivations,
       {{n, dx}, DType::kFloat64, x.data(), x.size() * sizeof(double)}});
  batch.layers.push_back(
      {"y",
       LayerInput::Kind::kActivations,
       {{n, dy}, DType::kFloat64, y.data(), y.size() * sizeof(double)}});
  return session.Ingest(batch).status();
}

std::unique_ptr<Session> SessionWithCase(const MeasureCase& c) {
  auto session = Session::Create(AllKindsConfig());
  EXPECT_TRUE(session.ok()) << session.status();
  if (!session.ok()) return nullptr;
  EXPECT_TRUE(IngestCase(**session, c.x, c.dx, c.y, c.dy, c.n, "b0").ok());
  return *std::move(session);
}

SimilarityMatrix QueryOrDie(const Session& session, const std::string& measure,
                            std::vector<std::string> rows = {},
                            std::vector<std::string> cols = {}) {
  SimilarityQuery q;
  q.measure = measure;
  q.rows = std::move(rows);
  q.cols = std::move(cols);
  absl::StatusOr<SimilarityMatrix> m = session.Query(q);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : SimilarityMatrix{};
}

// Expects `got` to be the oracle's `quantity` of case `c`, or NaN where the
// oracle has none.
void ExpectOracle(double got, const MeasureCase& c, const std::string& quantity,
                  const SimilarityMatrix& m) {
  SCOPED_TRACE(c.name + " " + quantity);
  if (c.errors.count(quantity) > 0) {
    EXPECT_TRUE(std::isnan(got)) << got;
    EXPECT_NE(m.note.find("no variance"), std::string::npos) << m.note;
    return;
  }
  const double want = c.expected.at(quantity);
  EXPECT_LE(RelativeDifference(got, want), kOracleRel)
      << "got " << got << ", numpy " << want;
}

TEST(MomentQueryTest, EveryKindEqualsTheNumpyOracleOnEveryCase) {
  for (const MeasureCase& c : MeasureCases()) {
    std::unique_ptr<Session> session = SessionWithCase(c);
    ASSERT_NE(session, nullptr);
    for (const KindCase& k : Kinds()) {
      const SimilarityMatrix m = QueryOrDie(*session, k.name);
      ASSERT_EQ(m.rows, (std::vector<std::string>{"x", "y"}));
      ASSERT_EQ(m.values.size(), 4u);
      EXPECT_EQ(m.batches, (std::vector<int64_t>{1, 1, 1, 1}));
      ExpectOracle(m.values[1], c, k.quantity, m);
      if (k.swapped != nullptr) {
        ExpectOracle(m.values[2], c, k.swapped, m);
      } else {
        absl::StatusOr<PwccaSimilarity> want = Pwcca(SwapSides(c.Moments()));
        if (want.ok()) {
          EXPECT_LE(RelativeDifference(m.values[2], want->value), kOracleRel)
              << c.name << " pwcca(y, x)";
        } else {
          EXPECT_TRUE(std::isnan(m.values[2])) << c.name;
        }
      }
    }
  }
}

TEST(MomentQueryTest, RegressionEntryIsTheRowPredictingTheColumn) {
  const MeasureCase& c = CaseNamed("narrow_x_wide_y");
  std::unique_ptr<Session> session = SessionWithCase(c);
  ASSERT_NE(session, nullptr);
  const SimilarityMatrix m =
      QueryOrDie(*session, "regression_r2", {"x"}, {"y"});
  ASSERT_EQ(m.values.size(), 1u);
  // X (3 wide) explains less of Y (12 wide) than Y explains of X.
  EXPECT_LE(RelativeDifference(m.values[0], c.expected.at("regression_xy")),
            kOracleRel);
  EXPECT_GT(RelativeDifference(m.values[0], c.expected.at("regression_yx")),
            kChangedRel);
}

TEST(MomentQueryTest, BlocksOfARectangularQueryEqualTheSquareOnes) {
  const MeasureCase& c = CaseNamed("full_rank");
  std::unique_ptr<Session> session = SessionWithCase(c);
  ASSERT_NE(session, nullptr);
  for (const KindCase& k : Kinds()) {
    const SimilarityMatrix square = QueryOrDie(*session, k.name);
    const SimilarityMatrix yx = QueryOrDie(*session, k.name, {"y"}, {"x"});
    ASSERT_EQ(yx.values.size(), 1u);
    EXPECT_EQ(yx.values[0], square.values[2]) << k.name;
  }
}

TEST(MomentQueryTest, StreamWithoutVarianceIsNanWithANote) {
  const MeasureCase& c = CaseNamed("constant_x");
  std::unique_ptr<Session> session = SessionWithCase(c);
  ASSERT_NE(session, nullptr);
  const SimilarityMatrix m = QueryOrDie(*session, "procrustes");
  EXPECT_TRUE(std::isnan(m.values[0]));
  EXPECT_TRUE(std::isnan(m.values[1]));
  EXPECT_FALSE(std::isnan(m.values[3]));
  EXPECT_NE(m.note.find("3 of 4 entries"), std::string::npos) << m.note;
  EXPECT_NE(m.note.find("'x' (X) with 'x' (Y)"), std::string::npos) << m.note;
  // A predictor without variance explains nothing: R²(x → y) = 0.
  EXPECT_EQ(QueryOrDie(*session, "regression_r2").values[1], 0.0);
  // Exact CKA keeps no note.
  EXPECT_EQ(QueryOrDie(*session, "cka").note, "");
}

TEST(MomentQueryTest, ForcedCanonicalCorrelationsAreNoted) {
  const MeasureCase& c = CaseNamed("wider_than_rows");
  std::unique_ptr<Session> session = SessionWithCase(c);
  ASSERT_NE(session, nullptr);
  const SimilarityMatrix m = QueryOrDie(*session, "cca_mean_rho");
  EXPECT_NE(m.note.find("equal to 1 whatever the data"), std::string::npos)
      << m.note;
  EXPECT_EQ(QueryOrDie(*session, "procrustes").note, "");
}

// The symmetric 2 × 2 matrix has 3 distinct pairs: a caller that gives up
// after the first stops the query there, and the session answers the next
// query as before.
TEST(MomentQueryTest, CancelledQueryStopsBetweenPairsAndLeavesTheSession) {
  const MeasureCase& c = CaseNamed("full_rank");
  std::unique_ptr<Session> session = SessionWithCase(c);
  ASSERT_NE(session, nullptr);
  const SimilarityMatrix whole = QueryOrDie(*session, "cca_r2");
  for (const KindCase& k : Kinds()) {
    SimilarityQuery q;
    q.measure = k.name;
    int polls = 0;
    q.cancelled = [&polls] { return ++polls > 1; };
    const absl::StatusOr<SimilarityMatrix> stopped = session->Query(q);
    EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled)
        << k.name << ": " << stopped.status();
    EXPECT_NE(stopped.status().message().find("after 1 of its pairs"),
              std::string::npos)
        << stopped.status();
    EXPECT_EQ(polls, 2) << k.name;
    q.cancelled = [] { return false; };
    const absl::StatusOr<SimilarityMatrix> again = session->Query(q);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->values.size(), 4u);
  }
  EXPECT_EQ(QueryOrDie(*session, "cca_r2").values, whole.values);
}

// A moment measure costs O(p³) per pair, so its query copies the sums it
// reads (priced in full) even above the 64 MiB other exact queries copy, and
// computes outside the session's mutex: a batch commits while the query is
// between its pairs. Two streams of 1500 hold 72 MB of sums. (Were the query
// holding the mutex, the commit would wait until it ends: the deadline
// catches that.)
TEST(MomentQueryTest, LargeMomentQueryLetsBatchesCommitMeanwhile) {
  SessionConfig config;
  config.measures = {MomentMeasure("cca_r2", MeasureKind::kCcaR2)};
  config.streams = {"x", "y"};
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  const int64_t d = 1500, n = 3;
  const unsigned seed = 1207;
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(n * d), y(n * d);
  for (double& v : x) v = normal(rng);
  for (double& v : y) v = normal(rng);
  ASSERT_TRUE(IngestCase(**session, x, d, y, d, n, "b0").ok());
  std::promise<absl::Status> committed;
  std::future<absl::Status> commit = committed.get_future();
  std::thread committer;
  SimilarityQuery q;
  q.measure = "cca_r2";
  q.cancelled = [&] {
    if (!commit.valid()) return false;  // committed already
    if (!committer.joinable()) {
      committer = std::thread([&] {
        committed.set_value(IngestCase(**session, x, d, y, d, n, "b1"));
      });
      EXPECT_EQ(commit.wait_for(std::chrono::minutes(2)),
                std::future_status::ready)
          << "the commit waited for the query";
    }
    return false;
  };
  const absl::StatusOr<SimilarityMatrix> m = (*session)->Query(q);
  committer.join();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->batches[0], 1);  // the sums as they were when it started
  EXPECT_TRUE(commit.get().ok());
  q.cancelled = nullptr;
  EXPECT_EQ((*session)->Query(q)->batches[0], 2);
}

TEST(MomentQueryTest, NoRowsYetIsNanWithANote) {
  auto session = Session::Create(AllKindsConfig());
  ASSERT_TRUE(session.ok()) << session.status();
  const SimilarityMatrix m = QueryOrDie(**session, "svcca");
  ASSERT_EQ(m.values.size(), 4u);
  for (double v : m.values) EXPECT_TRUE(std::isnan(v));
  EXPECT_NE(m.note.find("no value yet"), std::string::npos) << m.note;
}

TEST(MomentQueryTest, StepRangeAndSeriesAreFailedPrecondition) {
  SessionConfig config = AllKindsConfig();
  config.step_bucket = 10;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  SimilarityQuery q;
  q.measure = "pwcca";
  q.step_min = 0;
  q.step_max = 9;
  absl::StatusOr<SimilarityMatrix> m = (*session)->Query(q);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("kept for all time only"),
            std::string::npos)
      << m.status();
  EXPECT_NE(m.status().message().find("pwcca"), std::string::npos);
  SeriesQuery s;
  s.measure = "cca_r2";
  s.pairs = {{"x", "y"}};
  absl::StatusOr<SimilaritySeries> series = (*session)->QuerySeries(s);
  EXPECT_EQ(series.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(series.status().message().find("kept for all time only"),
            std::string::npos)
      << series.status();
}

// Returns whether `measure`'s query of `session` succeeds when `budget` has
// exactly `room` bytes free.
bool FitsIn(const Session& session, MemoryBudget& budget,
            const std::string& measure, int64_t room) {
  auto filler = budget.Reserve(budget.limit() - budget.used() - room, "filler");
  EXPECT_TRUE(filler.ok()) << filler.status();
  SimilarityQuery q;
  q.measure = measure;
  absl::StatusOr<SimilarityMatrix> m = session.Query(q);
  EXPECT_TRUE(m.ok() || absl::IsResourceExhausted(m.status())) << m.status();
  return m.ok();
}

TEST(MomentQueryTest, ScratchIsPricedBeforeComputing) {
  const MeasureCase& c = CaseNamed("narrow_x_wide_y");
  SessionLimits limits;
  limits.memory = std::make_shared<MemoryBudget>(int64_t{1} << 30, "test");
  auto session = Session::Create(AllKindsConfig(), limits);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE(IngestCase(**session, c.x, c.dx, c.y, c.dy, c.n, "b0").ok());
  // The least room in which exact CKA's 2 × 2 query fits (the matrix and the
  // copy of the exact sums); a moment measure's needs both streams' spectra
  // and one pair's moments and scratch more (streams 3 and 12 wide).
  int64_t lo = 0, hi = int64_t{256} << 20;
  ASSERT_TRUE(FitsIn(**session, *limits.memory, "cka", hi));
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (FitsIn(**session, *limits.memory, "cka", mid) ? hi : lo) = mid;
  }
  const int64_t scratch = MomentMatrixBytes({c.dx, c.dy});
  ASSERT_GT(scratch, 0);
  for (const KindCase& k : Kinds()) {
    EXPECT_FALSE(FitsIn(**session, *limits.memory, k.name, hi + scratch - 1))
        << k.name;
    EXPECT_TRUE(FitsIn(**session, *limits.memory, k.name, hi + scratch))
        << k.name;
  }
}

struct BadMeasureCase {
  const char* what;
  Measure measure;
  std::vector<std::string> streams;
  const char* expected;  // in the message
};

TEST(MomentQueryTest, ValidateConfigNamesTheWrongField) {
  Measure rbf = MomentMeasure("m", MeasureKind::kSvcca);
  rbf.kernel = Kernel::kRbf;
  rbf.rbf_threshold = 0.5;
  Measure minibatch = MomentMeasure("m", MeasureKind::kCcaR2);
  minibatch.estimator = Estimator::kUnbiased;
  Measure debiased = MomentMeasure("m", MeasureKind::kProcrustes);
  debiased.estimator = Estimator::kExactDebiased;
  Measure unknown = MomentMeasure("m", static_cast<MeasureKind>(9));
  Measure zero = MomentMeasure("m", static_cast<MeasureKind>(0));
  const BadMeasureCase cases[] = {
      {"rbf kernel", rbf, {"a"}, "needs kernel linear, not rbf"},
      {"minibatch estimator",
       minibatch,
       {"a"},
       "needs estimator exact, not unbiased"},
      {"debiased estimator",
       debiased,
       {"a"},
       "needs estimator exact, not exact_debiased"},
      {"unknown kind", unknown, {"a"}, "unknown kind 9"},
      {"kind 0", zero, {"a"}, "unknown kind 0"},
      {"no declared streams",
       MomentMeasure("m", MeasureKind::kPwcca),
       {},
       "config.streams is empty"},
  };
  for (const BadMeasureCase& c : cases) {
    SessionConfig config;
    config.measures = {c.measure};
    config.streams = c.streams;
    const absl::Status s = ValidateConfig(WithDefaults(config));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(s.message().find(c.expected), std::string::npos)
        << c.what << ": " << s;
  }
  SessionConfig good = AllKindsConfig();
  EXPECT_TRUE(ValidateConfig(good).ok());
}

TEST(MomentQueryTest, KindsSurviveSerializeAndRecords) {
  const MeasureCase& c = CaseNamed("full_rank");
  std::unique_ptr<Session> live = SessionWithCase(c);
  ASSERT_NE(live, nullptr);
  auto restored = Session::Restore(live->Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->config(), live->config());
  std::map<std::string, std::string> store;
  for (const StateRecord& r : live->AllRecords().records)
    store[r.key] = r.value;
  auto rebuilt = Session::FromRecords(store);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ((*rebuilt)->config(), live->config());
  for (const KindCase& k : Kinds()) {
    EXPECT_EQ(QueryOrDie(**rebuilt, k.name).values,
              QueryOrDie(*live, k.name).values)
        << k.name;
  }
}

TEST(MomentQueryTest, ConfigRecordWrittenBeforeKindsRestoresAsCka) {
  // An exact session as ckad stored it before measure kinds existed: its
  // config record ends at the join window.
  SessionConfig old;
  Measure exact;
  exact.name = "exact";
  exact.estimator = Estimator::kExact;
  Measure lin;
  lin.name = "lin";
  old.measures = {exact, lin};
  old.streams = {"x", "y"};
  auto live = Session::Create(old);
  ASSERT_TRUE(live.ok()) << live.status();
  const MeasureCase& c = CaseNamed("full_rank");
  ASSERT_TRUE(IngestCase(**live, c.x, c.dx, c.y, c.dy, c.n, "b0").ok());
  std::map<std::string, std::string> store;
  for (const StateRecord& r : (*live)->AllRecords().records)
    store[r.key] = r.value;
  ByteWriter w;
  w.U64(old.measures.size());
  for (const Measure& m : old.measures) {
    w.String(m.name);
    w.U8(static_cast<uint8_t>(m.kernel));
    w.F64(m.rbf_threshold);
    w.U8(static_cast<uint8_t>(m.estimator));
  }
  w.U64(old.streams.size());
  for (const std::string& s : old.streams) w.String(s);
  w.I64s({});
  w.I64(0);  // step bucket
  w.U64(0);  // expected sources
  w.I64(0);  // join window
  ASSERT_LT(w.bytes().size(), store["config"].size());
  store["config"] = w.bytes();
  auto rebuilt = Session::FromRecords(store);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  for (const Measure& m : (*rebuilt)->config().measures)
    EXPECT_EQ(m.kind, MeasureKind::kCka) << m.name;
  EXPECT_EQ((*rebuilt)->config(), (*live)->config());
  for (const char* m : {"exact", "lin"}) {
    EXPECT_EQ(QueryOrDie(**rebuilt, m).values, QueryOrDie(**live, m).values)
        << m;
  }
}

TEST(MomentQueryTest, DamagedKindsAreDataLoss) {
  const MeasureCase& c = CaseNamed("full_rank");
  std::unique_ptr<Session> live = SessionWithCase(c);
  ASSERT_NE(live, nullptr);
  std::map<std::string, std::string> store;
  for (const StateRecord& r : live->AllRecords().records)
    store[r.key] = r.value;
  const std::string good = store["config"];
  // The last byte is the last measure's kind (exact CKA: 1).
  std::string bad_kind = good;
  bad_kind.back() = 42;
  std::string truncated = good.substr(0, good.size() - 1);
  for (const std::string& config : {bad_kind, truncated, good + "x"}) {
    store["config"] = config;
    auto rebuilt = Session::FromRecords(store);
    EXPECT_EQ(rebuilt.status().code(), absl::StatusCode::kDataLoss)
        << rebuilt.status();
  }
}

}  // namespace
}  // namespace cka::core::testing
