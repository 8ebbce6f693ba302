// The memory budget of a process: every allocation a request causes is priced
// from the request and drawn from it before it is made.
#ifndef CKA_CORE_MEMORY_BUDGET_H_
#define CKA_CORE_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cka::core {

// A count of bytes in use against a fixed limit. What a request needs is
// reserved before it is allocated and released when it is freed: transient
// work (a batch's kernels, a query's matrix) by a Reservation that lives as
// long as the work, long-lived state (a session's sums, join buffer and
// duplicate records) by a Reservation the owner resizes as the state changes.
// Thread-safe; lock-free.
class MemoryBudget {
 public:
  // Bytes reserved from a budget, returned to it on destruction. Move-only.
  // Not thread-safe: one owner at a time. The budget must outlive it.
  class Reservation {
   public:
    Reservation() = default;
    ~Reservation() { Release(); }
    Reservation(Reservation&& other) noexcept;
    Reservation& operator=(Reservation&& other) noexcept;

    int64_t bytes() const { return bytes_; }

    // Reserves `more` bytes in addition. ResourceExhausted (see
    // MemoryBudget::Reserve) and nothing reserved when they do not fit. A
    // reservation from no budget always succeeds.
    absl::Status Grow(int64_t more, std::string_view what);
    // Sets the reserved bytes to `bytes` without checking the limit: for
    // recording what was already priced (or is smaller) after the fact.
    void Set(int64_t bytes);
    // Returns every byte to the budget.
    void Release() { Set(0); }

   private:
    friend class MemoryBudget;
    MemoryBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // A budget of `limit_bytes` (<= 0: no limit, only counting). `name` says in
  // messages what the budget is and where it is set (e.g. "ckad's memory
  // budget (--memory-limit-mb)").
  MemoryBudget(int64_t limit_bytes, std::string name);
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Returns a reservation of `bytes` for `what` (a phrase naming the request
  // and what the bytes are for, e.g. "batch 'e1/17': kernels of 64 layers of
  // n = 8192"). ResourceExhausted with `what`, the bytes, the budget's name,
  // its limit and what is in use when they do not fit; nothing is reserved
  // then.
  absl::StatusOr<Reservation> Reserve(int64_t bytes, std::string_view what);
  // Returns an empty reservation of this budget (to Grow or Set later).
  Reservation Empty() {
    Reservation r;
    r.budget_ = this;
    return r;
  }

  int64_t limit() const { return limit_; }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }

  // Returns the default limit for this process, and in *how where it came
  // from: three quarters of the smallest of the cgroup's memory limit (v2
  // memory.max or v1 memory.limit_in_bytes) and physical memory, and at most
  // half the address-space limit (RLIMIT_AS) when one is set.
  static int64_t DefaultLimitBytes(std::string* how);

 private:
  absl::Status Add(int64_t bytes, std::string_view what);

  const int64_t limit_;
  const std::string name_;
  std::atomic<int64_t> used_{0};
};

// Returns a * b, or INT64_MAX when it overflows or either is negative: sizes
// computed from a request's shapes saturate instead of wrapping, so that a
// crafted shape is priced at "too much" rather than at a small number.
int64_t SaturatingMul(int64_t a, int64_t b);
// Returns a + b, or INT64_MAX when it overflows or either is negative.
int64_t SaturatingAdd(int64_t a, int64_t b);

}  // namespace cka::core

#endif  // CKA_CORE_MEMORY_BUDGET_H_
