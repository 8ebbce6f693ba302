// The moment measures' spectra kept between queries
// (core/src/spectrum_cache.h): SpectrumCache on its own (states, cap, budget),
// and through Session::Query, where every answer must be the same bits as a
// fresh session's on the same data, which computes every spectrum itself.
#include "spectrum_cache.h"

#include <cstdint>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cka/core/config.h"
#include "cka/core/memory_budget.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "measures/moment_algebra.h"
#include "moment_matrix.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

using measures_internal::KeptSpectrum;

// A spectrum of a d-wide stream keeping r directions (values only matter for
// their sizes here).
SharedSpectrum SpectrumOf(int64_t d, int64_t r) {
  auto s = std::make_shared<KeptSpectrum>();
  s->vectors = Eigen::MatrixXd::Identity(d, r);
  s->values = Eigen::VectorXd::Ones(r);
  return s;
}

TEST(SpectrumCacheTest, EntryBytesAreTheVectorsValuesAndAFixedOverhead) {
  const int64_t small = SpectrumCache::EntryBytes(*SpectrumOf(4, 3));
  const int64_t large = SpectrumCache::EntryBytes(*SpectrumOf(10, 7));
  EXPECT_GT(small, 8 * (4 * 3 + 3));
  // The overhead is the same for every entry.
  EXPECT_EQ(large - small, 8 * (10 * 7 + 7) - 8 * (4 * 3 + 3));
}

TEST(SpectrumCacheTest, KeepsOneStateAndDropsTheOlderOne) {
  MemoryBudget budget(int64_t{1} << 20, "test");
  SpectrumCache cache(&budget, int64_t{1} << 20);
  const SharedSpectrum a = SpectrumOf(5, 5), b = SpectrumOf(6, 2);
  EXPECT_EQ(cache.Find(3, 0), nullptr);
  cache.Insert(3, 0, a);
  cache.Insert(3, 7, b);
  EXPECT_EQ(cache.Find(3, 0), a);
  EXPECT_EQ(cache.Find(3, 7), b);
  EXPECT_EQ(cache.Find(3, 1), nullptr);
  const int64_t both =
      SpectrumCache::EntryBytes(*a) + SpectrumCache::EntryBytes(*b);
  EXPECT_EQ(cache.stats().bytes, both);
  EXPECT_EQ(budget.used(), both);
  // A second spectrum of a kept (state, stream) is not kept.
  cache.Insert(3, 0, SpectrumOf(5, 5));
  EXPECT_EQ(cache.Find(3, 0), a);
  // An older state's spectrum is ignored; its lookups miss.
  cache.Insert(2, 1, b);
  EXPECT_EQ(cache.Find(2, 1), nullptr);
  EXPECT_EQ(cache.Find(3, 1), nullptr);
  EXPECT_EQ(cache.stats().entries, 2);
  // A newer state's insert drops the older entries and returns their bytes.
  cache.Insert(4, 7, b);
  EXPECT_EQ(cache.Find(4, 0), nullptr);
  EXPECT_EQ(cache.Find(4, 7), b);
  EXPECT_EQ(cache.Find(3, 7), nullptr);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(budget.used(), SpectrumCache::EntryBytes(*b));
  // So does a newer state's lookup.
  EXPECT_EQ(cache.Find(5, 7), nullptr);
  EXPECT_EQ(cache.stats().entries, 0);
  EXPECT_EQ(budget.used(), 0);
  const SpectrumCache::Stats stats = cache.stats();
  EXPECT_EQ(stats.hits, 4);
  EXPECT_EQ(stats.misses, 7);
}

TEST(SpectrumCacheTest, KeepsNothingPastItsCapOrTheBudget) {
  const SharedSpectrum s = SpectrumOf(8, 8);
  const int64_t entry = SpectrumCache::EntryBytes(*s);
  {
    MemoryBudget budget(int64_t{1} << 20, "test");
    SpectrumCache cache(&budget, 2 * entry - 1);
    cache.Insert(1, 0, s);
    cache.Insert(1, 1, s);
    EXPECT_NE(cache.Find(1, 0), nullptr);
    EXPECT_EQ(cache.Find(1, 1), nullptr);
    EXPECT_EQ(budget.used(), entry);
  }
  MemoryBudget budget(entry - 1, "test");
  SpectrumCache cache(&budget, int64_t{1} << 20);
  cache.Insert(1, 0, s);
  EXPECT_EQ(cache.Find(1, 0), nullptr);
  EXPECT_EQ(cache.stats().bytes, 0);
  EXPECT_EQ(budget.used(), 0);
}

TEST(SpectrumCacheTest, DestroyingTheCacheReturnsItsBytes) {
  MemoryBudget budget(int64_t{1} << 20, "test");
  {
    SpectrumCache cache(&budget, int64_t{1} << 20);
    cache.Insert(1, 0, SpectrumOf(8, 8));
    EXPECT_GT(budget.used(), 0);
  }
  EXPECT_EQ(budget.used(), 0);
  // Without a budget the bytes are counted all the same.
  SpectrumCache uncounted(nullptr, int64_t{1} << 20);
  uncounted.Insert(1, 0, SpectrumOf(8, 8));
  EXPECT_EQ(uncounted.stats().bytes,
            SpectrumCache::EntryBytes(*SpectrumOf(8, 8)));
}

TEST(SpectrumCacheTest, CapIsAQuarterOfTheBudgetAndAtMostTheExactLimit) {
  MemoryBudget limited(1000, "test"), unlimited(0, "test");
  EXPECT_EQ(SpectrumCacheCap(&limited, 5000), 250);
  EXPECT_EQ(SpectrumCacheCap(&limited, 100), 100);
  EXPECT_EQ(SpectrumCacheCap(&unlimited, 5000), 5000);
  EXPECT_EQ(SpectrumCacheCap(nullptr, 5000), 5000);
}

// ---------------------------------------------------------------------------
// Through Session::Query.

constexpr int64_t kWidth = 6;  // every stream's: a wrong stream's spectrum
                               // gives wrong values, not a shape mismatch
constexpr int64_t kRows = 40;
const char* const kStreams[] = {"a", "b", "c", "d"};
const char* const kKinds[] = {"cca_r2", "cca_mean_rho",  "svcca",
                              "pwcca",  "regression_r2", "procrustes"};

SessionConfig MomentConfig() {
  SessionConfig config;
  const MeasureKind kinds[] = {
      MeasureKind::kCcaR2,        MeasureKind::kCcaMeanRho,
      MeasureKind::kSvcca,        MeasureKind::kPwcca,
      MeasureKind::kRegressionR2, MeasureKind::kProcrustes};
  for (size_t i = 0; i < std::size(kinds); ++i) {
    Measure m;
    m.name = kKinds[i];
    m.estimator = Estimator::kExact;
    m.kind = kinds[i];
    config.measures.push_back(m);
  }
  config.streams.assign(std::begin(kStreams), std::end(kStreams));
  return config;
}

// Batches of four related streams: a is random, b a noisy linear map of a,
// c a noisy map of b, d independent.
struct Data {
  explicit Data(uint64_t seed) : rng(seed) {}
  std::mt19937_64 rng;
  std::vector<std::vector<std::vector<double>>> batches;  // batch, stream

  void Add() {
    std::normal_distribution<double> normal;
    auto random = [&](int64_t rows, int64_t cols) {
      Eigen::MatrixXd m(rows, cols);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) m(i, j) = normal(rng);
      return m;
    };
    const Eigen::MatrixXd a = random(kRows, kWidth);
    const Eigen::MatrixXd b =
        a * random(kWidth, kWidth) + 0.5 * random(kRows, kWidth);
    const Eigen::MatrixXd c =
        b * random(kWidth, kWidth) + 2.0 * random(kRows, kWidth);
    const Eigen::MatrixXd d = random(kRows, kWidth);
    std::vector<std::vector<double>> batch;
    for (const Eigen::MatrixXd* m : {&a, &b, &c, &d}) {
      std::vector<double> row_major(kRows * kWidth);
      for (int64_t i = 0; i < kRows; ++i)
        for (int64_t j = 0; j < kWidth; ++j)
          row_major[i * kWidth + j] = (*m)(i, j);
      batch.push_back(std::move(row_major));
    }
    batches.push_back(std::move(batch));
  }

  void Ingest(Session& session, size_t b) const {
    BatchInput input{"", "b" + std::to_string(b), 0, {}};
    for (size_t s = 0; s < std::size(kStreams); ++s) {
      const std::vector<double>& x = batches[b][s];
      input.layers.push_back({kStreams[s],
                              LayerInput::Kind::kActivations,
                              {{kRows, kWidth},
                               DType::kFloat64,
                               x.data(),
                               x.size() * sizeof(double)}});
    }
    const absl::StatusOr<IngestResult> r = session.Ingest(input);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  // A new session holding every batch so far.
  std::unique_ptr<Session> Fresh(SessionLimits limits = {}) const {
    auto session = Session::Create(MomentConfig(), std::move(limits));
    EXPECT_TRUE(session.ok()) << session.status();
    if (!session.ok()) return nullptr;
    for (size_t b = 0; b < batches.size(); ++b) Ingest(**session, b);
    return *std::move(session);
  }
};

Data SeededData(int batches) {
  const uint64_t seed = 20261207;
  std::cout << "spectrum cache test data seed " << seed << "\n";
  Data data(seed);
  for (int b = 0; b < batches; ++b) data.Add();
  return data;
}

// Expects `session` and `fresh` to answer `query` with the same bits.
void ExpectSameAnswer(const Session& session, const Session& fresh,
                      const SimilarityQuery& query) {
  const SimilarityMatrix got = QueryOrDie(session, query);
  const SimilarityMatrix want = QueryOrDie(fresh, query);
  ExpectMatricesIdentical(got, want, query.measure);
  EXPECT_EQ(got.note, want.note);
}

TEST(SpectrumCacheSessionTest, AnotherKindReusesTheSpectraWithTheSameBits) {
  const Data data = SeededData(1);
  std::unique_ptr<Session> session = data.Fresh();
  ASSERT_NE(session, nullptr);
  QueryOrDie(*session, QueryOf("cca_r2"));
  SessionInfo info = session->Info();
  EXPECT_EQ(info.spectra_computed, 4);
  EXPECT_EQ(info.spectra_reused, 0);
  int64_t reused = 0;
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    // A fresh session computes every spectrum for this kind's query.
    std::unique_ptr<Session> fresh = data.Fresh();
    ASSERT_NE(fresh, nullptr);
    ExpectSameAnswer(*session, *fresh, QueryOf(kind));
    reused += 4;
    info = session->Info();
    EXPECT_EQ(info.spectra_computed, 4);
    EXPECT_EQ(info.spectra_reused, reused);
    EXPECT_EQ(fresh->Info().spectra_computed, 4);
    EXPECT_EQ(fresh->Info().spectra_reused, 0);
  }
}

TEST(SpectrumCacheSessionTest, ACompletedBatchInvalidatesTheSpectra) {
  Data data = SeededData(1);
  std::unique_ptr<Session> session = data.Fresh();
  ASSERT_NE(session, nullptr);
  const SimilarityMatrix before = QueryOrDie(*session, QueryOf("svcca"));
  data.Add();
  data.Ingest(*session, 1);
  for (const char* kind : {"svcca", "procrustes"}) {
    SCOPED_TRACE(kind);
    std::unique_ptr<Session> fresh = data.Fresh();
    ASSERT_NE(fresh, nullptr);
    ExpectSameAnswer(*session, *fresh, QueryOf(kind));
  }
  // The new batch's spectra were computed once, then reused.
  EXPECT_EQ(session->Info().spectra_computed, 8);
  EXPECT_EQ(session->Info().spectra_reused, 4);
  // And they differ from the first batch's (the test sees a stale one).
  EXPECT_NE(Bits(QueryOrDie(*session, QueryOf("svcca")).values[1]),
            Bits(before.values[1]));
}

TEST(SpectrumCacheSessionTest, SubsetQueriesUseTheirOwnStreamsSpectra) {
  const Data data = SeededData(1);
  const std::vector<std::string> rows = {"d", "b"}, cols = {"c"};
  // The whole matrix first, then a subset (copied with indices 0, 1, 2 for
  // b, c, d): the subset must find b, c and d's spectra, not a, b and c's.
  std::unique_ptr<Session> whole_first = data.Fresh();
  ASSERT_NE(whole_first, nullptr);
  QueryOrDie(*whole_first, QueryOf("cca_mean_rho"));
  // The subset first, then the whole matrix, whose a must not get b's.
  std::unique_ptr<Session> subset_first = data.Fresh();
  ASSERT_NE(subset_first, nullptr);
  QueryOrDie(*subset_first, QueryOf("regression_r2", rows, cols));
  for (const char* kind : {"cca_mean_rho", "regression_r2", "pwcca"}) {
    SCOPED_TRACE(kind);
    std::unique_ptr<Session> fresh_subset = data.Fresh();
    ASSERT_NE(fresh_subset, nullptr);
    ExpectSameAnswer(*whole_first, *fresh_subset, QueryOf(kind, rows, cols));
    ExpectSameAnswer(*whole_first, *fresh_subset, QueryOf(kind, cols, rows));
    std::unique_ptr<Session> fresh_whole = data.Fresh();
    ASSERT_NE(fresh_whole, nullptr);
    ExpectSameAnswer(*subset_first, *fresh_whole, QueryOf(kind));
  }
  EXPECT_EQ(whole_first->Info().spectra_computed, 4);
  EXPECT_EQ(subset_first->Info().spectra_computed, 4);
}

TEST(SpectrumCacheSessionTest, TheBudgetHoldsTheSpectraUntilTheSessionGoes) {
  const Data data = SeededData(1);
  SessionLimits limits;
  limits.memory = std::make_shared<MemoryBudget>(int64_t{1} << 30, "test");
  std::unique_ptr<Session> session = data.Fresh(limits);
  ASSERT_NE(session, nullptr);
  const int64_t state = limits.memory->used();
  EXPECT_EQ(session->Info().spectrum_bytes, 0);
  QueryOrDie(*session, QueryOf("procrustes"));
  const SessionInfo info = session->Info();
  // Four full-rank spectra: 6 × 6 vectors and 6 values each, and overhead.
  EXPECT_GE(info.spectrum_bytes, 4 * 8 * (kWidth * kWidth + kWidth));
  EXPECT_EQ(limits.memory->used(), state + info.spectrum_bytes);
  EXPECT_EQ(limits.memory->used(), info.held_bytes);
  session.reset();
  EXPECT_EQ(limits.memory->used(), 0);
}

// Kept spectra of older sums are of no use to any query: a completed batch
// returns their bytes at once, not at the next query.
TEST(SpectrumCacheSessionTest, ACompletedBatchReturnsTheirBytesAtOnce) {
  Data data = SeededData(1);
  SessionLimits limits;
  limits.memory = std::make_shared<MemoryBudget>(int64_t{1} << 30, "test");
  std::unique_ptr<Session> session = data.Fresh(limits);
  ASSERT_NE(session, nullptr);
  QueryOrDie(*session, QueryOf("cca_r2"));
  ASSERT_GT(session->Info().spectrum_bytes, 0);
  data.Add();
  data.Ingest(*session, 1);
  EXPECT_EQ(session->Info().spectrum_bytes, 0);
  EXPECT_EQ(limits.memory->used(), session->Info().held_bytes);
}

TEST(SpectrumCacheSessionTest, ABudgetTooSmallToKeepThemStillAnswers) {
  const Data data = SeededData(1);
  std::unique_ptr<Session> unlimited = data.Fresh();
  ASSERT_NE(unlimited, nullptr);
  // The least room in which the query fits, found on a twin session with a
  // budget of its own (its probes keep spectra, which would then be reused).
  SessionLimits twin_limits;
  twin_limits.memory = std::make_shared<MemoryBudget>(int64_t{1} << 30, "twin");
  std::unique_ptr<Session> twin = data.Fresh(twin_limits);
  ASSERT_NE(twin, nullptr);
  MemoryBudget& twin_budget = *twin_limits.memory;
  auto fits = [&](int64_t room) {
    auto filler = twin_budget.Reserve(
        twin_budget.limit() - twin_budget.used() - room, "filler");
    EXPECT_TRUE(filler.ok()) << filler.status();
    SimilarityQuery q;
    q.measure = "svcca";
    return twin->Query(q).ok();
  };
  int64_t lo = 0, hi = int64_t{256} << 20;
  ASSERT_TRUE(fits(hi));
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? hi : lo) = mid;
  }
  // In that room the spectra a query computes have no room to stay.
  SessionLimits limits;
  limits.memory = std::make_shared<MemoryBudget>(int64_t{1} << 30, "test");
  std::unique_ptr<Session> session = data.Fresh(limits);
  ASSERT_NE(session, nullptr);
  MemoryBudget& budget = *limits.memory;
  auto filler = budget.Reserve(budget.limit() - budget.used() - hi, "filler");
  ASSERT_TRUE(filler.ok()) << filler.status();
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    ExpectSameAnswer(*session, *unlimited, QueryOf(kind));
  }
  const SessionInfo info = session->Info();
  EXPECT_EQ(info.spectrum_bytes, 0);
  EXPECT_EQ(info.spectra_computed, 4 * static_cast<int64_t>(std::size(kKinds)));
  EXPECT_EQ(info.spectra_reused, 0);
  // With room the same session keeps them.
  filler->Release();
  QueryOrDie(*session, QueryOf("svcca"));
  EXPECT_GT(session->Info().spectrum_bytes, 0);
}

TEST(SpectrumCacheSessionTest, ConcurrentQueriesAndBatchesEndOnTheFreshAnswer) {
  Data data = SeededData(4);
  auto created = Session::Create(MomentConfig());
  ASSERT_TRUE(created.ok()) << created.status();
  Session& session = **created;
  data.Ingest(session, 0);
  std::vector<std::thread> queries;
  for (const char* kind : {"svcca", "regression_r2"}) {
    queries.emplace_back([&session, kind] {
      for (int i = 0; i < 20; ++i) QueryOrDie(session, QueryOf(kind));
    });
  }
  for (size_t b = 1; b < data.batches.size(); ++b) data.Ingest(session, b);
  for (std::thread& t : queries) t.join();
  std::unique_ptr<Session> fresh = data.Fresh();
  ASSERT_NE(fresh, nullptr);
  for (const char* kind : kKinds) {
    SCOPED_TRACE(kind);
    ExpectSameAnswer(session, *fresh, QueryOf(kind));
  }
}

}  // namespace
}  // namespace cka::core::testing
