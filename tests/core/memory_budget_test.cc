// The process memory budget, and that sessions price what requests cost before
// allocating it.
#include "cka/core/memory_budget.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cka/core/session.h"
#include "gtest/gtest.h"

namespace cka::core {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

TEST(MemoryBudgetTest, ReservationsReturnTheirBytesWhenDestroyedMovedOrSet) {
  MemoryBudget budget(10 * kMiB, "--test-limit");
  {
    absl::StatusOr<MemoryBudget::Reservation> a = budget.Reserve(kMiB, "a");
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(budget.used(), kMiB);
    ASSERT_TRUE(a->Grow(2 * kMiB, "a, more").ok());
    EXPECT_EQ(a->bytes(), 3 * kMiB);
    EXPECT_EQ(budget.used(), 3 * kMiB);
    MemoryBudget::Reservation b = *std::move(a);
    EXPECT_EQ(budget.used(), 3 * kMiB);  // moved, not copied
    b.Set(kMiB);
    EXPECT_EQ(budget.used(), kMiB);
  }
  EXPECT_EQ(budget.used(), 0);
}

TEST(MemoryBudgetTest, OverTheLimitIsResourceExhaustedAndReservesNothing) {
  MemoryBudget budget(10 * kMiB, "--test-limit");
  absl::StatusOr<MemoryBudget::Reservation> held =
      budget.Reserve(8 * kMiB, "x");
  ASSERT_TRUE(held.ok());
  absl::StatusOr<MemoryBudget::Reservation> more =
      budget.Reserve(3 * kMiB, "batch 'b7'");
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
  for (const char* part : {"batch 'b7'", "3145728 bytes", "--test-limit",
                           "8388608 of its 10485760 bytes"}) {
    EXPECT_NE(more.status().message().find(part), std::string::npos)
        << "message should name '" << part << "': " << more.status();
  }
  EXPECT_EQ(budget.used(), 8 * kMiB);
  EXPECT_FALSE(held->Grow(3 * kMiB, "x").ok());
  EXPECT_EQ(held->bytes(), 8 * kMiB);
  // A request larger than the whole limit (or saturated) never wraps around.
  EXPECT_FALSE(
      budget.Reserve(std::numeric_limits<int64_t>::max(), "huge").ok());
  EXPECT_EQ(budget.used(), 8 * kMiB);
}

TEST(MemoryBudgetTest, SizesSaturateInsteadOfOverflowing) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(SaturatingMul(int64_t{1} << 31, int64_t{1} << 31),
            int64_t{1} << 62);
  EXPECT_EQ(SaturatingMul(int64_t{1} << 32, int64_t{1} << 32), max);
  EXPECT_EQ(SaturatingMul(-1, 5), max);
  EXPECT_EQ(SaturatingAdd(max - 1, 2), max);
  EXPECT_EQ(SaturatingAdd(3, 4), 7);
}

TEST(MemoryBudgetTest, DefaultLimitIsPositiveAndSaysWhereItCameFrom) {
  std::string how;
  EXPECT_GT(MemoryBudget::DefaultLimitBytes(&how), 0);
  EXPECT_FALSE(how.empty());
}

// Activations of `layers` layers of n × d float32 sin values, owned by the
// returned batch's storage.
struct OwnedBatch {
  std::vector<std::vector<float>> storage;
  BatchInput input;
};

OwnedBatch MakeBatch(const std::string& id, int layers, int64_t n, int64_t d,
                     int64_t step = 0) {
  OwnedBatch b;
  b.input.batch_id = id;
  b.input.step = step;
  b.storage.resize(layers);
  for (int l = 0; l < layers; ++l) {
    std::vector<float>& x = b.storage[l];
    x.resize(n * d);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<float>(std::sin(0.37 * i + l));
    LayerInput layer;
    layer.layer = "l" + std::to_string(l);
    layer.tensor = TensorView{{n, d}, DType::kFloat32, x.data(), x.size() * 4};
    b.input.layers.push_back(layer);
  }
  return b;
}

// The reproduction: 64 layers of n = 8192 in 1 MB would need ~17 GB of
// kernels. They are priced from the shapes and refused before any allocation.
TEST(MemoryBudgetTest, SixtyFourLayersOfNEquals8192AreRefusedBeforeAllocating) {
  SessionLimits limits;
  limits.memory =
      std::make_shared<MemoryBudget>(512 * kMiB, "--memory-limit-mb");
  auto session = Session::Create({}, limits);
  ASSERT_TRUE(session.ok());
  OwnedBatch b = MakeBatch("big", 64, 8192, 1);
  absl::StatusOr<IngestResult> r = (*session)->Ingest(b.input);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("64 layers of 8192 examples"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(limits.memory->used(), 0);
  EXPECT_EQ((*session)->Info().batches_applied, 0);
  EXPECT_TRUE((*session)->Info().streams.empty());
}

TEST(MemoryBudgetTest, SessionDrawsItsStateAndReturnsItWhenDestroyed) {
  auto memory = std::make_shared<MemoryBudget>(0, "unlimited");
  SessionLimits limits;
  limits.memory = memory;
  SessionConfig config;
  config.step_bucket = 10;
  auto session = Session::Create(config, limits);
  ASSERT_TRUE(session.ok());
  for (int i = 0; i < 6; ++i) {
    OwnedBatch b = MakeBatch("b" + std::to_string(i), 3, 16, 5, 7 * i);
    ASSERT_TRUE((*session)->Ingest(b.input).ok());
  }
  const SessionInfo info = (*session)->Info();
  EXPECT_GT(info.held_bytes, info.state_bytes);  // + the duplicate records
  EXPECT_EQ(memory->used(), info.held_bytes);

  const std::string bytes = (*session)->Serialize();
  session->reset();
  EXPECT_EQ(memory->used(), 0);
  auto restored = Session::Restore(bytes, limits);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(memory->used(), (*restored)->Info().held_bytes);
  // The complete batches kept for the join window are not part of the stored
  // state: the restored session holds everything else.
  EXPECT_GT(info.pending_bytes, 0);
  EXPECT_EQ((*restored)->Info().held_bytes,
            info.held_bytes - info.pending_bytes);
}

// The exact estimators' sums are counted once, live and after a restore.
TEST(MemoryBudgetTest, ExactSessionHoldsTheSameBytesAfterARestore) {
  auto memory = std::make_shared<MemoryBudget>(0, "unlimited");
  SessionLimits limits;
  limits.memory = memory;
  SessionConfig config;
  config.measures = {Measure{"exact", Kernel::kLinear, 0.0, Estimator::kExact}};
  config.streams = {"l0", "l1"};
  auto session = Session::Create(config, limits);
  ASSERT_TRUE(session.ok());
  OwnedBatch b = MakeBatch("b", 2, 16, 5);
  ASSERT_TRUE((*session)->Ingest(b.input).ok());
  const SessionInfo live = (*session)->Info();
  EXPECT_GT(live.state_bytes, 0);
  EXPECT_EQ(memory->used(), live.held_bytes);
  auto restored = Session::Restore((*session)->Serialize(), limits);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->Info().held_bytes, live.held_bytes);
  EXPECT_EQ(memory->used(), 2 * live.held_bytes);
}

TEST(MemoryBudgetTest, QueryOverTheBudgetIsRefused) {
  SessionLimits limits;
  auto session = Session::Create({}, limits);
  ASSERT_TRUE(session.ok());
  OwnedBatch b = MakeBatch("b", 40, 8, 2);
  ASSERT_TRUE((*session)->Ingest(b.input).ok());
  // Rebuilt with a tiny budget: the 40 × 40 matrix (5 doubles an entry) does
  // not fit 1 KiB.
  limits.memory = std::make_shared<MemoryBudget>(1024, "--memory-limit-mb");
  auto small = Session::Restore((*session)->Serialize(), limits);
  ASSERT_TRUE(small.ok());
  absl::StatusOr<SimilarityMatrix> m = (*small)->Query({});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("40 × 40"), std::string::npos)
      << m.status();
}

}  // namespace
}  // namespace cka::core
