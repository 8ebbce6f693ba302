#include "cka/core/memory_budget.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace cka::core {

constexpr int64_t kMaxBytes = std::numeric_limits<int64_t>::max();

int64_t SaturatingMul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return kMaxBytes;
  if (a != 0 && b > kMaxBytes / a) return kMaxBytes;
  return a * b;
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  if (a < 0 || b < 0 || a > kMaxBytes - b) return kMaxBytes;
  return a + b;
}

MemoryBudget::Reservation::Reservation(Reservation&& other) noexcept
    : budget_(other.budget_), bytes_(other.bytes_) {
  other.bytes_ = 0;
}

MemoryBudget::Reservation& MemoryBudget::Reservation::operator=(
    Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.bytes_ = 0;
  }
  return *this;
}

absl::Status MemoryBudget::Reservation::Grow(int64_t more,
                                             std::string_view what) {
  if (more <= 0) return absl::OkStatus();
  if (budget_ != nullptr) {
    if (absl::Status s = budget_->Add(more, what); !s.ok()) return s;
  }
  bytes_ = SaturatingAdd(bytes_, more);
  return absl::OkStatus();
}

void MemoryBudget::Reservation::Set(int64_t bytes) {
  bytes = std::max<int64_t>(bytes, 0);
  if (budget_ != nullptr && bytes != bytes_) {
    budget_->used_.fetch_add(bytes - bytes_, std::memory_order_relaxed);
  }
  bytes_ = bytes;
}

MemoryBudget::MemoryBudget(int64_t limit_bytes, std::string name)
    : limit_(limit_bytes), name_(std::move(name)) {}

absl::StatusOr<MemoryBudget::Reservation> MemoryBudget::Reserve(
    int64_t bytes, std::string_view what) {
  Reservation r = Empty();
  if (absl::Status s = r.Grow(bytes, what); !s.ok()) return s;
  return r;
}

absl::Status MemoryBudget::Add(int64_t bytes, std::string_view what) {
  int64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (limit_ > 0 && (bytes > limit_ || used > limit_ - bytes)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s needs %d bytes (%.1f MiB), but %s has %d of its %d bytes "
          "(%.0f MiB) in use",
          what, bytes, bytes / 1048576.0, name_, used, limit_,
          limit_ / 1048576.0));
    }
  } while (!used_.compare_exchange_weak(used, used + bytes,
                                        std::memory_order_relaxed));
  return absl::OkStatus();
}

namespace {

// Returns the first line of `path` as bytes, or 0 when it is missing or says
// "max" (no limit).
int64_t ReadLimitFile(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &v) || v <= 0)
    return 0;
  return v;
}

}  // namespace

int64_t MemoryBudget::DefaultLimitBytes(std::string* how) {
  const int64_t pages = sysconf(_SC_PHYS_PAGES);
  const int64_t page = sysconf(_SC_PAGESIZE);
  int64_t base = pages > 0 && page > 0 ? SaturatingMul(pages, page) : 0;
  std::string from = absl::StrFormat("physical memory %d MiB", base >> 20);
  // cgroup v1 reports "no limit" as a huge number; it is smaller than physical
  // memory only when it is a real limit.
  for (const char* path : {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    const int64_t cg = ReadLimitFile(path);
    if (cg > 0 && (base == 0 || cg < base)) {
      base = cg;
      from = absl::StrFormat("cgroup limit %d MiB (%s)", cg >> 20, path);
    }
  }
  int64_t limit = base / 4 * 3;
  std::string rule = absl::StrCat("3/4 of ", from);
  rlimit as{};
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    const int64_t half = static_cast<int64_t>(as.rlim_cur / 2);
    if (limit == 0 || half < limit) {
      limit = half;
      rule = absl::StrFormat("1/2 of the address-space limit %d MiB",
                             static_cast<int64_t>(as.rlim_cur >> 20));
    }
  }
  if (how != nullptr) *how = rule;
  return limit;
}

}  // namespace cka::core
