#include "buffer_cache.h"

#include <utility>

namespace cka::core {

BufferCache& BufferCache::Global() {
  static BufferCache* cache = new BufferCache;  // never destroyed
  return *cache;
}

std::vector<double> BufferCache::Take(size_t size) {
  std::vector<double> out;
  {
    absl::MutexLock lock(&mu_);
    // The smallest kept buffer that is large enough.
    size_t best = kept_.size();
    for (size_t i = 0; i < kept_.size(); ++i) {
      if (kept_[i].capacity() >= size &&
          (best == kept_.size() ||
           kept_[i].capacity() < kept_[best].capacity())) {
        best = i;
      }
    }
    if (best < kept_.size()) {
      out = std::move(kept_[best]);
      kept_[best] = std::move(kept_.back());
      kept_.pop_back();
      kept_bytes_ -= out.capacity() * sizeof(double);
    }
  }
  out.resize(size);
  return out;
}

void BufferCache::Give(std::vector<double> buffer) {
  const size_t bytes = buffer.capacity() * sizeof(double);
  if (bytes == 0) return;
  absl::MutexLock lock(&mu_);
  if (kept_.size() >= kMaxBuffers || kept_bytes_ + bytes > kMaxBytes) return;
  kept_bytes_ += bytes;
  kept_.push_back(std::move(buffer));
}

size_t BufferCache::Clear() {
  std::vector<std::vector<double>> freed;
  size_t bytes;
  {
    absl::MutexLock lock(&mu_);
    freed.swap(kept_);
    bytes = kept_bytes_;
    kept_bytes_ = 0;
  }
  return bytes;  // `freed` goes here, outside the lock
}

size_t BufferCache::kept_bytes() const {
  absl::MutexLock lock(&mu_);
  return kept_bytes_;
}

}  // namespace cka::core
