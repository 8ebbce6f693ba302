// Many threads ingesting into one session while others query give the serial
// answers.
#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

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
