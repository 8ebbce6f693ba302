// Bounds the freed memory that glibc's malloc keeps for reuse.
#ifndef CKA_SERVER_FREED_MEMORY_LIMITER_H_
#define CKA_SERVER_FREED_MEMORY_LIMITER_H_

#include <cstdint>
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

// ckad keeps freed memory for reuse (core::KeepFreedMemoryForReuse), and
// glibc keeps it per malloc arena: an arena that threads filled once keeps its
// pages after they moved on. Over many batches, RSS grew with the batch count
// although the memory in use did not (W1: 391 MB after 1k batches, 650 MB
// after 10k). This limiter checks, every `interval`, how much resident memory
// malloc does not have in use, and when that exceeds `max_retained_bytes`
// returns all free pages to the kernel (malloc_trim). A trim costs tens of
// milliseconds and the pages then fault in again, so the interval is long
// (ckad: 10 s) and the limit above what a steady stream keeps. A no-op
// without glibc. Thread-safe.
class FreedMemoryLimiter {
 public:
  // Starts the checking thread; a `max_retained_bytes` below 0 starts none
  // (Check still works).
  FreedMemoryLimiter(int64_t max_retained_bytes, absl::Duration interval);
  ~FreedMemoryLimiter();  // stops the thread

  FreedMemoryLimiter(const FreedMemoryLimiter&) = delete;
  FreedMemoryLimiter& operator=(const FreedMemoryLimiter&) = delete;

  // One check: trims when more than `max_retained_bytes` is retained.
  static FreedMemoryCheck Check(int64_t max_retained_bytes);

  // The checks so far that trimmed, and the bytes they returned.
  int64_t trims() const;
  int64_t released_bytes() const;

 private:
  void Run();

  const int64_t max_retained_bytes_;
  const absl::Duration interval_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t trims_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t released_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_FREED_MEMORY_LIMITER_H_
