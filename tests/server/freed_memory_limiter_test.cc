#include "server/freed_memory_limiter.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/core/allocator.h"
#include "gtest/gtest.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cka::server {
namespace {

// Sanitizers bring their own malloc, which malloc_trim does not touch.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define CKA_TEST_SANITIZER_MALLOC 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CKA_TEST_SANITIZER_MALLOC 1
#endif
#if defined(__GLIBC__) && !defined(CKA_TEST_SANITIZER_MALLOC)
constexpr bool kGlibcMalloc = true;
#else
constexpr bool kGlibcMalloc = false;
#endif

constexpr int64_t kMiB = int64_t{1} << 20;

// Leaves `blocks` MiB freed but kept by malloc: each touched block is freed
// between small blocks that stay allocated, so malloc cannot give it back by
// shrinking its heap. Returns the small blocks (FreeAll them afterwards).
std::vector<void*> FreeBetweenPins(int blocks) {
  core::KeepFreedMemoryForReuse();  // 1 MiB blocks come from the heap
  std::vector<void*> freed, pins;
  for (int i = 0; i < blocks; ++i) {
    freed.push_back(std::malloc(kMiB));
    std::memset(freed.back(), 1, kMiB);
    pins.push_back(std::malloc(64 << 10));
  }
  for (void* p : freed) std::free(p);
  return pins;
}

void FreeAll(const std::vector<void*>& blocks) {
  for (void* p : blocks) std::free(p);
}

TEST(FreedMemoryLimiterTest, TrimsOnlyWhenMoreThanTheLimitIsRetained) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  const std::vector<void*> pins = FreeBetweenPins(96);

  const FreedMemoryCheck kept = FreedMemoryLimiter::Check(int64_t{1} << 40);
  EXPECT_FALSE(kept.trimmed);
  EXPECT_GE(kept.retained(), 64 * kMiB);
  EXPECT_EQ(kept.resident_after, kept.resident_before);

  const FreedMemoryCheck trimmed = FreedMemoryLimiter::Check(16 * kMiB);
  EXPECT_TRUE(trimmed.trimmed);
  EXPECT_LE(trimmed.resident_after, trimmed.resident_before - 64 * kMiB)
      << "before " << trimmed.resident_before << " after "
      << trimmed.resident_after;
  FreeAll(pins);
}

// How many heaps malloc_info reports: one per arena (and per extra heap of
// a non-main arena).
int MallocHeaps() {
#if defined(__GLIBC__)
  char* text = nullptr;
  size_t size = 0;
  std::FILE* f = open_memstream(&text, &size);
  if (f == nullptr) return -1;
  malloc_info(0, f);
  std::fclose(f);
  int heaps = 0;
  for (const char* p = text; (p = std::strstr(p, "<heap nr=")) != nullptr; ++p)
    ++heaps;
  std::free(text);
  return heaps;
#else
  return -1;
#endif
}

TEST(FreedMemoryLimiterTest, ReturnsTheFreedMemoryOfEveryThread) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr ||
      (tunables != nullptr &&
       std::strstr(tunables, "glibc.malloc.arena_max") != nullptr)) {
    GTEST_SKIP() << "the environment sets the malloc arena count";
  }
  if (MallocHeaps() != 1) {
    GTEST_SKIP() << "threads of earlier tests made malloc arenas; run alone";
  }
  core::KeepFreedMemoryForReuse();
  // 48 MiB that another thread touched and freed: it stays at the top of that
  // thread's arena (below the 64 MiB trim threshold). malloc_trim returns the
  // free top of the main arena only, so this needs the one arena that
  // KeepFreedMemoryForReuse sets.
  std::thread([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 48; ++i) {
      blocks.push_back(std::malloc(kMiB));
      std::memset(blocks.back(), 1, kMiB);
    }
    FreeAll(blocks);
  }).join();
  EXPECT_EQ(MallocHeaps(), 1);
  const FreedMemoryCheck check = FreedMemoryLimiter::Check(0);
  EXPECT_TRUE(check.trimmed);
  EXPECT_LE(check.resident_after, check.resident_before - 40 * kMiB)
      << "before " << check.resident_before << " after "
      << check.resident_after;
}

// A counter that a thread keeps advancing until destroyed: the limiter's
// activity probe of a busy process.
class Activity {
 public:
  Activity()
      : thread_([this] {
          while (!stop_.load()) {
            count_.fetch_add(1);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }) {}
  ~Activity() {
    stop_ = true;
    thread_.join();
  }
  std::function<int64_t()> probe() {
    return [this] { return count_.load(); };
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> count_{0};
  std::thread thread_;
};

// Waits up to 10 s for `limiter` to have released `bytes`.
void AwaitReleased(const FreedMemoryLimiter& limiter, int64_t bytes) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (limiter.released_bytes() < bytes && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// A limiter that looks every 100 ms and may trim at every look while `busy`
// advances.
FreedMemoryPolicy BusyPolicy(Activity& busy, int64_t max_retained_bytes) {
  FreedMemoryPolicy policy;
  policy.activity = busy.probe();
  policy.max_retained_bytes = max_retained_bytes;
  policy.interval = absl::Milliseconds(100);
  policy.busy_gap = absl::ZeroDuration();
  return policy;
}

TEST(FreedMemoryLimiterTest, WhileBusyItReturnsWhatIsRetainedBeyondTheLimit) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  Activity busy;
  FreedMemoryLimiter limiter(BusyPolicy(busy, 16 * kMiB));
  const std::vector<void*> pins = FreeBetweenPins(96);
  AwaitReleased(limiter, 64 * kMiB);
  EXPECT_GE(limiter.trims(), 1);
  EXPECT_GE(limiter.released_bytes(), 64 * kMiB);
  FreeAll(pins);
}

TEST(FreedMemoryLimiterTest, WhileBusyItKeepsWhatIsWithinTheLimit) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  Activity busy;
  FreedMemoryLimiter limiter(BusyPolicy(busy, int64_t{1} << 40));
  const std::vector<void*> pins = FreeBetweenPins(96);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(limiter.trims(), 0);
  FreeAll(pins);
}

TEST(FreedMemoryLimiterTest, WhenIdleItReturnsAllFreePagesOnce) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  FreedMemoryPolicy policy;
  policy.max_retained_bytes = int64_t{1} << 40;  // never while busy
  policy.interval = absl::Milliseconds(50);
  policy.activity = [] { return int64_t{7}; };  // nothing happens
  // Freed first: the limiter's first interval is idle and trims once.
  const std::vector<void*> pins = FreeBetweenPins(96);
  FreedMemoryLimiter limiter(policy);
  AwaitReleased(limiter, 64 * kMiB);
  EXPECT_GE(limiter.released_bytes(), 64 * kMiB);
  // Still idle: no second trim.
  const int64_t trims = limiter.trims();
  EXPECT_GE(trims, 1);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(limiter.trims(), trims);
  FreeAll(pins);
}

// The trims a limiter with `policy` makes in `wait` after `blocks` MiB were
// freed.
int64_t TrimsAfterFreeing(const FreedMemoryPolicy& policy, int blocks,
                          absl::Duration wait) {
  FreedMemoryLimiter limiter(policy);
  const std::vector<void*> pins = FreeBetweenPins(blocks);
  absl::SleepFor(wait);
  FreeAll(pins);
  return limiter.trims();
}

TEST(FreedMemoryLimiterTest, WithoutAnActivityProbeItIsNeverIdle) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc (not a sanitizer's)";
  FreedMemoryPolicy policy;
  policy.max_retained_bytes = int64_t{1} << 40;
  policy.interval = absl::Milliseconds(20);
  EXPECT_EQ(TrimsAfterFreeing(policy, 16, absl::Milliseconds(200)), 0);
}

TEST(FreedMemoryLimiterTest, ANegativeLimitStartsNoThread) {
  FreedMemoryPolicy policy;
  policy.max_retained_bytes = -1;
  policy.interval = absl::Milliseconds(1);
  EXPECT_EQ(TrimsAfterFreeing(policy, 8, absl::Milliseconds(50)), 0);
}

}  // namespace
}  // namespace cka::server
