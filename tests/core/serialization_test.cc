// Session::Serialize → Session::Restore: identical answers and counters,
// pending batches kept, and damaged bytes rejected with DataLoss, never a
// crash.
#include <cmath>
#include <map>
#include <string>

#include "byte_codec.h"  // the record format, to write an older layout
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "test_data.h"

namespace cka::core::testing {
namespace {

void ExpectSameInfo(const SessionInfo& a, const SessionInfo& b) {
  EXPECT_TRUE(a.config == b.config);
  EXPECT_EQ(a.streams, b.streams);
  EXPECT_EQ(a.batches_applied, b.batches_applied);
  EXPECT_EQ(a.batches_pending, b.batches_pending);
  EXPECT_EQ(a.batches_evicted, b.batches_evicted);
  EXPECT_EQ(a.pending_bytes, b.pending_bytes);
  EXPECT_EQ(a.state_bytes, b.state_bytes);
}

void ExpectSameAnswers(const Session& a, const Session& b, const Scenario& s) {
  const std::vector<SimilarityMatrix> want = AllAnswers(a, s);
  const std::vector<SimilarityMatrix> got = AllAnswers(b, s);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ExpectMatricesIdentical(got[i], want[i], "answer " + std::to_string(i));
  }
}

class RoundTripTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RoundTripTest, RestoredSessionAnswersBitIdentically) {
  const Scenario& s = LoadScenario(GetParam());
  std::unique_ptr<Session> original = SessionWithAll(s);
  ASSERT_NE(original, nullptr);
  const std::string bytes = original->Serialize();
  auto restored = Session::Restore(bytes);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ExpectSameInfo((*restored)->Info(), original->Info());
  ExpectSameAnswers(*original, **restored, s);
  // Serialising the restored session gives the same bytes.
  EXPECT_EQ((*restored)->Serialize(), bytes);
}

TEST_P(RoundTripTest, RestoredSessionRemembersAppliedBatches) {
  const Scenario& s = LoadScenario(GetParam());
  std::unique_ptr<Session> original = SessionWithAll(s);
  ASSERT_NE(original, nullptr);
  auto restored = Session::Restore(original->Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  const BatchInput again = MessagesPerSource(s, s.batches[0])[0];
  auto r = (*restored)->Ingest(again);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->duplicate());
  ExpectSameAnswers(*original, **restored, s);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, RoundTripTest,
                         ::testing::Values("multibatch.json", "exact.json",
                                           "golden.json"),
                         [](const auto& info) {
                           std::string name = info.param;
                           return name.substr(0, name.find('.'));
                         });

// exact.json with the last batch's dec/out held back: serialise with that batch
// pending, then complete it in the original and in the restored session.
TEST(SerializationTest, PendingBatchCompletesAfterRestore) {
  const Scenario& s = LoadScenario("exact.json");
  auto original = Session::Create(s.Config());
  ASSERT_TRUE(original.ok()) << original.status();
  BatchInput held;
  for (const BatchData& b : s.batches) {
    for (const BatchInput& m : MessagesPerSource(s, b)) {
      if (b.batch_id == "x4" && m.source == "dec") {
        held = m;
        continue;
      }
      ASSERT_TRUE((*original)->Ingest(m).ok());
    }
  }
  ASSERT_EQ(held.batch_id, "x4");
  EXPECT_EQ((*original)->Info().batches_pending,
            2);  // x2 (never complete) and x4
  auto restored = Session::Restore((*original)->Serialize());
  ASSERT_TRUE(restored.ok()) << restored.status();
  ExpectSameInfo((*restored)->Info(), (*original)->Info());
  ASSERT_TRUE((*original)->Ingest(held).ok());
  auto r = (*restored)->Ingest(held);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->layers_applied, 1);
  ExpectSameInfo((*restored)->Info(), (*original)->Info());
  ExpectSameAnswers(**original, **restored, s);
  // And both equal the numpy oracle (which counts x4).
  for (const Measure& m : s.measures) {
    ExpectMatrixNear(QueryOrDie(**restored, FullQuery(s, m.name)),
                     s.expected.at(m.name), 1e-10, 1e-10,
                     m.name);  // float64 tolerance as in exact_cka_test.cc
  }
}

// A small session so that every truncation and every byte flip can be tried.
std::string SmallSessionBytes() {
  const Scenario& s = LoadScenario("equal_n.json");
  SessionConfig config = s.Config();
  config.step_bucket = 2;
  auto session = Session::Create(config);
  EXPECT_TRUE(session.ok());
  for (int b = 0; b < 2; ++b) {
    for (const BatchInput& m : MessagesPerLayer(s, s.batches[b])) {
      if (b == 1 && m.layers[0].layer == "c") continue;  // leave e1 pending
      EXPECT_TRUE((*session)->Ingest(m).ok());
    }
  }
  return (*session)->Serialize();
}

TEST(SerializationTest, EveryTruncationIsDataLoss) {
  const std::string bytes = SmallSessionBytes();
  ASSERT_TRUE(Session::Restore(bytes).ok());
  for (size_t len = 0; len < bytes.size(); ++len) {
    auto r = Session::Restore(std::string_view(bytes.data(), len));
    ASSERT_FALSE(r.ok()) << "truncated to " << len << " of " << bytes.size();
    ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
        << len << ": " << r.status();
  }
}

TEST(SerializationTest, EveryFlippedByteIsDataLoss) {
  const std::string bytes = SmallSessionBytes();
  int accepted = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] = static_cast<char>(damaged[i] ^ 0x5a);
    auto r = Session::Restore(damaged);
    if (r.ok()) {
      ++accepted;
      ADD_FAILURE() << "flipped byte " << i << " of " << bytes.size()
                    << " was accepted";
      if (accepted > 5) break;
      continue;
    }
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
        << i << ": " << r.status();
  }
}

TEST(SerializationTest, TrailingAndForeignBytesAreDataLoss) {
  const std::string bytes = SmallSessionBytes();
  for (const std::string& damaged :
       {bytes + std::string(1, '\0'), bytes + bytes,
        std::string("not a session"), std::string(64, '\xff')}) {
    auto r = Session::Restore(damaged);
    ASSERT_FALSE(r.ok()) << damaged.size();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  }
}

}  // namespace
}  // namespace cka::core::testing

namespace cka::core::testing {
namespace {

// Random activations of one stream for one batch (values irrelevant: the test
// compares two paths to the same state bit for bit).
std::vector<double> RandomRows(int n, int d, unsigned seed) {
  std::vector<double> x(static_cast<size_t>(n) * d);
  unsigned state = seed * 2654435761u + 1;
  for (double& v : x) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<double>(state >> 8) / (1u << 24) - 0.5;
  }
  return x;
}

// Applies `changes` to `store` as a durable store would.
void ApplyChanges(const StateChanges& changes,
                  std::map<std::string, std::string>& store, int* deletions) {
  for (const StateRecord& r : changes.records) {
    if (r.deleted) {
      store.erase(r.key);
      ++*deletions;
    } else {
      store[r.key] = r.value;
    }
  }
}

// The server's durability path: every commit's TakeChanges applied to a
// key-value store rebuilds, through FromRecords, exactly the live session —
// including pending batches that later complete (their record is deleted),
// evictions and the dedupe window dropping old batch ids.
TEST(StateChangesTest, StoreOfAppliedChangesRebuildsTheSessionExactly) {
  SessionConfig config;
  config.streams = {"a", "b", "c"};
  config.step_bucket = 2;
  config.measures = {{"lin", Kernel::kLinear, 0, Estimator::kUnbiased},
                     {"rbf", Kernel::kRbf, 0.5, Estimator::kBiased},
                     {"ex", Kernel::kLinear, 0, Estimator::kExactDebiased}};
  SessionLimits limits;
  limits.max_pending_batches = 2;
  limits.dedupe_window = 5;
  auto live = Session::Create(config, limits);
  ASSERT_TRUE(live.ok()) << live.status();
  std::map<std::string, std::string> store;
  int deletions = 0;
  ApplyChanges((*live)->TakeChanges(), store, &deletions);
  uint64_t last_version = 0;
  const int n = 6, d = 3;
  for (int b = 0; b < 12; ++b) {
    // Streams arrive one message each; "c" is missing from every third batch,
    // which then waits in the join buffer until evicted.
    for (const char* stream : {"b", "a", "c"}) {
      if (stream[0] == 'c' && b % 3 == 0) continue;
      std::vector<double> x = RandomRows(n, d, b * 7 + stream[0]);
      BatchInput input;
      input.batch_id = "batch" + std::to_string(b);
      input.step = b;
      input.layers.push_back(
          {stream,
           LayerInput::Kind::kActivations,
           {{n, d}, DType::kFloat64, x.data(), x.size() * 8}});
      auto result = (*live)->Ingest(input);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_GT(result->version, last_version);
      last_version = result->version;
      StateChanges changes = (*live)->TakeChanges();
      EXPECT_EQ(changes.version, result->version);
      ApplyChanges(changes, store, &deletions);
      auto rebuilt = Session::FromRecords(store, limits);
      ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
      ExpectSameInfo((*rebuilt)->Info(), (*live)->Info());
      for (const char* m : {"lin", "rbf", "ex"}) {
        SimilarityQuery q;
        q.measure = m;
        ExpectMatricesIdentical(*(*rebuilt)->Query(q), *(*live)->Query(q), m);
      }
    }
  }
  EXPECT_GT((*live)->Info().batches_evicted, 0);
  EXPECT_GT(deletions, 0)
      << "completed, evicted and forgotten batches delete records";
  // A resent batch that is still inside the dedupe window is a duplicate in
  // the rebuilt session too.
  auto rebuilt = Session::FromRecords(store, limits);
  ASSERT_TRUE(rebuilt.ok());
  std::vector<double> x = RandomRows(n, d, 11 * 7 + 'a');
  BatchInput again;
  again.batch_id = "batch11";
  again.step = 11;
  again.layers.push_back({"a",
                          LayerInput::Kind::kActivations,
                          {{n, d}, DType::kFloat64, x.data(), x.size() * 8}});
  auto result = (*rebuilt)->Ingest(again);
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->duplicate());
  EXPECT_TRUE((*rebuilt)->TakeChanges().records.empty())
      << "a duplicate changes nothing";
}

TEST(StateChangesTest, MissingOrUnknownRecordIsDataLoss) {
  auto live = Session::Create({});
  ASSERT_TRUE(live.ok());
  std::map<std::string, std::string> store;
  for (const StateRecord& r : (*live)->AllRecords().records)
    store[r.key] = r.value;
  auto without_meta = store;
  without_meta.erase("meta");
  EXPECT_EQ(Session::FromRecords(without_meta).status().code(),
            absl::StatusCode::kDataLoss);
  auto unknown = store;
  unknown["bogus/1"] = "x";
  auto status = Session::FromRecords(unknown).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("bogus/1"), absl::string_view::npos)
      << status;
  auto bad_sums = store;
  bad_sums["sums/0/0"] = "short";
  EXPECT_EQ(Session::FromRecords(bad_sums).status().code(),
            absl::StatusCode::kDataLoss);
}

// Pending records written before kernels were packed hold k full n × n
// kernels; they are packed on restore and the batch completes as it would have.
TEST(StateChangesTest, PendingRecordOfFullKernelsIsRestored) {
  SessionConfig config;
  config.streams = {"a", "b", "c"};
  config.measures = {{"lin", Kernel::kLinear, 0, Estimator::kUnbiased},
                     {"rbf", Kernel::kRbf, 0.5, Estimator::kBiased}};
  auto live = Session::Create(config);
  ASSERT_TRUE(live.ok()) << live.status();
  const int n = 6, d = 3;
  std::vector<std::vector<double>> xs;
  auto message = [&](const char* stream, int seed) {
    xs.push_back(RandomRows(n, d, seed));
    return BatchInput{
        "",
        "x",
        0,
        {{stream,
          LayerInput::Kind::kActivations,
          {{n, d}, DType::kFloat64, xs.back().data(), xs.back().size() * 8}}}};
  };
  ASSERT_TRUE((*live)->Ingest(message("a", 1)).ok());
  ASSERT_TRUE((*live)->Ingest(message("b", 2)).ok());
  std::map<std::string, std::string> store;
  for (const StateRecord& r : (*live)->AllRecords().records)
    store[r.key] = r.value;
  ASSERT_TRUE(store.count("pending/x") == 1);

  // Rewrite pending/x with full kernels: unpack the upper triangle (off the
  // diagonal divided by √2) into both triangles.
  ByteReader r(store["pending/x"]);
  int64_t pn, step;
  uint64_t seq, count;
  std::vector<int> streams;
  ASSERT_TRUE(r.I64(&pn) && r.I64(&step) && r.U64(&seq) && r.Ints(&streams) &&
              r.U64(&count));
  ASSERT_EQ(pn, n);
  ByteWriter w;
  w.I64(pn);
  w.I64(step);
  w.U64(seq);
  w.Ints(streams);
  w.U64(count);
  for (uint64_t m = 0; m < count; ++m) {
    std::vector<double> packed;
    ASSERT_TRUE(r.Doubles(&packed));
    ASSERT_EQ(packed.size(), streams.size() * n * (n + 1) / 2);
    std::vector<double> full(streams.size() * n * n);
    const double* src = packed.data();
    for (size_t l = 0; l < streams.size(); ++l) {
      double* k = full.data() + l * n * n;
      for (int i = 0; i < n; ++i) {
        k[i * n + i] = *src++;
        for (int j = i + 1; j < n; ++j)
          k[i * n + j] = k[j * n + i] = *src++ / std::sqrt(2.0);
      }
    }
    w.Doubles(full);
  }
  const size_t packed_bytes = store["pending/x"].size();
  std::string rest;
  while (true) {
    uint8_t byte;
    if (!r.U8(&byte)) break;
    rest.push_back(static_cast<char>(byte));
  }
  store["pending/x"] = w.bytes() + rest;
  ASSERT_GT(store["pending/x"].size(), packed_bytes);

  auto rebuilt = Session::FromRecords(store);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ((*rebuilt)->Info().batches_pending, 1);
  ASSERT_TRUE((*live)->Ingest(message("c", 3)).ok());
  ASSERT_TRUE((*rebuilt)->Ingest(message("c", 3)).ok());
  EXPECT_EQ((*rebuilt)->Info().batches_pending, 0);
  for (const char* m : {"lin", "rbf"}) {
    SimilarityQuery q;
    q.measure = m;
    const SimilarityMatrix want = *(*live)->Query(q);
    const SimilarityMatrix got = *(*rebuilt)->Query(q);
    ASSERT_EQ(got.values.size(), want.values.size());
    for (size_t i = 0; i < want.values.size(); ++i)
      EXPECT_NEAR(got.values[i], want.values[i], 1e-14) << m << " " << i;
    EXPECT_EQ(got.batches, want.batches);
  }
}

}  // namespace
}  // namespace cka::core::testing
