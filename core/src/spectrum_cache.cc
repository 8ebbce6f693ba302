#include "spectrum_cache.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "measures/moment_algebra.h"

namespace cka::core {

namespace {

// A map node, the shared_ptr's control block and the KeptSpectrum with its two
// Eigen headers.
constexpr int64_t kEntryOverhead = 256;

}  // namespace

SpectrumCache::SpectrumCache(MemoryBudget* budget, int64_t max_bytes)
    : max_bytes_(max_bytes) {
  if (budget != nullptr) held_ = budget->Empty();
}

SharedSpectrum SpectrumCache::Find(int64_t state, int stream) {
  absl::MutexLock lock(&mu_);
  if (state > state_) ResetLocked(state);
  if (state == state_) {
    auto it = entries_.find(stream);
    if (it != entries_.end()) {
      ++hits_;
      return it->second;
    }
  }
  ++misses_;
  return nullptr;
}

void SpectrumCache::Insert(int64_t state, int stream, SharedSpectrum spectrum) {
  const int64_t bytes = EntryBytes(*spectrum);
  absl::MutexLock lock(&mu_);
  if (state < state_) return;
  if (state > state_) ResetLocked(state);
  if (entries_.count(stream) > 0) return;
  if (bytes > max_bytes_ - held_.bytes()) return;
  if (!held_
           .Grow(bytes, absl::StrFormat("the kept spectrum of stream %d (%d "
                                        "× %d)",
                                        stream, spectrum->vectors.rows(),
                                        spectrum->vectors.cols()))
           .ok()) {
    return;
  }
  entries_.emplace(stream, std::move(spectrum));
}

void SpectrumCache::Outdate(int64_t state) {
  absl::MutexLock lock(&mu_);
  if (state > state_) ResetLocked(state);
}

SpectrumCache::Stats SpectrumCache::stats() const {
  absl::MutexLock lock(&mu_);
  return {held_.bytes(), static_cast<int64_t>(entries_.size()), hits_, misses_};
}

int64_t SpectrumCache::EntryBytes(const measures_internal::KeptSpectrum& s) {
  const int64_t d = s.vectors.rows(), r = s.vectors.cols();
  return SaturatingAdd(SaturatingMul(8, SaturatingAdd(SaturatingMul(d, r), r)),
                       kEntryOverhead);
}

void SpectrumCache::ResetLocked(int64_t state) {
  entries_.clear();
  held_.Release();
  state_ = state;
}

SharedSpectrum SpectrumCacheView::Find(int s) const {
  if (cache == nullptr) return nullptr;
  return cache->Find(state, streams.empty() ? s : streams[s]);
}

void SpectrumCacheView::Insert(int s, SharedSpectrum spectrum) const {
  if (cache == nullptr) return;
  cache->Insert(state, streams.empty() ? s : streams[s], std::move(spectrum));
}

int64_t SpectrumCacheCap(const MemoryBudget* budget, int64_t max_exact_bytes) {
  if (budget == nullptr || budget->limit() <= 0) return max_exact_bytes;
  return std::min(budget->limit() / 4, max_exact_bytes);
}

}  // namespace cka::core
