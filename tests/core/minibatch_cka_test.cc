// Minibatch CKA (core/MATH.md, "Minibatch CKA") against the numpy oracle:
// data/multibatch.json has five streams (two of rank 3), six batches of n
// = 5..12, streams missing from some batches and steps in three buckets of 10;
// data/equal_n.json, low_precision.json and realistic.json.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Float64 inputs: float64 Grams, only summation order and the fast form differ
// from numpy
// (~1e-14); unbiased values can be near 0, hence the absolute part.
constexpr double kFloat64Rel = 1e-10;
constexpr double kFloat64Abs = 1e-10;
// core/MATH.md, "Properties": float32 Grams with float64 centring stay within
// 1e-6 relative of float64; near 0 a relative bound means nothing, so 1e-7
// absolute as well.
constexpr double kFloat32Rel = 1e-6;
constexpr double kFloat32Abs = 1e-7;
// Two float64 computations of the same sums in a different order (arrival
// order, threads).
constexpr double kReorderRel = 1e-12;

// Every minibatch measure of multibatch.json: linear and RBF (t = 0.2, 0.5,
// 0.8), each unbiased and biased.
TEST(MultiBatchTest, WholeSessionMatchesNumpy) {
  const Scenario& s = LoadScenario("multibatch.json");
  ASSERT_EQ(s.measures.size(), 8u);
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(*session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
}

TEST(MultiBatchTest, EveryStepRangeMatchesNumpy) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    for (const StepRange& r : s.ranges) {
      SimilarityQuery q = FullQuery(s, m.name);
      q.step_min = r.step_min;
      q.step_max = r.step_max;
      ExpectMatrixNear(QueryOrDie(*session, q), r.expected.at(m.name),
                       kFloat64Rel, kFloat64Abs,
                       m.name + " steps [" + std::to_string(r.step_min) + ", " +
                           std::to_string(r.step_max) + "]");
    }
  }
}

TEST(MultiBatchTest, PrecomputedGramsEqualActivations) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> from_x = SessionWithAll(s);
  std::unique_ptr<Session> from_gram = SessionWithAll(s, /*as_gram=*/true);
  ASSERT_NE(from_x, nullptr);
  ASSERT_NE(from_gram, nullptr);
  for (const Measure& m : s.measures) {
    // Both are float64 Grams of the same data, computed by the engine and by
    // the test.
    ExpectMatricesNear(QueryOrDie(*from_gram, FullQuery(s, m.name)),
                       QueryOrDie(*from_x, FullQuery(s, m.name)), kFloat64Rel,
                       m.name);
    ExpectMatrixNear(QueryOrDie(*from_gram, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
}

TEST(MinibatchCkaTest, DefaultRowsAreStreamsInFirstSeenOrder) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  // The first batch holds every stream, sent in the scenario's order.
  const SimilarityMatrix m = QueryOrDie(*session, SimilarityQuery{});
  EXPECT_EQ(m.measure, "linear");
  EXPECT_EQ(m.rows, s.StreamNames());
  EXPECT_EQ(m.cols, s.StreamNames());
  EXPECT_EQ(session->Info().streams, s.StreamNames());
}

TEST(MinibatchCkaTest, RectangularBlockEqualsSquareBlock) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  const std::vector<std::string> a = {"resnet/fc", "resnet/conv1"};
  const std::vector<std::string> b = {"probe", "vit/block0", "vit/head"};
  for (const Measure& measure : s.measures) {
    for (int range = -1; range < static_cast<int>(s.ranges.size()); ++range) {
      SimilarityQuery square = FullQuery(s, measure.name);
      SimilarityQuery block;
      block.measure = measure.name;
      block.rows = a;
      block.cols = b;
      if (range >= 0) {
        square.step_min = block.step_min = s.ranges[range].step_min;
        square.step_max = block.step_max = s.ranges[range].step_max;
      }
      const SimilarityMatrix sq = QueryOrDie(*session, square);
      const SimilarityMatrix bl = QueryOrDie(*session, block);
      ASSERT_EQ(bl.rows, a);
      ASSERT_EQ(bl.cols, b);
      ASSERT_EQ(bl.values.size(), a.size() * b.size());
      const std::vector<std::string> names = s.StreamNames();
      auto index = [&](const std::string& n) {
        return std::find(names.begin(), names.end(), n) - names.begin();
      };
      for (size_t i = 0; i < a.size(); ++i) {
        for (size_t j = 0; j < b.size(); ++j) {
          const size_t k = index(a[i]) * names.size() + index(b[j]);
          const double want = sq.values[k], got = bl.values[i * b.size() + j];
          // The same sums answer both queries: equal up to 4 ulps
          // (EXPECT_DOUBLE_EQ).
          if (std::isnan(want)) {
            EXPECT_TRUE(std::isnan(got))
                << measure.name << " " << a[i] << " " << b[j];
          } else {
            EXPECT_DOUBLE_EQ(got, want)
                << measure.name << " " << a[i] << " " << b[j];
          }
          EXPECT_EQ(bl.batches[i * b.size() + j], sq.batches[k]);
        }
      }
    }
  }
}

// Declared streams make completion independent of arrival order, which changes
// results by rounding only (core/MATH.md, "Properties").
TEST(MinibatchCkaTest, ArrivalOrderIsIrrelevant) {
  const Scenario& s = LoadScenario("multibatch.json");
  ASSERT_TRUE(s.declared);
  auto in_order = Session::Create(s.Config());
  auto shuffled = Session::Create(s.Config());
  ASSERT_TRUE(in_order.ok()) << in_order.status();
  ASSERT_TRUE(shuffled.ok()) << shuffled.status();
  for (const BatchData& b : s.batches) {
    for (const BatchInput& m : MessagesPerSource(s, b))
      ASSERT_TRUE((*in_order)->Ingest(m).ok());
  }
  // Batches in a fixed shuffled order, each layer its own message, layers
  // reversed, and the layers of two batches interleaved.
  std::vector<BatchInput> messages;
  for (int b : {4, 1, 5, 0, 3, 2}) {
    std::vector<BatchInput> per_layer = MessagesPerLayer(s, s.batches[b]);
    std::reverse(per_layer.begin(), per_layer.end());
    messages.insert(messages.end(), per_layer.begin(), per_layer.end());
  }
  for (size_t i = 0; i + 1 < messages.size(); i += 3)
    std::swap(messages[i], messages[i + 1]);
  for (const BatchInput& m : messages) {
    auto r = (*shuffled)->Ingest(m);
    ASSERT_TRUE(r.ok()) << m.batch_id << ": " << r.status();
    EXPECT_EQ(r->layers_applied, 1);
  }
  const std::vector<SimilarityMatrix> want = AllAnswers(**in_order, s);
  const std::vector<SimilarityMatrix> got = AllAnswers(**shuffled, s);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ExpectMatricesNear(got[i], want[i], kReorderRel,
                       "answer " + std::to_string(i));
  }
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(**shuffled, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
}

// Without declared streams a batch is complete once every stream seen so far
// has arrived. Once the first batch has introduced every stream, the later
// batches may arrive layer by layer in any order and are joined exactly as when
// each source sends its layers together.
TEST(MinibatchCkaTest, UndeclaredStreamsArrivalOrderIsIrrelevantOnceAllSeen) {
  const Scenario& s = LoadScenario("multibatch.json");
  SessionConfig config = s.Config();
  config.streams.clear();
  auto in_order = Session::Create(config);
  auto shuffled = Session::Create(config);
  ASSERT_TRUE(in_order.ok()) << in_order.status();
  ASSERT_TRUE(shuffled.ok()) << shuffled.status();
  for (const BatchData& b : s.batches) {
    for (const BatchInput& m : MessagesPerSource(s, b))
      ASSERT_TRUE((*in_order)->Ingest(m).ok());
  }
  for (const BatchInput& m : MessagesPerSource(s, s.batches[0])) {
    ASSERT_TRUE((*shuffled)->Ingest(m).ok());
  }
  std::vector<BatchInput> messages;
  for (int b : {3, 5, 1, 4, 2}) {
    std::vector<BatchInput> per_layer = MessagesPerLayer(s, s.batches[b]);
    std::reverse(per_layer.begin(), per_layer.end());
    messages.insert(messages.end(), per_layer.begin(), per_layer.end());
  }
  for (size_t i = 0; i + 1 < messages.size(); i += 2)
    std::swap(messages[i], messages[i + 1]);
  for (const BatchInput& m : messages) {
    auto r = (*shuffled)->Ingest(m);
    ASSERT_TRUE(r.ok()) << m.batch_id << ": " << r.status();
    EXPECT_EQ(r->layers_applied, 1);
  }
  const std::vector<SimilarityMatrix> want = AllAnswers(**in_order, s);
  const std::vector<SimilarityMatrix> got = AllAnswers(**shuffled, s);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ExpectMatricesNear(got[i], want[i], kReorderRel,
                       "answer " + std::to_string(i));
  }
}

TEST(MinibatchCkaTest, EqualSizedBatchesEqualPerBatchMeanDefinition) {
  // equal_n.json: every stream in every batch, n = 10; make_vectors.py checks
  // its expected values against mean-over-batches HSIC (efficient_CKA.py of the
  // paper's authors).
  const Scenario& s = LoadScenario("equal_n.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(*session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat64Rel, kFloat64Abs, m.name);
  }
}

// A pair seen on different batch sets uses only its common batches for all
// three sums: the (vit/head, probe) entry of the whole session equals a session
// fed only their common batches.
TEST(MinibatchCkaTest, PairUsesOnlyItsCommonBatches) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> all = SessionWithAll(s);
  ASSERT_NE(all, nullptr);
  SessionConfig two = s.Config();
  two.streams = {"vit/head", "probe"};
  auto common = Session::Create(two);
  ASSERT_TRUE(common.ok()) << common.status();
  int common_batches = 0;
  for (const BatchData& b : s.batches) {
    std::vector<LayerInput> layers;
    bool head = false, probe = false;
    for (const LayerData& l : b.layers) {
      head |= l.stream == "vit/head";
      probe |= l.stream == "probe";
    }
    if (!head || !probe) continue;
    ++common_batches;
    for (const BatchInput& m : MessagesPerLayer(s, b)) {
      const bool wanted = (m.source == "vit" && m.layers[0].layer == "head") ||
                          m.source.empty();
      if (wanted) {
        ASSERT_TRUE((*common)->Ingest(m).ok());
      }
    }
  }
  ASSERT_EQ(common_batches, 2);
  for (const Measure& m : s.measures) {
    SimilarityQuery q;
    q.measure = m.name;
    q.rows = {"vit/head"};
    q.cols = {"probe"};
    const SimilarityMatrix a = QueryOrDie(*all, q);
    const SimilarityMatrix c = QueryOrDie(**common, q);
    ASSERT_EQ(a.values.size(), 1u);
    ASSERT_EQ(c.values.size(), 1u);
    EXPECT_EQ(a.batches[0], 2) << m.name;
    EXPECT_NEAR(a.values[0], c.values[0], kReorderRel) << m.name;
  }
}

TEST(MinibatchCkaTest, PairWithoutCommonBatchHasNoValue) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  SimilarityQuery q;
  q.rows = {"vit/block0"};
  q.cols = {"probe"};
  q.step_min = 10;
  q.step_max = 19;  // b2 has probe missing, b3 too: no common batch
  const SimilarityMatrix m = QueryOrDie(*session, q);
  ASSERT_EQ(m.values.size(), 1u);
  EXPECT_TRUE(std::isnan(m.values[0])) << m.values[0];
  EXPECT_EQ(m.batches[0], 0);
}

TEST(MinibatchCkaTest, StepOfFirstMessageDecidesTheBucket) {
  SessionConfig config;
  config.step_bucket = 10;
  config.streams = {"m/a", "m/b"};
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  const Scenario& s = LoadScenario("equal_n.json");
  const BatchData& b = s.batches[0];
  std::vector<BatchInput> messages = MessagesPerLayer(s, b);
  ASSERT_GE(messages.size(), 2u);
  messages[0].step = 5;
  messages[1].step = 15;  // same batch_id, later step: still bucket [0, 9]
  ASSERT_TRUE((*session)->Ingest(messages[0]).ok());
  ASSERT_TRUE((*session)->Ingest(messages[1]).ok());
  SimilarityQuery q;
  q.rows = {"m/a"};
  q.cols = {"m/b"};
  q.step_min = 0;
  q.step_max = 9;
  SimilarityMatrix first = QueryOrDie(**session, q);
  q.step_min = 10;
  q.step_max = 19;
  SimilarityMatrix second = QueryOrDie(**session, q);
  ASSERT_EQ(first.batches.size(), 1u);
  ASSERT_EQ(second.batches.size(), 1u);
  EXPECT_EQ(first.batches[0], 1);
  EXPECT_FALSE(std::isnan(first.values[0]));
  EXPECT_EQ(second.batches[0], 0);
  EXPECT_TRUE(std::isnan(second.values[0]));
}

TEST(MinibatchCkaTest, DuplicateLayersAreIgnored) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  const std::vector<SimilarityMatrix> before = AllAnswers(*session, s);
  const SessionInfo info = session->Info();
  // The whole resnet message of b0 again.
  const BatchInput again = MessagesPerSource(s, s.batches[0])[0];
  ASSERT_EQ(again.source, "resnet");
  auto r = session->Ingest(again);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->duplicate());
  EXPECT_EQ(r->layers_applied, 0);
  EXPECT_EQ(r->layers_duplicate, 2);
  const std::vector<SimilarityMatrix> after = AllAnswers(*session, s);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    ExpectMatricesIdentical(after[i], before[i], "answer " + std::to_string(i));
  }
  EXPECT_EQ(session->Info().batches_applied, info.batches_applied);
}

TEST(MinibatchCkaTest, PartlyDuplicateMessageAppliesOnlyNewLayers) {
  const Scenario& s = LoadScenario("multibatch.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  // b2 has vit/head but no vit/block0: resend head (a duplicate) together with
  // a new block0 built from b2's conv1 columns.
  const BatchData& b2 = s.batches[2];
  ASSERT_EQ(b2.batch_id, "b2");
  std::vector<BatchInput> messages = MessagesPerSource(s, b2);
  const BatchInput* vit = nullptr;
  for (const BatchInput& m : messages) {
    if (m.source == "vit") vit = &m;
  }
  ASSERT_NE(vit, nullptr);
  ASSERT_EQ(vit->layers.size(), 1u);
  const LayerData& conv1 = b2.layers[0];
  ASSERT_EQ(conv1.stream, "resnet/conv1");
  // n × 8 values (vit/block0 is n × 2 × 4) taken from conv1's first 8 columns.
  std::vector<double> block0(b2.n * 8);
  for (int64_t i = 0; i < b2.n; ++i) {
    for (int j = 0; j < 8; ++j) block0[i * 8 + j] = conv1.x[i * 24 + j];
  }
  BatchInput mixed = *vit;
  LayerInput extra;
  extra.layer = "block0";
  extra.tensor = TensorView{{b2.n, 2, 4},
                            DType::kFloat64,
                            block0.data(),
                            block0.size() * sizeof(double)};
  mixed.layers.push_back(extra);
  auto r = session->Ingest(mixed);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->duplicate());
  EXPECT_EQ(r->layers_applied, 1);
  EXPECT_EQ(r->layers_duplicate, 1);
  SimilarityQuery q;
  q.rows = {"vit/block0"};
  q.cols = {"vit/head"};
  const SimilarityMatrix m = QueryOrDie(*session, q);
  ASSERT_EQ(m.batches.size(), 1u);
  EXPECT_EQ(m.batches[0], s.expected.at("linear").batches[2 * 5 + 3] + 1);
}

// Streams declared, only one of two ever sent: every batch waits, and the join
// buffer must evict (and count) rather than grow or drop silently.
TEST(MinibatchCkaTest, JoinBufferEvictsOldestAndCountsByBatches) {
  SessionConfig config;
  config.streams = {"a", "b"};
  SessionLimits limits;
  limits.max_pending_batches = 2;
  auto session = Session::Create(config, limits);
  ASSERT_TRUE(session.ok()) << session.status();
  std::vector<double> x(8 * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(1.0 + 0.7 * i);
  int64_t evicted = 0;
  for (int b = 0; b < 5; ++b) {
    BatchInput in{
        "", "batch" + std::to_string(b), b, {DoubleLayer("a", 8, 3, x)}};
    auto r = (*session)->Ingest(in);
    ASSERT_TRUE(r.ok()) << r.status();
    evicted += r->batches_evicted;
  }
  const SessionInfo info = (*session)->Info();
  EXPECT_EQ(info.batches_pending, 2);
  EXPECT_EQ(info.batches_evicted, 3);
  EXPECT_EQ(evicted, 3);
}

TEST(MinibatchCkaTest, JoinBufferEvictsByBytes) {
  SessionConfig config;
  config.streams = {"a", "b"};
  std::vector<double> x(8 * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.3 + 1.1 * i);
  auto probe = Session::Create(config);
  ASSERT_TRUE(probe.ok());
  auto prepared =
      (*probe)->Prepare(BatchInput{"", "p", 0, {DoubleLayer("a", 8, 3, x)}});
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const int64_t one = prepared->bytes();
  ASSERT_GT(one, 0);

  SessionLimits limits;
  limits.max_pending_bytes = 2 * one + one / 2;
  auto session = Session::Create(config, limits);
  ASSERT_TRUE(session.ok());
  int64_t evicted = 0;
  for (int b = 0; b < 5; ++b) {
    auto r = (*session)->Ingest(BatchInput{
        "", "batch" + std::to_string(b), b, {DoubleLayer("a", 8, 3, x)}});
    ASSERT_TRUE(r.ok()) << r.status();
    evicted += r->batches_evicted;
  }
  const SessionInfo info = (*session)->Info();
  EXPECT_LE(info.pending_bytes, limits.max_pending_bytes);
  EXPECT_GE(info.batches_evicted, 3);
  EXPECT_EQ(info.batches_evicted, evicted);
  EXPECT_EQ(info.batches_pending + info.batches_evicted, 5);

  // A batch that alone exceeds the join buffer is refused, naming the figures.
  limits.max_pending_bytes = one / 2;
  auto tiny = Session::Create(config, limits);
  ASSERT_TRUE(tiny.ok());
  auto r =
      (*tiny)->Ingest(BatchInput{"", "big", 0, {DoubleLayer("a", 8, 3, x)}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
      << r.status();
  EXPECT_NE(r.status().message().find(std::to_string(limits.max_pending_bytes)),
            std::string::npos)
      << r.status();
  EXPECT_EQ((*tiny)->Info().batches_applied, 0);
}

TEST(MinibatchCkaTest, Float16AndBFloat16MatchDecodedValues) {
  const Scenario& s = LoadScenario("low_precision.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(*session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat32Rel, kFloat32Abs, m.name);
  }
}

TEST(MinibatchCkaTest, RealisticFloat32ActivationsWithinOneMicroOfFloat64) {
  // ReLU activations, n = 96 and 64, d = 256..448; expected values are float64
  // on the float32-rounded inputs, so only the engine's float32 Gram arithmetic
  // differs.
  const Scenario& s = LoadScenario("realistic.json");
  std::unique_ptr<Session> session = SessionWithAll(s);
  ASSERT_NE(session, nullptr);
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(*session, FullQuery(s, m.name)),
                     s.expected.at(m.name), kFloat32Rel, kFloat32Abs, m.name);
  }
}

}  // namespace
}  // namespace cka::core::testing
