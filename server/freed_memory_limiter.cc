#include "server/freed_memory_limiter.h"

#include <unistd.h>

#include <cstdio>

#include "absl/time/clock.h"
#include "cka/core/allocator.h"
#include "spdlog/spdlog.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cka::server {
namespace {

// Resident bytes of this process (/proc/self/statm), or -1.
int64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long long size = 0, resident = 0;
  const int read = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  if (read != 2) return -1;
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

double Mib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

}  // namespace

FreedMemoryLimiter::FreedMemoryLimiter(FreedMemoryPolicy policy)
    : policy_(policy) {
  if (policy_.max_retained_bytes >= 0) thread_ = std::thread([this] { Run(); });
}

FreedMemoryLimiter::~FreedMemoryLimiter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

FreedMemoryCheck FreedMemoryLimiter::Check(int64_t max_retained_bytes) {
  FreedMemoryCheck check;
#if defined(__GLIBC__)
  const absl::Time start = absl::Now();
  check.resident_before = ResidentBytes();
  const struct mallinfo2 info = mallinfo2();
  check.in_use = static_cast<int64_t>(info.uordblks + info.hblkhd);
  check.resident_after = check.resident_before;
  if (check.resident_before >= 0 && check.retained() > max_retained_bytes) {
    malloc_trim(0);
    check.trimmed = true;
    check.resident_after = ResidentBytes();
  }
  check.took = absl::Now() - start;
#else
  (void)max_retained_bytes;
#endif
  return check;
}

int64_t FreedMemoryLimiter::trims() const {
  absl::MutexLock lock(&mu_);
  return trims_;
}

int64_t FreedMemoryLimiter::released_bytes() const {
  absl::MutexLock lock(&mu_);
  return released_bytes_;
}

void FreedMemoryLimiter::Run() {
  auto activity = [this] {
    return policy_.activity ? policy_.activity() : int64_t{-1};
  };
  int64_t activity_before = activity();
  absl::Time last_trim = absl::Now();
  bool trimmed_while_idle = false;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), policy_.interval)) {
        return;
      }
    }
    const int64_t activity_now = activity();
    const bool idle = policy_.activity && activity_now == activity_before;
    activity_before = activity_now;
    FreedMemoryCheck check;
    int64_t cached = 0;
    if (idle && !trimmed_while_idle) {
      cached = core::ReleaseCachedBuffers();
      check = Check(0);
      trimmed_while_idle = true;
    } else if (!idle) {
      trimmed_while_idle = false;
      if (absl::Now() - last_trim >= policy_.busy_gap) {
        check = Check(policy_.max_retained_bytes);
      }
    }
    if (!check.trimmed) continue;
    last_trim = absl::Now();
    const int64_t released = check.resident_before - check.resident_after;
    {
      absl::MutexLock lock(&mu_);
      ++trims_;
      released_bytes_ += released;
    }
    spdlog::debug(
        "returned {:.1f} MiB of freed memory to the kernel in {:.1f} ms "
        "({}, {:.1f} MiB of cached kernel blocks freed; resident {:.1f} -> "
        "{:.1f} MiB, {:.1f} MiB in use by malloc, --max-retained-free-mb "
        "{:.0f})",
        Mib(released), absl::ToDoubleMilliseconds(check.took),
        idle ? "idle" : "busy", Mib(cached), Mib(check.resident_before),
        Mib(check.resident_after), Mib(check.in_use),
        Mib(policy_.max_retained_bytes));
  }
}

}  // namespace cka::server
