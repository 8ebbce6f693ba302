// Many threads ingesting into one session while others query give the serial
// answers.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/session.h"
#include "cka/core/thread_pool.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

// The same float64 sums added in another order: a few ulps per addition.
constexpr double kReorderRel = 1e-12;

// Every layer of every batch of multibatch.json as its own message, the batches
// repeated under `copies` batch_id prefixes so there is enough to interleave.
std::vector<BatchInput> ManyMessages(const Scenario& s, int copies) {
  std::vector<BatchInput> messages;
  for (int c = 0; c < copies; ++c) {
    for (const BatchData& b : s.batches) {
      for (BatchInput m : MessagesPerLayer(s, b)) {
        m.batch_id = "c" + std::to_string(c) + "/" + m.batch_id;
        messages.push_back(std::move(m));
      }
    }
  }
  return messages;
}

TEST(ConcurrencyTest, ParallelIngestionWithQueriesEqualsSerialIngestion) {
  const Scenario& s = LoadScenario("multibatch.json");
  SessionConfig config = s.Config();
  config.streams =
      s.StreamNames();  // completion must not depend on arrival order
  const std::vector<BatchInput> messages = ManyMessages(s, 4);

  auto serial = Session::Create(config);
  ASSERT_TRUE(serial.ok()) << serial.status();
  for (const BatchInput& m : messages) ASSERT_TRUE((*serial)->Ingest(m).ok());

  auto parallel = Session::Create(config);
  ASSERT_TRUE(parallel.ok());
  ThreadPool pool(2);
  std::atomic<size_t> next{0};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 6; ++t) {
    writers.emplace_back([&, t] {
      for (size_t i; (i = next.fetch_add(1)) < messages.size();) {
        // Half the threads split Prepare and Commit and use the pool for the
        // Gram work.
        absl::StatusOr<IngestResult> r;
        if (t % 2 == 0) {
          auto prepared = (*parallel)->Prepare(messages[i], &pool);
          if (!prepared.ok()) {
            ++failures;
            continue;
          }
          r = (*parallel)->Commit(*std::move(prepared));
        } else {
          r = (*parallel)->Ingest(messages[i]);
        }
        if (!r.ok() || r->layers_applied != 1) ++failures;
      }
    });
  }
  std::thread reader([&] {
    while (!done.load()) {
      for (const Measure& m : s.measures) {
        auto q = (*parallel)->Query(FullQuery(s, m.name));
        if (!q.ok()) {
          ++failures;
          continue;
        }
        for (double v : q->values) {
          // CKA of a positive semi-definite pair lies in [-1, 1] up to
          // rounding.
          if (!std::isnan(v) && std::abs(v) > 1.0 + 1e-9) ++failures;
        }
      }
      (void)(*parallel)->Info();
    }
  });
  for (std::thread& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);

  const SessionInfo want_info = (*serial)->Info();
  const SessionInfo got_info = (*parallel)->Info();
  EXPECT_EQ(got_info.batches_applied, want_info.batches_applied);
  EXPECT_EQ(got_info.batches_pending, want_info.batches_pending);
  const auto want = AllAnswers(**serial, s);
  const auto got = AllAnswers(**parallel, s);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ExpectMatricesNear(got[i], want[i], kReorderRel,
                       "answer " + std::to_string(i));
  }
}

// A session with declared streams whose batches arrive in pieces (a two-layer
// message, then one message per layer), so that commits pair new layers with
// earlier ones in the join buffer (in one block or several) and complete exact
// batches; both happen outside the session mutex (session_commit.cc).
struct JoinedWorkload {
  SessionConfig config;
  std::vector<std::vector<double>> storage;  // each n × d, float64
  std::vector<BatchInput> messages;
};

JoinedWorkload MakeJoinedWorkload(uint64_t seed, int batches, int64_t n) {
  JoinedWorkload w;
  w.config.measures = {
      {"linear", Kernel::kLinear, 0.0, Estimator::kUnbiased},
      {"rbf", Kernel::kRbf, 0.5, Estimator::kBiased},
      {"exact", Kernel::kLinear, 0.0, Estimator::kExact},
      {"exact_debiased", Kernel::kLinear, 0.0, Estimator::kExactDebiased}};
  struct Piece {
    std::string source;
    std::vector<std::pair<std::string, int64_t>> layers;  // name, width
  };
  const std::vector<Piece> pieces = {{"a", {{"l0", 6}, {"l1", 9}}},
                                     {"b", {{"l0", 4}}},
                                     {"b", {{"l1", 7}}},
                                     {"c", {{"l0", 5}}}};
  for (const Piece& p : pieces) {
    for (const auto& [layer, width] : p.layers) {
      w.config.streams.push_back(p.source + "/" + layer);
      w.config.stream_widths.push_back(width);
    }
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  size_t values = 0;
  for (const Piece& p : pieces) values += p.layers.size() * batches;
  w.storage.reserve(values);  // LayerInputs point into it
  for (int b = 0; b < batches; ++b) {
    for (const Piece& p : pieces) {
      BatchInput m;
      m.source = p.source;
      m.batch_id = "b" + std::to_string(b);
      for (const auto& [layer, width] : p.layers) {
        std::vector<double>& x = w.storage.emplace_back(n * width);
        for (double& v : x) v = normal(rng);
        m.layers.push_back(DoubleLayer(layer, n, width, x));
      }
      w.messages.push_back(std::move(m));
    }
  }
  return w;
}

std::vector<SimilarityMatrix> AnswersOf(const Session& session,
                                        const SessionConfig& config) {
  std::vector<SimilarityMatrix> out;
  for (const Measure& m : config.measures) {
    SimilarityQuery q;
    q.measure = m.name;
    out.push_back(QueryOrDie(session, q));
  }
  return out;
}

// A snapshot of the records must hold whole batches: every batch id applied is
// either waiting in the join buffer or counted once by the exact sums. Returns
// an empty string when it does, else what is wrong.
std::string CheckWholeBatches(const std::map<std::string, std::string>& store) {
  auto restored = Session::FromRecords(store);
  if (!restored.ok()) return restored.status().ToString();
  int64_t ids = 0;
  for (const auto& [key, value] : store) ids += key.rfind("applied/", 0) == 0;
  SimilarityQuery q;
  q.measure = "exact";
  auto m = (*restored)->Query(q);
  if (!m.ok()) return m.status().ToString();
  const int64_t complete = m->batches.empty() ? 0 : m->batches.front();
  const int64_t pending = (*restored)->Info().batches_pending;
  if (complete + pending == ids) return "";
  return absl::StrCat(ids, " batch ids applied, but ", complete,
                      " complete and ", pending, " pending");
}

TEST(ConcurrencyTest, JoinedAndExactCommitsFromManyThreadsEqualSerialCommits) {
  const uint64_t seed = std::random_device()();
  std::cout << "JoinedAndExactCommits seed " << seed << "\n";
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  const JoinedWorkload w = MakeJoinedWorkload(seed, 300, 64);
  // The pieces of a batch next to each other, in random order, so that the
  // writers commit pieces of one batch_id at the same time.
  constexpr size_t kPieces = 4;
  std::mt19937_64 shuffle_rng(seed + 1);
  std::vector<size_t> batches(w.messages.size() / kPieces);
  for (size_t b = 0; b < batches.size(); ++b) batches[b] = b;
  std::shuffle(batches.begin(), batches.end(), shuffle_rng);
  std::vector<size_t> order;
  for (size_t b : batches) {
    std::vector<size_t> pieces;
    for (size_t p = 0; p < kPieces; ++p) pieces.push_back(b * kPieces + p);
    std::shuffle(pieces.begin(), pieces.end(), shuffle_rng);
    order.insert(order.end(), pieces.begin(), pieces.end());
  }

  // The serial answer: the same messages in file order on one thread.
  auto serial = Session::Create(w.config);
  ASSERT_TRUE(serial.ok()) << serial.status();
  for (const BatchInput& m : w.messages) {
    auto r = (*serial)->Ingest(m);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  auto parallel = Session::Create(w.config);
  ASSERT_TRUE(parallel.ok());
  Session& session = **parallel;
  ThreadPool pool(2);
  std::atomic<size_t> next{0};
  std::atomic<int> writers_left{6};
  std::atomic<int> failures{0};
  absl::Mutex mu;
  std::vector<std::string> errors;  // guarded by mu
  auto fail = [&](std::string what) {
    ++failures;
    absl::MutexLock lock(&mu);
    if (errors.size() < 10) errors.push_back(std::move(what));
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i; (i = next.fetch_add(1)) < order.size();) {
        const BatchInput& m = w.messages[order[i]];
        absl::StatusOr<IngestResult> r;
        if (t % 2 == 0) {
          auto prepared = session.Prepare(m, &pool);
          r = prepared.ok() ? session.Commit(*std::move(prepared))
                            : prepared.status();
        } else {
          r = session.Ingest(m);
        }
        if (!r.ok() || r->layers_applied != static_cast<int>(m.layers.size())) {
          fail(absl::StrCat(
              "message ", order[i], ": ",
              r.ok() ? "not every layer applied" : r.status().ToString()));
        }
      }
      --writers_left;
    });
  }
  // Queries: every value a CKA, and the exact batch count never goes back.
  threads.emplace_back([&] {
    int64_t exact_batches = 0;
    while (writers_left.load() > 0) {
      for (const SimilarityMatrix& m : AnswersOf(session, w.config)) {
        for (double v : m.values) {
          if (!std::isnan(v) && std::abs(v) > 1.0 + 1e-9)
            fail(absl::StrCat(m.measure, ": value ", v));
        }
        if (m.measure == "exact" && !m.batches.empty()) {
          if (m.batches.front() < exact_batches)
            fail("the exact batch count went back");
          exact_batches = m.batches.front();
        }
      }
    }
  });
  // Durability, as the server's group committer does it: a store that applies
  // every TakeChanges in order; each state it holds has whole batches only.
  std::map<std::string, std::string> store;
  auto take = [&] {
    for (StateRecord& r : session.TakeChanges().records) {
      if (r.deleted) {
        store.erase(r.key);
      } else {
        store[r.key] = std::move(r.value);
      }
    }
  };
  threads.emplace_back([&] {
    while (writers_left.load() > 0) {
      take();
      if (std::string e = CheckWholeBatches(store); !e.empty())
        fail("store: " + e);
      std::map<std::string, std::string> all;
      for (StateRecord& r : session.AllRecords().records)
        all[r.key] = std::move(r.value);
      if (std::string e = CheckWholeBatches(all); !e.empty())
        fail("AllRecords: " + e);
    }
  });
  for (std::thread& t : threads) t.join();
  take();
  EXPECT_EQ(failures.load(), 0) << absl::StrJoin(errors, "\n");

  const SessionInfo want_info = (*serial)->Info();
  const SessionInfo got_info = session.Info();
  EXPECT_EQ(got_info.batches_applied, want_info.batches_applied);
  EXPECT_EQ(got_info.batches_pending, 0);
  EXPECT_EQ(got_info.pairs_missed, 0);
  const auto want = AnswersOf(**serial, w.config);
  const auto got = AnswersOf(session, w.config);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    ExpectMatricesNear(got[i], want[i], kReorderRel, want[i].measure);
  // The store holds the live session: same sums, so the same answers.
  auto restored = Session::FromRecords(store);
  ASSERT_TRUE(restored.ok()) << restored.status();
  const auto from_store = AnswersOf(**restored, w.config);
  for (size_t i = 0; i < got.size(); ++i)
    ExpectMatricesIdentical(from_store[i], got[i], got[i].measure);
}

TEST(ThreadPoolTest, ParallelForRunsEveryIndexOnce) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(100);
  pool.ParallelFor(100, [&](int i) { ++hits[i]; });
  for (int i = 0; i < 100; ++i) EXPECT_EQ(hits[i].load(), 1) << i;
  // Nested ParallelFor from a worker must not deadlock.
  std::atomic<int> nested{0};
  pool.ParallelFor(4,
                   [&](int) { pool.ParallelFor(4, [&](int) { ++nested; }); });
  EXPECT_EQ(nested.load(), 16);
}

}  // namespace
}  // namespace cka::core::testing
