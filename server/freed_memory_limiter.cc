#include "server/freed_memory_limiter.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "absl/time/clock.h"
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

// CPU time of all threads of this process so far.
absl::Duration ProcessCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
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
  absl::Duration cpu_before = ProcessCpuTime();
  absl::Time last_trim = absl::Now();
  bool trimmed_while_idle = false;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), policy_.interval)) {
        return;
      }
    }
    const bool idle = ProcessCpuTime() - cpu_before <
                      policy_.interval * policy_.idle_cpu_fraction;
    FreedMemoryCheck check;
    if (idle && !trimmed_while_idle) {
      check = Check(0);
      trimmed_while_idle = true;
    } else if (!idle) {
      trimmed_while_idle = false;
      if (absl::Now() - last_trim >= policy_.busy_gap) {
        check = Check(policy_.max_retained_bytes);
      }
    }
    // After the check: its own work is not the next interval's use.
    cpu_before = ProcessCpuTime();
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
        "({}; resident {:.1f} -> {:.1f} MiB, {:.1f} MiB in use by malloc, "
        "--max-retained-free-mb {:.0f})",
        Mib(released), absl::ToDoubleMilliseconds(check.took),
        idle ? "idle" : "busy", Mib(check.resident_before),
        Mib(check.resident_after), Mib(check.in_use),
        Mib(policy_.max_retained_bytes));
  }
}

}  // namespace cka::server
