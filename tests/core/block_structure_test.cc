// FindLayerBlocks (core/MATH.md, "Block structure") on constructed matrices
// with known blocks, against a brute-force reading of the rule on random
// matrices, and through Session::Query on activations whose blocks are known
// by construction (layers that are noisy copies of one another).
#include "cka/core/block_structure.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kLow = 0.3;
constexpr double kHigh = 0.99;

// An S × S matrix with 1 on the diagonal and kLow elsewhere.
std::vector<double> Background(size_t s) {
  std::vector<double> v(s * s, kLow);
  for (size_t i = 0; i < s; ++i) v[i * s + i] = 1.0;
  return v;
}

void Set(std::vector<double>& v, size_t s, size_t i, size_t j, double x) {
  v[i * s + j] = x;
  v[j * s + i] = x;
}

// Sets every pair within streams first..last to `x`.
void SetBlock(std::vector<double>& v, size_t s, size_t first, size_t last,
              double x) {
  for (size_t i = first; i <= last; ++i) {
    for (size_t j = i + 1; j <= last; ++j) Set(v, s, i, j, x);
  }
}

std::vector<std::string> Layers(const std::string& source, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(source + "/l" + std::to_string(i));
  return out;
}

std::vector<LayerBlock> FindOrDie(const std::vector<std::string>& streams,
                                  const std::vector<double>& values,
                                  BlockOptions options = {0.9, 0.5}) {
  absl::StatusOr<std::vector<LayerBlock>> b =
      FindLayerBlocks(streams, values, options);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : std::vector<LayerBlock>{};
}

TEST(BlockStructureTest, FindsAKnownBlockWithItsStatistics) {
  const std::vector<std::string> streams = Layers("net", 6);
  std::vector<double> v = Background(6);
  SetBlock(v, 6, 1, 4, kHigh);
  Set(v, 6, 2, 3, 0.995);
  const std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].source, "net");
  EXPECT_EQ(b[0].first_stream, "net/l1");
  EXPECT_EQ(b[0].last_stream, "net/l4");
  EXPECT_EQ(b[0].first_layer, 1);
  EXPECT_EQ(b[0].length, 4);
  EXPECT_EQ(b[0].source_layers, 6);
  // 6 unordered pairs: five at kHigh, one at 0.995.
  EXPECT_DOUBLE_EQ(b[0].mean_value, (5 * kHigh + 0.995) / 6);
  EXPECT_DOUBLE_EQ(b[0].min_value, kHigh);
  EXPECT_TRUE(b[0].warning) << "4 of 6 layers is past half";
}

TEST(BlockStructureTest, OverlappingCandidatesGiveTheLongestFirst) {
  // l1..l3 all alike, and l0 ~ l1, l3 ~ l4: candidates [0,1], [1,3], [3,4].
  // Left to right would take [0,1] and then [2,3]; longest first keeps the
  // three-layer block whole and leaves l0 and l4 alone.
  const std::vector<std::string> streams = Layers("net", 5);
  std::vector<double> v = Background(5);
  SetBlock(v, 5, 1, 3, kHigh);
  Set(v, 5, 0, 1, kHigh);
  Set(v, 5, 3, 4, kHigh);
  const std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].first_layer, 1);
  EXPECT_EQ(b[0].length, 3);
}

TEST(BlockStructureTest, NonTransitiveChainBreaksTiesToTheEarliest) {
  // a ~ b, b ~ c, c ~ d, nothing else: candidates [0,1], [1,2], [2,3], all of
  // length 2. The earliest, [0,1], is taken, then [2,3].
  const std::vector<std::string> streams = Layers("net", 4);
  std::vector<double> v = Background(4);
  for (size_t i = 0; i + 1 < 4; ++i) Set(v, 4, i, i + 1, kHigh);
  const std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].first_stream, "net/l0");
  EXPECT_EQ(b[0].last_stream, "net/l1");
  EXPECT_EQ(b[1].first_stream, "net/l2");
  EXPECT_EQ(b[1].last_stream, "net/l3");
  EXPECT_FALSE(b[0].warning) << "2 of 4 is not past half";
}

TEST(BlockStructureTest, NaNIsNeverAlike) {
  const std::vector<std::string> streams = Layers("net", 4);
  std::vector<double> v = Background(4);
  SetBlock(v, 4, 0, 3, kHigh);
  Set(v, 4, 0, 3, kNaN);  // l0..l3 is no longer a candidate; l0..l2 and
                          // l1..l3 are, and the earliest wins
  std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].first_layer, 0);
  EXPECT_EQ(b[0].length, 3);
  // A stream with no value at all (its whole row NaN) splits the run.
  v = Background(4);
  SetBlock(v, 4, 0, 3, kHigh);
  for (size_t j = 0; j < 4; ++j) Set(v, 4, 2, j, kNaN);
  b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].first_layer, 0);
  EXPECT_EQ(b[0].length, 2);
}

TEST(BlockStructureTest, AValueEqualToTheThresholdDoesNotExceedIt) {
  const std::vector<std::string> streams = Layers("net", 3);
  std::vector<double> v = Background(3);
  SetBlock(v, 3, 0, 2, 0.9);
  EXPECT_TRUE(FindOrDie(streams, v, {0.9, 0.5}).empty());
  const std::vector<LayerBlock> b =
      FindOrDie(streams, v, {std::nextafter(0.9, 0.0), 0.5});
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].length, 3);
  // Threshold 1: only values above 1 (which rounding can give) count.
  EXPECT_TRUE(FindOrDie(streams, Background(3), {1.0, 0.5}).empty());
}

TEST(BlockStructureTest, AnAsymmetricMeasureMustExceedTheThresholdBothWays) {
  const std::vector<std::string> streams = Layers("net", 3);
  std::vector<double> v = Background(3);
  SetBlock(v, 3, 0, 2, kHigh);
  v[2 * 3 + 1] = kLow;  // R²(l2 → l1) low, R²(l1 → l2) high
  const std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].last_stream, "net/l1");
}

TEST(BlockStructureTest, WarningNeedsMoreThanTheShare) {
  const std::vector<std::string> streams = Layers("net", 4);
  std::vector<double> v = Background(4);
  SetBlock(v, 4, 0, 2, kHigh);  // 3 of 4 layers
  EXPECT_TRUE(FindOrDie(streams, v, {0.9, 0.5})[0].warning);
  EXPECT_FALSE(FindOrDie(streams, v, {0.9, 0.75})[0].warning) << "3 = 0.75·4";
  EXPECT_TRUE(FindOrDie(streams, v, {0.9, 0.7})[0].warning);
}

TEST(BlockStructureTest, SourcesAreSeparateAndKeepTheirOrder) {
  // Interleaved: b/l0 a/l0 a/l1 b/l1 single a/l2. Consecutive means within a
  // source in the order given; entries between sources are never read, and
  // the source-less "single" (one layer) has no block.
  const std::vector<std::string> streams = {"b/l0", "a/l0",   "a/l1",
                                            "b/l1", "single", "a/l2"};
  const size_t s = streams.size();
  std::vector<double> v(s * s, kHigh);  // across sources too: ignored
  Set(v, s, 1, 5, kLow);                // a/l0 unlike a/l2
  const std::vector<LayerBlock> b = FindOrDie(streams, v);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].source, "b");
  EXPECT_EQ(b[0].first_stream, "b/l0");
  EXPECT_EQ(b[0].last_stream, "b/l1");
  EXPECT_EQ(b[0].source_layers, 2);
  EXPECT_TRUE(b[0].warning);
  EXPECT_EQ(b[1].source, "a");
  EXPECT_EQ(b[1].first_stream, "a/l0");
  EXPECT_EQ(b[1].last_stream, "a/l1");
  EXPECT_EQ(b[1].source_layers, 3);
  EXPECT_TRUE(b[1].warning) << "2 of 3";
  EXPECT_EQ(StreamSource("single"), "");
  EXPECT_EQ(StreamSource("a/b/c"), "a");
}

TEST(BlockStructureTest, SingleLayerSourcesAndEmptyInputHaveNoBlocks) {
  EXPECT_TRUE(FindOrDie({}, {}).empty());
  EXPECT_TRUE(
      FindOrDie({"a/l0", "b/l0", "c"}, std::vector<double>(9, kHigh)).empty());
}

TEST(BlockStructureTest, BadOptionsAndShapesAreInvalidArgument) {
  const std::vector<std::string> streams = Layers("net", 2);
  const std::vector<double> v = Background(2);
  struct Case {
    BlockOptions options;
    std::string field;
  };
  const double inf = std::numeric_limits<double>::infinity();
  for (const Case& c :
       std::vector<Case>{{{0.0, 0.5}, "block_threshold 0"},
                         {{-0.5, 0.5}, "block_threshold -0.5"},
                         {{1.5, 0.5}, "block_threshold 1.5"},
                         {{kNaN, 0.5}, "block_threshold nan"},
                         {{inf, 0.5}, "block_threshold inf"},
                         {{0.9, 0.0}, "block_warn_share 0"},
                         {{0.9, 2.0}, "block_warn_share 2"},
                         {{0.9, kNaN}, "block_warn_share nan"}}) {
    absl::StatusOr<std::vector<LayerBlock>> b =
        FindLayerBlocks(streams, v, c.options);
    ASSERT_FALSE(b.ok()) << c.field;
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(b.status().message().find(c.field), std::string::npos)
        << b.status();
  }
  absl::StatusOr<std::vector<LayerBlock>> b =
      FindLayerBlocks(streams, std::vector<double>(3), {0.9, 0.5});
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(FindLayerBlocks(streams, v, {1.0, 1.0}).ok()) << "both ends of "
                                                               "(0, 1]";
}

// The rule of block_structure.h read literally: list every candidate by
// checking all its pairs, then repeatedly take the longest (earliest on ties)
// that overlaps nothing taken. O(n⁴); for the small random cases below.
std::vector<std::pair<int, int>> BruteForceBlocks(const std::vector<double>& v,
                                                  int n, double t) {
  auto candidate = [&](int first, int last) {
    for (int i = first; i <= last; ++i) {
      for (int j = first; j <= last; ++j) {
        if (i != j && !(v[i * n + j] > t)) return false;
      }
    }
    return true;
  };
  std::vector<bool> taken(n, false);
  std::vector<std::pair<int, int>> out;  // (first, length)
  while (true) {
    int best_first = -1, best_len = 1;
    for (int first = 0; first < n; ++first) {
      for (int last = first + 1; last < n; ++last) {
        bool free = true;
        for (int k = first; k <= last; ++k) free = free && !taken[k];
        const int len = last - first + 1;
        if (free && candidate(first, last) && len > best_len) {
          best_first = first;
          best_len = len;
        }
      }
    }
    if (best_first < 0) break;
    for (int k = 0; k < best_len; ++k) taken[best_first + k] = true;
    out.emplace_back(best_first, best_len);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(BlockStructureTest, RandomMatricesFollowTheRuleReadLiterally) {
  const uint32_t seed = std::random_device{}();
  std::cout << "RandomMatricesFollowTheRuleReadLiterally seed " << seed << "\n";
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 10);
    const double p_alike = unit(rng);
    std::vector<double> v(static_cast<size_t>(n) * n, 1.0);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        const double u = unit(rng);
        v[i * n + j] = u < 0.05 ? kNaN : u < p_alike ? kHigh : kLow;
      }
    }
    const std::vector<std::pair<int, int>> want = BruteForceBlocks(v, n, 0.9);
    const std::vector<LayerBlock> got = FindOrDie(Layers("net", n), v);
    ASSERT_EQ(got.size(), want.size()) << "trial " << trial;
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(got[k].first_layer, want[k].first) << "trial " << trial;
      EXPECT_EQ(got[k].length, want[k].second) << "trial " << trial;
      EXPECT_EQ(got[k].warning, want[k].second > 0.5 * n);
    }
  }
}

// A session whose source "deep" has 8 layers: in batches at steps >= 10,
// layers 1..6 are noisy copies of one signal (a block by construction) and
// layers 0 and 7 independent; at steps < 10 all layers are independent.
// "shallow" has 3 independent layers, "head" (no source) one.
class BlockSessionTest : public ::testing::Test {
 protected:
  static constexpr int64_t kRows = 64, kWidth = 8;

  void SetUp() override {
    SessionConfig config;
    config.step_bucket = 10;
    absl::StatusOr<std::unique_ptr<Session>> s = Session::Create(config);
    ASSERT_TRUE(s.ok()) << s.status();
    session_ = *std::move(s);
    const uint32_t seed = std::random_device{}();
    std::cout << "BlockSessionTest seed " << seed << "\n";
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal;
    auto draw = [&] {
      std::vector<double> x(kRows * kWidth);
      for (double& e : x) e = normal(rng);
      return x;
    };
    for (int batch = 0; batch < 6; ++batch) {
      const int64_t step = batch < 3 ? 0 : 10;
      const std::string id = "b" + std::to_string(batch);
      const std::vector<double> signal = draw();
      std::vector<std::vector<double>> deep, shallow;
      for (int l = 0; l < 8; ++l) {
        std::vector<double> x = draw();
        if (step >= 10 && l >= 1 && l <= 6) {
          for (size_t e = 0; e < x.size(); ++e) x[e] = signal[e] + 0.05 * x[e];
        }
        deep.push_back(std::move(x));
      }
      for (int l = 0; l < 3; ++l) shallow.push_back(draw());
      const std::vector<double> head = draw();
      BatchInput d{"deep", id, step, {}}, sh{"shallow", id, step, {}},
          h{"", id, step, {DoubleLayer("head", kRows, kWidth, head)}};
      for (int l = 0; l < 8; ++l) {
        d.layers.push_back(
            DoubleLayer("l" + std::to_string(l), kRows, kWidth, deep[l]));
      }
      for (int l = 0; l < 3; ++l) {
        sh.layers.push_back(
            DoubleLayer("l" + std::to_string(l), kRows, kWidth, shallow[l]));
      }
      for (const BatchInput* in : {&d, &sh, &h}) {
        absl::StatusOr<IngestResult> r = session_->Ingest(*in);
        ASSERT_TRUE(r.ok()) << r.status();
      }
    }
  }

  std::unique_ptr<Session> session_;
};

TEST_F(BlockSessionTest, NoisyCopiesFormTheOnlyBlockWhateverRowsAreAsked) {
  SimilarityQuery q;
  q.rows = {"shallow/l0"};  // blocks cover every source all the same
  q.cols = {"head"};
  q.step_min = 10;
  q.step_max = 19;
  q.block_threshold = 0.9;
  absl::StatusOr<SimilarityMatrix> m = session_->Query(q);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->values.size(), 1u);
  ASSERT_EQ(m->blocks.size(), 1u);
  const LayerBlock& b = m->blocks[0];
  EXPECT_EQ(b.source, "deep");
  EXPECT_EQ(b.first_stream, "deep/l1");
  EXPECT_EQ(b.last_stream, "deep/l6");
  EXPECT_EQ(b.length, 6);
  EXPECT_EQ(b.source_layers, 8);
  EXPECT_TRUE(b.warning) << "6 of 8 layers";
  EXPECT_GT(b.min_value, 0.9);
  EXPECT_LE(b.min_value, b.mean_value);

  // The same as FindLayerBlocks on the session's own square matrix of deep.
  SimilarityQuery square;
  square.rows = Layers("deep", 8);
  square.cols = square.rows;
  square.step_min = 10;
  square.step_max = 19;
  const SimilarityMatrix deep = QueryOrDie(*session_, square);
  const std::vector<LayerBlock> want =
      FindOrDie(deep.rows, deep.values, {0.9, 0.5});
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(want[0].mean_value, b.mean_value);
  EXPECT_EQ(want[0].min_value, b.min_value);

  q.block_warn_share = 0.75;  // 6 = 0.75 · 8
  m = session_->Query(q);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->blocks.size(), 1u);
  EXPECT_FALSE(m->blocks[0].warning);
}

TEST_F(BlockSessionTest, TheStepRangeSelectsTheBatchesTheBlocksComeFrom) {
  SimilarityQuery q;
  q.block_threshold = 0.9;
  q.step_min = 0;
  q.step_max = 9;
  absl::StatusOr<SimilarityMatrix> m = session_->Query(q);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->blocks.empty()) << "independent layers before step 10";
  q.block_threshold.reset();
  m = session_->Query(q);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->blocks.empty()) << "no blocks unless asked";
}

TEST_F(BlockSessionTest, BadOptionsAndRangesAreRefusedBeforeAnyMatrix) {
  SimilarityQuery q;
  q.block_threshold = 1.5;
  absl::StatusOr<SimilarityMatrix> m = session_->Query(q);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("block_threshold 1.5"), std::string::npos)
      << m.status();
  q.block_threshold = 0.9;
  q.block_warn_share = 0.0;
  m = session_->Query(q);
  EXPECT_NE(m.status().message().find("block_warn_share 0"), std::string::npos)
      << m.status();
  q.block_warn_share = 0.5;
  q.step_min = 3;  // not a bucket start: the matrix's own error
  m = session_->Query(q);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("step_min 3"), std::string::npos);
}

}  // namespace
}  // namespace cka::core::testing
