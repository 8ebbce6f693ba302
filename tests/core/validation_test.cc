// Every rejected input: the status code, a message naming the offending field
// or value, and a session whose answers and counters are exactly what they were
// before.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// Owns the bytes of the tensors a case builds.
class Storage {
 public:
  // Returns a layer of n × trailing values v(i) of `dtype` (written as float64,
  // float32 or 16-bit patterns of the float32 value for float16/bfloat16 via
  // `bits`).
  LayerInput Layer(const std::string& name, std::vector<int64_t> shape,
                   DType dtype = DType::kFloat64,
                   std::function<double(size_t)> v = nullptr) {
    size_t count = 1;
    for (int64_t s : shape) count *= static_cast<size_t>(s);
    if (!v)
      v = [](size_t i) {
        return std::sin(0.77 * static_cast<double>(i) + 0.3);
      };
    std::vector<uint8_t>& bytes =
        buffers_.emplace_back(count * DTypeSize(dtype));
    for (size_t i = 0; i < count; ++i) {
      const double x = v(i);
      if (dtype == DType::kFloat64) {
        std::memcpy(bytes.data() + 8 * i, &x, 8);
      } else if (dtype == DType::kFloat32) {
        const float f = static_cast<float>(x);
        std::memcpy(bytes.data() + 4 * i, &f, 4);
      } else {
        // Small integers are exact in both 16-bit formats; the caller picks raw
        // patterns.
        const uint16_t bits = static_cast<uint16_t>(x);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
      }
    }
    LayerInput in;
    in.layer = name;
    in.tensor = TensorView{std::move(shape), dtype, bytes.data(), bytes.size()};
    return in;
  }
  // Returns a float64 Gram layer of the n × n matrix k.
  LayerInput Gram(const std::string& name, int64_t n, int64_t m,
                  const std::vector<double>& k) {
    std::vector<uint8_t>& bytes = buffers_.emplace_back(k.size() * 8);
    std::memcpy(bytes.data(), k.data(), bytes.size());
    LayerInput in;
    in.layer = name;
    in.kind = LayerInput::Kind::kGram;
    in.tensor = TensorView{{n, m}, DType::kFloat64, bytes.data(), bytes.size()};
    return in;
  }

 private:
  std::deque<std::vector<uint8_t>> buffers_;
};

// A symmetric positive semi-definite n × n Gram of sin-valued 3-column
// activations.
std::vector<double> SymmetricGram(int64_t n) {
  std::vector<double> x(n * 3), k(n * n);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(1.3 * i + 0.2);
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) {
      double s = 0;
      for (int j = 0; j < 3; ++j) s += x[a * 3 + j] * x[b * 3 + j];
      k[a * n + b] = s;
    }
  }
  return k;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

struct IngestCase {
  const char* name;
  SessionConfig config;
  SessionLimits limits;
  // Valid messages sent before the snapshot (after the baseline batch).
  std::function<std::vector<BatchInput>(Storage&)> setup;
  std::function<BatchInput(Storage&)> bad;
  absl::StatusCode code;
  std::vector<std::string> message_contains;
};

SessionConfig Declared(std::vector<std::string> streams,
                       std::vector<Measure> measures = {}) {
  SessionConfig c;
  c.streams = std::move(streams);
  c.measures = std::move(measures);
  return c;
}

SessionConfig OnlyMeasures(std::vector<Measure> measures) {
  SessionConfig c;
  c.measures = std::move(measures);
  return c;
}

const Measure kLinearBiased{"linear_biased", Kernel::kLinear, 0.0,
                            Estimator::kBiased};
const Measure kRbf{"rbf", Kernel::kRbf, 0.5, Estimator::kUnbiased};
const Measure kExact{"exact", Kernel::kLinear, 0.0, Estimator::kExact};

SessionConfig StepBuckets() {
  SessionConfig c;
  c.step_bucket = 1;
  return c;
}

SessionLimits Limits(const std::function<void(SessionLimits&)>& set) {
  SessionLimits limits;
  set(limits);
  return limits;
}

BatchInput Batch(std::string batch_id, std::vector<LayerInput> layers,
                 std::string source = "") {
  return BatchInput{std::move(source), std::move(batch_id), 0,
                    std::move(layers)};
}

std::vector<IngestCase> IngestCases() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  using S = Storage;
  const auto none = [](S&) { return std::vector<BatchInput>{}; };
  std::vector<IngestCase> cases = {
      {"UnbiasedNeedsFourRows",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {3, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"'bad'", "3", "unbiased"}},
      {"BiasedNeedsTwoRows",
       OnlyMeasures({kLinearBiased}),
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {1, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"'bad'", "1", "biased estimator"}},
      {"ZeroWidthIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 0})});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1", "0"}},
      {"ZeroTrailingDimensionIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 4, 0})});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"ZeroRowsAreRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {0, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"RankOneIsRejected",
       {},
       {},
       none,
       [](S& s) { return Batch("bad", {s.Layer("conv1", {8})}); },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"ByteCountMustMatchShape",
       {},
       {},
       none,
       [](S& s) {
         LayerInput l = s.Layer("conv1", {8, 4});
         l.tensor.size_bytes -= 8;  // 248 bytes for 8 × 4 float64 = 256
         return Batch("bad", {l});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1", "248", "256"}},
      {"NaNIsRejected",
       {},
       {},
       none,
       [nan](S& s) {
         return Batch(
             "bad", {s.Layer("conv1", {8, 4}, DType::kFloat64, [nan](size_t i) {
               return i == 13 ? nan : 0.5 * i;
             })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"InfInFloat32IsRejected",
       {},
       {},
       none,
       [inf](S& s) {
         return Batch(
             "bad", {s.Layer("conv1", {8, 4}, DType::kFloat32, [inf](size_t i) {
               return i == 31 ? -inf : 0.5 * i;
             })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"Float32OverflowInTheGramIsRejected",
       {},
       {},
       none,
       [](S& s) {
         // Finite values whose squares overflow float32 (3e38 max).
         return Batch("bad", {s.Layer("conv1", {8, 4}, DType::kFloat32,
                                      [](size_t i) { return 1e20 + i; })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1", "row 0", "overflows float32"}},
      {"NaNInFloat16IsRejected",
       {},
       {},
       none,
       [](S& s) {
         // 0x3c00 = 1.0, 0x4000 = 2.0, 0x7e00 = NaN.
         return Batch("bad",
                      {s.Layer("conv1", {8, 4}, DType::kFloat16, [](size_t i) {
                        return i == 5 ? 0x7e00 : (i % 2 ? 0x3c00 : 0x4000 + i);
                      })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"InfInBFloat16IsRejected",
       {},
       {},
       none,
       [](S& s) {
         // 0x3f80 = 1.0, 0x7f80 = +Inf.
         return Batch("bad",
                      {s.Layer("conv1", {8, 4}, DType::kBFloat16, [](size_t i) {
                        return i == 7 ? 0x7f80 : 0x3f80 + 3 * i;
                      })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"RowsMustAgreeWithinAMessage",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 4}), s.Layer("fc", {6, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"8", "6"}},
      {"RowsMustAgreeAcrossMessages",
       {},
       {},
       [](S& s) {
         return std::vector<BatchInput>{
             Batch("split", {s.Layer("conv1", {8, 4})})};
       },
       [](S& s) {
         return Batch("split", {s.Layer("fc", {6, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"fc", "6", "8", "conv1"}},
      {"NonSymmetricGramIsRejected",
       {},
       {},
       none,
       [](S& s) {
         std::vector<double> k = SymmetricGram(6);
         k[0 * 6 + 1] += 1e-3 * MaxAbs(k);
         return Batch("bad", {s.Gram("conv1", 6, 6, k)});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"NonSquareGramIsRejected",
       {},
       {},
       none,
       [](S& s) {
         std::vector<double> k = SymmetricGram(6);
         k.resize(6 * 5);
         return Batch("bad", {s.Gram("conv1", 6, 5, k)});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"IdenticalExamplesUnderRbfAreRejected",
       OnlyMeasures({kRbf}),
       {},
       none,
       [](S& s) {
         return Batch("bad",
                      {s.Layer("conv1", {8, 4}, DType::kFloat64,
                               [](size_t i) { return 0.25 * (i % 4); })});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"EmptyLayerNameIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("", {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"layer"}},
      {"EmptyBatchIdIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("", {s.Layer("conv1", {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"batch_id"}},
      {"OverlongLayerNameIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer(std::string(257, 'l'), {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"layer", "257"}},
      {"OverlongBatchIdIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch(std::string(257, 'b'), {s.Layer("conv1", {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"batch_id", "257"}},
      {"OverlongSourceIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 4})}, std::string(257, 's'));
       },
       absl::StatusCode::kInvalidArgument,
       {"source", "257"}},
      {"SourceWithSlashIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 4})}, "res/net");
       },
       absl::StatusCode::kInvalidArgument,
       {"source", "res/net"}},
      {"ControlCharacterInBatchIdIsRejected",
       {},
       {},
       none,
       [](S& s) {
         return Batch("bad\n1", {s.Layer("conv1", {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"batch_id"}},
      {"GramInExactSessionIsRejected",
       Declared({"conv1", "fc"}, {kExact}),
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Gram("conv1", 6, 6, SymmetricGram(6))});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1"}},
      {"UndeclaredStreamIsRejected",
       Declared({"conv1", "fc"}),
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv2", {8, 4})});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv2"}},
      {"WidthChangeInExactSessionIsRejected",
       Declared({"conv1", "fc"}, {kExact}),
       {},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {8, 5}), s.Layer("fc", {8, 3})});
       },
       absl::StatusCode::kInvalidArgument,
       {"conv1", "5", "4"}},
      {"TooManyExamplesAreRefused",
       {},
       SessionLimits{1024, 16},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {17, 4})});
       },
       absl::StatusCode::kResourceExhausted,
       {"17", "16"}},
      {"NewStepBucketOverMaxBucketsIsRefused",
       StepBuckets(),
       Limits([](SessionLimits& l) { l.max_buckets = 1; }),
       none,
       [](S& s) {
         return BatchInput{"", "bad", 5, {s.Layer("conv1", {8, 4})}};
       },
       absl::StatusCode::kResourceExhausted,
       {"'bad'", "step 5", "1 buckets"}},
      {"StateOverMaxStateBytesIsRefused",
       StepBuckets(),
       Limits([](SessionLimits& l) { l.max_state_bytes = 1000; }),
       none,
       [](S& s) {
         std::vector<LayerInput> layers;
         for (int i = 0; i < 10; ++i)
           layers.push_back(s.Layer("new" + std::to_string(i), {8, 2}));
         return BatchInput{"", "bad", 5, std::move(layers)};
       },
       absl::StatusCode::kResourceExhausted,
       {"'bad'", "state budget of 1000 bytes"}},
      {"BatchOverTheMemoryBudgetIsRefused",
       {},
       Limits([](SessionLimits& l) {
         l.memory = std::make_shared<MemoryBudget>(1 << 20, "the test's limit");
       }),
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv1", {512, 1})});
       },
       absl::StatusCode::kResourceExhausted,
       {"'bad'", "512 examples", "the test's limit"}},
      {"TooManyStreamsAreRefused",
       {},
       SessionLimits{2},
       none,
       [](S& s) {
         return Batch("bad", {s.Layer("conv3", {8, 4})});
       },
       absl::StatusCode::kResourceExhausted,
       {"'bad'", "2"}},
  };
  return cases;
}

void PrintTo(const IngestCase& c, std::ostream* os) { *os << c.name; }

class IngestValidationTest : public ::testing::TestWithParam<IngestCase> {};

TEST_P(IngestValidationTest, RejectsWithCodeAndMessageAndChangesNothing) {
  const IngestCase& c = GetParam();
  auto session = Session::Create(c.config, c.limits);
  ASSERT_TRUE(session.ok()) << session.status();
  Storage storage;
  // Baseline: one complete valid batch of every stream the cases use (conv1: 8
  // × 4, fc: 8 × 3).
  auto base = (*session)->Ingest(Batch(
      "base", {storage.Layer("conv1", {8, 4}),
               storage.Layer("fc", {8, 3}, DType::kFloat64,
                             [](size_t i) { return std::cos(1.7 * i); })}));
  ASSERT_TRUE(base.ok()) << base.status();
  for (const BatchInput& m : c.setup(storage)) {
    auto r = (*session)->Ingest(m);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  const SessionInfo info = (*session)->Info();
  SimilarityQuery all;
  const SimilarityMatrix before = QueryOrDie(**session, all);

  const BatchInput bad = c.bad(storage);
  auto prepared = (*session)->Prepare(bad);
  auto result = (*session)->Ingest(bad);
  ASSERT_FALSE(result.ok()) << c.name;
  EXPECT_EQ(result.status().code(), c.code) << result.status();
  for (const std::string& part : c.message_contains) {
    EXPECT_NE(result.status().message().find(part), std::string::npos)
        << "message should name '" << part << "': " << result.status();
  }
  // Prepare alone rejects everything it can see without the session's state.
  if (!prepared.ok()) {
    EXPECT_EQ(prepared.status().code(), c.code) << prepared.status();
  }

  const SessionInfo after = (*session)->Info();
  EXPECT_EQ(after.streams, info.streams);
  EXPECT_EQ(after.batches_applied, info.batches_applied);
  EXPECT_EQ(after.batches_pending, info.batches_pending);
  EXPECT_EQ(after.batches_evicted, info.batches_evicted);
  EXPECT_EQ(after.pending_bytes, info.pending_bytes);
  ExpectMatricesIdentical(QueryOrDie(**session, all), before, c.name);
}

INSTANTIATE_TEST_SUITE_P(EveryBadInput, IngestValidationTest,
                         ::testing::ValuesIn(IngestCases()),
                         [](const auto& info) {
                           return std::string(info.param.name);
                         });

// Names are 1..256 bytes; the stream name "source/layer" is held to the same
// limit.
TEST(ValidationTest, LongestNamesAreAccepted) {
  auto session = Session::Create({});
  ASSERT_TRUE(session.ok());
  Storage s;
  auto r = (*session)->Ingest(
      Batch(std::string(256, 'b'), {s.Layer(std::string(256, 'l'), {8, 4})}));
  EXPECT_TRUE(r.ok()) << r.status();
  r = (*session)->Ingest(Batch("b2", {s.Layer(std::string(55, 'l'), {8, 4})},
                               std::string(200, 's')));
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST(ValidationTest, GramAsymmetryWithinToleranceIsAccepted) {
  auto session = Session::Create({});
  ASSERT_TRUE(session.ok());
  std::vector<double> k = SymmetricGram(6);
  k[0 * 6 + 1] += 1e-7 * MaxAbs(k);  // below the 1e-5 · max|K| tolerance
  Storage s;
  auto r = (*session)->Ingest(Batch("ok", {s.Gram("conv1", 6, 6, k)}));
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST(ValidationTest, BiasedAcceptsTwoRows) {
  auto session = Session::Create(OnlyMeasures({kLinearBiased}));
  ASSERT_TRUE(session.ok());
  Storage s;
  auto r = (*session)->Ingest(
      Batch("ok", {s.Layer("conv1", {2, 4}), s.Layer("fc", {2, 3})}));
  EXPECT_TRUE(r.ok()) << r.status();
}

struct QueryCase {
  const char* name;
  SimilarityQuery query;
  absl::StatusCode code;
  std::vector<std::string> message_contains;
};

SimilarityQuery Q(std::string measure, std::vector<std::string> rows = {},
                  std::optional<int64_t> lo = std::nullopt,
                  std::optional<int64_t> hi = std::nullopt) {
  SimilarityQuery q;
  q.measure = std::move(measure);
  q.rows = std::move(rows);
  q.step_min = lo;
  q.step_max = hi;
  return q;
}

void PrintTo(const QueryCase& c, std::ostream* os) { *os << c.name; }

class QueryValidationTest : public ::testing::TestWithParam<QueryCase> {};

// A session with step buckets of 10 and a bucketless one, each with minibatch
// and exact measures over the declared streams a and b.
TEST_P(QueryValidationTest, RejectsWithCodeAndMessage) {
  const QueryCase& c = GetParam();
  SessionConfig config;
  config.measures = {
      Measure{"linear", Kernel::kLinear, 0.0, Estimator::kUnbiased}, kExact};
  config.streams = {"a", "b"};
  config.step_bucket =
      std::string(c.name).find("Bucketless") == std::string::npos ? 10 : 0;
  auto session = Session::Create(config);
  ASSERT_TRUE(session.ok()) << session.status();
  Storage s;
  ASSERT_TRUE(
      (*session)
          ->Ingest(BatchInput{
              "", "b0", 3, {s.Layer("a", {8, 4}), s.Layer("b", {8, 2})}})
          .ok());
  SimilarityQuery q = c.query;
  auto result = (*session)->Query(q);
  ASSERT_FALSE(result.ok()) << c.name;
  EXPECT_EQ(result.status().code(), c.code) << result.status();
  for (const std::string& part : c.message_contains) {
    EXPECT_NE(result.status().message().find(part), std::string::npos)
        << "message should name '" << part << "': " << result.status();
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryBadQuery, QueryValidationTest,
    ::testing::Values(QueryCase{"UnknownMeasureIsNotFound",
                                Q("cosine"),
                                absl::StatusCode::kNotFound,
                                {"cosine"}},
                      QueryCase{"UnknownRowStreamIsNotFound",
                                Q("", {"a", "zz"}),
                                absl::StatusCode::kNotFound,
                                {"zz"}},
                      QueryCase{"StreamNamedTwiceInRowsIsInvalid",
                                Q("", {"a", "b", "a"}),
                                absl::StatusCode::kInvalidArgument,
                                {"'a'", "twice", "0 and 2"}},
                      QueryCase{"StepRangeOnExactMeasureIsFailedPrecondition",
                                Q("exact", {}, 0, 9),
                                absl::StatusCode::kFailedPrecondition,
                                {"exact"}},
                      QueryCase{"StepMinNotStartingABucketIsInvalid",
                                Q("linear", {}, 5, 9),
                                absl::StatusCode::kInvalidArgument,
                                {"5"}},
                      QueryCase{"StepMaxNotEndingABucketIsInvalid",
                                Q("linear", {}, 0, 18),
                                absl::StatusCode::kInvalidArgument,
                                {"18"}},
                      QueryCase{"EmptyStepRangeIsInvalid",
                                Q("linear", {}, 10, 9),
                                absl::StatusCode::kInvalidArgument,
                                {"10", "9"}},
                      QueryCase{
                          "StepRangeInBucketlessSessionIsFailedPrecondition",
                          Q("linear", {}, 0, 9),
                          absl::StatusCode::kFailedPrecondition,
                          {}}),
    [](const auto& info) { return std::string(info.param.name); });

// The ends of the int64 range are steps like any other: no overflow when
// checking bucket boundaries or suggesting the nearest ones.
TEST(ValidationTest, StepRangesAtTheEndsOfInt64AreCheckedWithoutOverflow) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t bucket : {1, 3, 10}) {
    SCOPED_TRACE(bucket);
    SessionConfig config;
    config.step_bucket = bucket;
    auto session = Session::Create(config);
    ASSERT_TRUE(session.ok());
    Storage s;
    ASSERT_TRUE((*session)
                    ->Ingest(BatchInput{"", "b0", kMax, {s.Layer("a", {8, 4})}})
                    .ok());
    ASSERT_TRUE((*session)
                    ->Ingest(BatchInput{"", "b1", kMin, {s.Layer("a", {8, 4})}})
                    .ok());
    // kMax ends its bucket only for widths dividing 2^63; kMin starts its
    // bucket only for widths dividing 2^63.
    const bool aligned = bucket == 1;
    SimilarityQuery all = Q("", {}, kMin, kMax);
    auto m = (*session)->Query(all);
    EXPECT_EQ(m.ok(), aligned) << m.status();
    if (aligned) {
      EXPECT_EQ(m->batches[0], 2);
    } else {
      EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    }
    auto last = (*session)->Query(Q("", {}, std::nullopt, kMax));
    EXPECT_EQ(last.ok(), aligned) << last.status();
  }
}

TEST(ValidationTest, UnknownColumnStreamIsNotFound) {
  auto session = Session::Create({});
  ASSERT_TRUE(session.ok());
  Storage s;
  ASSERT_TRUE((*session)->Ingest(Batch("b0", {s.Layer("a", {8, 4})})).ok());
  SimilarityQuery q;
  q.cols = {"a", "nope"};
  auto result = (*session)->Query(q);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound)
      << result.status();
  EXPECT_NE(result.status().message().find("nope"), std::string::npos)
      << result.status();
}

struct ConfigCase {
  const char* name;
  SessionConfig config;
  std::vector<std::string> message_contains;
};

SessionConfig WithMeasures(std::vector<Measure> m,
                           std::vector<std::string> streams = {}) {
  SessionConfig c;
  c.measures = std::move(m);
  c.streams = std::move(streams);
  return c;
}

void PrintTo(const ConfigCase& c, std::ostream* os) { *os << c.name; }

class ConfigValidationTest : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(ConfigValidationTest, CreateRejectsWithInvalidArgumentNamingTheField) {
  const ConfigCase& c = GetParam();
  auto session = Session::Create(c.config);
  ASSERT_FALSE(session.ok()) << c.name;
  EXPECT_EQ(session.status().code(), absl::StatusCode::kInvalidArgument)
      << session.status();
  for (const std::string& part : c.message_contains) {
    EXPECT_NE(session.status().message().find(part), std::string::npos)
        << "message should name '" << part << "': " << session.status();
  }
  EXPECT_EQ(ValidateConfig(WithDefaults(c.config)).code(),
            absl::StatusCode::kInvalidArgument);
}

const Measure kLin{"lin", Kernel::kLinear, 0.0, Estimator::kUnbiased};

INSTANTIATE_TEST_SUITE_P(
    EveryBadConfig, ConfigValidationTest,
    ::testing::Values(
        ConfigCase{"DuplicateMeasureName", WithMeasures({kLin, kLin}), {"lin"}},
        ConfigCase{"EmptyMeasureName",
                   WithMeasures({Measure{"", Kernel::kLinear, 0.0,
                                         Estimator::kUnbiased}}),
                   {"measure"}},
        ConfigCase{"ZeroRbfThreshold",
                   WithMeasures({Measure{"r", Kernel::kRbf, 0.0,
                                         Estimator::kUnbiased}}),
                   {"'r'"}},
        ConfigCase{"NaNRbfThreshold",
                   WithMeasures({Measure{"r", Kernel::kRbf, std::nan(""),
                                         Estimator::kBiased}}),
                   {"'r'"}},
        ConfigCase{
            "ExactWithoutDeclaredStreams", WithMeasures({kExact}), {"exact"}},
        ConfigCase{
            "ExactWithRbfKernel",
            WithMeasures({Measure{"x", Kernel::kRbf, 0.5, Estimator::kExact}},
                         {"a"}),
            {"'x'"}},
        ConfigCase{"WidthsOfWrongCount",
                   [] {
                     SessionConfig c = WithMeasures({kExact}, {"a", "b"});
                     c.stream_widths = {3};
                     return c;
                   }(),
                   {"stream_widths"}},
        ConfigCase{"NegativeWidth",
                   [] {
                     SessionConfig c = WithMeasures({kExact}, {"a", "b"});
                     c.stream_widths = {3, -1};
                     return c;
                   }(),
                   {"-1"}},
        ConfigCase{"NegativeStepBucket",
                   [] {
                     SessionConfig c;
                     c.step_bucket = -10;
                     return c;
                   }(),
                   {"step_bucket", "-10"}},
        ConfigCase{"DuplicateDeclaredStream",
                   WithMeasures({kLin}, {"m/a", "m/a"}),
                   {"m/a"}},
        ConfigCase{"OverlongDeclaredStream",
                   WithMeasures({kLin}, {std::string(300, 'q')}),
                   {}}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace cka::core::testing
