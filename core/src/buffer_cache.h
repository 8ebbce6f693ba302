// A bounded, process-wide cache of large float64 buffers, reused across
// batches. A fresh page costs a page fault on first touch (~12 µs each on the
// virtual machines measured, ~2 ms for one 4 MB kernel block), and glibc does
// not reliably keep freed multi-megabyte blocks of worker threads' arenas
// mapped. Thread-safe.
#ifndef CKA_CORE_SRC_BUFFER_CACHE_H_
#define CKA_CORE_SRC_BUFFER_CACHE_H_

#include <cstddef>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace cka::core {

class BufferCache {
 public:
  // At most kMaxBuffers buffers of kMaxBytes in total are kept.
  static constexpr size_t kMaxBuffers = 16;
  static constexpr size_t kMaxBytes = size_t{256} << 20;

  static BufferCache& Global();

  // Returns a buffer of `size` elements; their values are unspecified (those
  // of an earlier use, or zero).
  std::vector<double> Take(size_t size);
  // Keeps `buffer` for a later Take, unless the cache is full.
  void Give(std::vector<double> buffer);
  // Frees every kept buffer and returns their bytes.
  size_t Clear();
  // The bytes of the kept buffers.
  size_t kept_bytes() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<double>> kept_ ABSL_GUARDED_BY(mu_);
  size_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cka::core

#endif  // CKA_CORE_SRC_BUFFER_CACHE_H_
