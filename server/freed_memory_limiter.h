// Bounds the freed memory that glibc's malloc keeps for reuse.
#ifndef CKA_SERVER_FREED_MEMORY_LIMITER_H_
#define CKA_SERVER_FREED_MEMORY_LIMITER_H_

#include <cstdint>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cka::server {

// What one check saw and did. Bytes; "retained" is resident memory that malloc
// does not have in use: freed memory it keeps, plus code, stacks and other
// mappings that are not malloc's.
struct FreedMemoryCheck {
  int64_t resident_before = 0;
  int64_t in_use = 0;  // malloc's allocated bytes, arenas and mmap together
  bool trimmed = false;
  int64_t resident_after = 0;  // resident_before when not trimmed
  absl::Duration took;

  int64_t retained() const { return resident_before - in_use; }
};

// When the limiter looks and when it trims.
struct FreedMemoryPolicy {
  // While busy: trim when more than this is retained (below 0: never trim,
  // and start no thread).
  int64_t max_retained_bytes = int64_t{256} << 20;
  absl::Duration interval = absl::Seconds(1);   // how often it looks
  absl::Duration busy_gap = absl::Seconds(10);  // least time between busy trims
  // A counter that grows while the process works (ckad: batches received).
  // An interval in which it did not change is idle: on entering idleness, all
  // free pages go back. Unset: never idle.
  std::function<int64_t()> activity;
};

// ckad keeps freed memory for reuse (core::KeepFreedMemoryForReuse). Before
// this limiter, with glibc's default of 8 malloc arenas per core, each arena
// that threads filled once kept its pages after they moved on, and RSS grew
// with the batch count although the memory in use did not (W1: 391 MB after
// 1k batches, 650 MB after 10k). This limiter looks every `interval` at how
// much resident memory malloc does not have in use. While ckad is busy, it
// returns all free pages to the kernel (malloc_trim) when that exceeds
// `max_retained_bytes`, at most once per `busy_gap`: a trim costs tens of
// milliseconds and the pages then fault in again. When ckad turns idle (no
// batch received for an interval), it frees core's cached kernel blocks
// (core::ReleaseCachedBuffers) and returns all free pages once, so that an idle
// ckad holds what it uses. A no-op without glibc. Thread-safe.
class FreedMemoryLimiter {
 public:
  explicit FreedMemoryLimiter(FreedMemoryPolicy policy);
  ~FreedMemoryLimiter();  // stops the thread

  FreedMemoryLimiter(const FreedMemoryLimiter&) = delete;
  FreedMemoryLimiter& operator=(const FreedMemoryLimiter&) = delete;

  // One check: trims when more than `max_retained_bytes` is retained.
  static FreedMemoryCheck Check(int64_t max_retained_bytes);

  // The checks so far that trimmed (busy or idle), and the bytes they
  // returned.
  int64_t trims() const;
  int64_t released_bytes() const;

 private:
  void Run();

  const FreedMemoryPolicy policy_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t trims_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t released_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_FREED_MEMORY_LIMITER_H_
