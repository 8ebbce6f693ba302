#include "server/freed_memory_limiter.h"

#include <unistd.h>

#include <cstdio>

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

FreedMemoryLimiter::FreedMemoryLimiter(int64_t max_retained_bytes,
                                       absl::Duration interval)
    : max_retained_bytes_(max_retained_bytes), interval_(interval) {
  if (max_retained_bytes_ >= 0) thread_ = std::thread([this] { Run(); });
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
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) return;
    }
    const FreedMemoryCheck check = Check(max_retained_bytes_);
    if (!check.trimmed) continue;
    const int64_t released = check.resident_before - check.resident_after;
    {
      absl::MutexLock lock(&mu_);
      ++trims_;
      released_bytes_ += released;
    }
    spdlog::debug(
        "returned {:.1f} MiB of freed memory to the kernel in {:.1f} ms "
        "(resident {:.1f} -> {:.1f} MiB, {:.1f} MiB in use by malloc, "
        "--max-retained-free-mb {:.0f})",
        Mib(released), absl::ToDoubleMilliseconds(check.took),
        Mib(check.resident_before), Mib(check.resident_after),
        Mib(check.in_use), Mib(max_retained_bytes_));
  }
}

}  // namespace cka::server
