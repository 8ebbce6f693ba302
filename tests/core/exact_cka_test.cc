// Exact feature-space CKA (core/MATH.md, "Exact feature-space CKA")
// against the numpy oracle: data/exact.json declares three streams (one of rank
// 3) and sends five batches of n = 4..11, one of which never completes and must
// not be counted.
#include <cmath>
#include <cstdint>
#include <regex>
#include <string>

#include "cka/core/engine.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Float64 sums of float64 inputs against a float64 Gram-form computation: they
// differ in formula (feature-space running sums vs centred Grams), which costs
// a few 1e-15 relative on these well-conditioned data; 1e-10 leaves room and
// still catches any wrong term.
constexpr double kFloat64Rel = 1e-10;
constexpr double kFloat64Abs = 1e-10;

TEST(ExactCkaTest, EqualsGramFormOverAllCompletedBatches) {
  const Scenario& s = LoadScenario("exact.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(*session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
  // x2 lacks dec/out and waits in the join buffer.
  EXPECT_EQ(session->Info().batches_pending, 1);
}

TEST(ExactCkaTest, DeclaredWidthsGiveTheSameAnswers) {
  const Scenario& s = LoadScenario("exact.json");
  SessionConfig config = s.Config();
  config.stream_widths = s.stream_widths;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  IngestAll(**session, s);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(**session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
}

TEST(ExactCkaTest, WidthOtherThanDeclaredIsRejected) {
  const Scenario& s = LoadScenario("exact.json");
  SessionConfig config = s.Config();
  config.stream_widths = s.stream_widths;
  config.stream_widths[0] = 7;  // enc/l0 really has 5 features
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  absl::Status status = absl::OkStatus();
  for (const BatchInput& m : MessagesPerSource(s, s.batches[0])) {
    auto r = (*session)->Ingest(m);
    if (!r.ok()) status = r.status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("l0"), std::string::npos) << status;
  EXPECT_NE(status.message().find("7"), std::string::npos) << status;
}

TEST(ExactCkaTest, CompletingTheWaitingBatchCountsIt) {
  const Scenario& s = LoadScenario("exact.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  // Complete x2 with dec/out rows taken from enc/l0's first 4 columns (n × 4,
  // as declared).
  const BatchData& x2 = s.batches[2];
  ASSERT_EQ(x2.batch_id, "x2");
  const LayerData& l0 = x2.layers[0];
  std::vector<double> out(x2.n * 4);
  for (int64_t i = 0; i < x2.n; ++i) {
    for (int j = 0; j < 4; ++j) out[i * 4 + j] = l0.x[i * 5 + j];
  }
  auto r = session->Ingest(
      BatchInput{"dec", "x2", x2.step, {DoubleLayer("out", x2.n, 4, out)}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(session->Info().batches_pending, 0);
  const SimilarityMatrix m = QueryOrDie(*session, FullQuery(s, "exact"));
  for (size_t i = 0; i < m.batches.size(); ++i) {
    EXPECT_EQ(m.batches[i], s.expected.at("exact").batches[i] + 1) << i;
  }
  // dec/out of x2 equals enc/l0's leading columns; the pair moved.
  EXPECT_NE(m.values[0 * 3 + 2], s.expected.at("exact").values[0 * 3 + 2]);
}

// Returns every decimal integer in `text`.
std::vector<double> NumbersIn(const std::string& text) {
  std::vector<double> out;
  const std::string& s = text;
  const std::regex number("[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?");
  for (auto it = std::sregex_iterator(s.begin(), s.end(), number);
       it != std::sregex_iterator(); ++it) {
    out.push_back(std::stod(it->str()));
  }
  return out;
}

TEST(ExactCkaTest, MemoryBudgetIsCheckedAtCreation) {
  SessionConfig config;
  config.measures = {Measure{"exact", Kernel::kLinear, 0.0, Estimator::kExact}};
  config.streams = {"a", "b"};
  config.stream_widths = {3000, 3000};
  SessionLimits limits;
  limits.max_exact_bytes = int64_t{1} << 20;
  auto session = Session::Create(config, limits);
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.status().code(), absl::StatusCode::kResourceExhausted)
      << session.status();
  // Σxxᵀ alone over D = 6000 features is at least D(D+1)/2 doubles =
  // 144,024,000 bytes; the message must give the figure it needs (at least
  // that) and the limit.
  const std::vector<double> numbers =
      NumbersIn(std::string(session.status().message()));
  bool figure = false, limit = false;
  for (double v : numbers) {
    figure |= v >= 144024000.0;
    limit |= v == static_cast<double>(limits.max_exact_bytes);
  }
  EXPECT_TRUE(figure) << session.status();
  EXPECT_TRUE(limit) << session.status();

  config.stream_widths = {10, 10};
  EXPECT_TRUE(Session::Create(config, limits).ok());

  EngineLimits engine_limits;
  engine_limits.session.max_exact_bytes = limits.max_exact_bytes;
  Engine engine(engine_limits);
  config.stream_widths = {3000, 3000};
  auto created = engine.CreateSession("big", config);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().code(), absl::StatusCode::kResourceExhausted)
      << created.status();
}

TEST(ExactCkaTest, WidthChangeIsRejectedAndLeavesSumsUnchanged) {
  SessionConfig config;
  config.measures = {Measure{"exact", Kernel::kLinear, 0.0, Estimator::kExact}};
  config.streams = {"a", "b"};
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  std::vector<double> a5(6 * 5), b3(6 * 3), a4(6 * 4);
  for (size_t i = 0; i < a5.size(); ++i) a5[i] = std::sin(0.37 * i + 0.1);
  for (size_t i = 0; i < b3.size(); ++i) b3[i] = std::cos(0.91 * i);
  for (size_t i = 0; i < a4.size(); ++i) a4[i] = std::sin(1.3 * i);
  ASSERT_TRUE((*session)
                  ->Ingest(BatchInput{
                      "",
                      "one",
                      0,
                      {DoubleLayer("a", 6, 5, a5), DoubleLayer("b", 6, 3, b3)}})
                  .ok());
  const SimilarityMatrix before = QueryOrDie(**session, SimilarityQuery{});
  auto r = (*session)->Ingest(BatchInput{
      "", "two", 0, {DoubleLayer("a", 6, 4, a4), DoubleLayer("b", 6, 3, b3)}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
      << r.status();
  EXPECT_NE(r.status().message().find("'a'"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("4"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("5"), std::string::npos) << r.status();
  ExpectMatricesIdentical(QueryOrDie(**session, SimilarityQuery{}), before,
                          "after rejection");
}

}  // namespace
}  // namespace cka::core::testing
