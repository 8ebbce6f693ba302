// The kept spectra of a session's streams between moment queries. Internal to
// cka::core.
//
// A stream's kept spectrum (measures_internal::Decompose of its centred second
// moment, core/MATH.md, "Rank rule and invariances") depends only on the
// session's exact sums: its diagonal block of Σ x·xᵀ, its part of Σ x, and N.
// Those change only when a batch completes, and ExactSums::batches grows by
// one each time, in the same hold of the session's mutex; so a spectrum is
// keyed by the session's stream index and the `batches` of the sums it was
// computed from (the "state"), and it is the same for every measure kind.
#ifndef CKA_CORE_SRC_SPECTRUM_CACHE_H_
#define CKA_CORE_SRC_SPECTRUM_CACHE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/memory_budget.h"

namespace cka::core {

namespace measures_internal {
struct KeptSpectrum;  // measures/moment_algebra.h (Eigen stays out of here)
}  // namespace measures_internal

// A spectrum shared by the cache and the queries that use it; never changed.
using SharedSpectrum = std::shared_ptr<const measures_internal::KeptSpectrum>;

// The spectra of one state of a session's exact sums, at most one per stream.
// Inserting a spectrum of a newer state drops every entry of the older one;
// one of an older state than the kept one is ignored. The entries' bytes
// (EntryBytes) are reserved in a MemoryBudget and returned when they are
// dropped or the cache is destroyed; an entry that does not fit the budget,
// or would take the cache past its cap, is not kept (the query that computed
// it has priced it already and goes on without the cache).
//
// Thread-safe: every method takes the cache's own mutex, never for longer than
// a map operation. A caller may hold its session's mutex while calling it;
// the cache never calls back.
class SpectrumCache {
 public:
  // Counters since construction. `bytes` is what the entries hold now.
  struct Stats {
    int64_t bytes = 0;
    int64_t entries = 0;
    int64_t hits = 0;    // Find calls that returned a spectrum
    int64_t misses = 0;  // Find calls that returned null
  };

  // A cache drawing from `budget` (null: the bytes are only counted), which
  // must outlive it, that holds at most `max_bytes`.
  SpectrumCache(MemoryBudget* budget, int64_t max_bytes);
  SpectrumCache(const SpectrumCache&) = delete;
  SpectrumCache& operator=(const SpectrumCache&) = delete;

  // Returns the spectrum of the session's stream `stream` kept for `state`,
  // or null (a miss). A `state` newer than the kept one drops the kept
  // entries: no query can use them again.
  SharedSpectrum Find(int64_t state, int stream);

  // Keeps `spectrum` (not null) for (`state`, `stream`) unless one is kept
  // for them already, `state` is older than the kept one, or its bytes do not
  // fit the cap or the budget.
  void Insert(int64_t state, int stream, SharedSpectrum spectrum);

  // Drops the kept entries, and returns their bytes, when `state` is newer
  // than theirs: the sums they came from have changed, so no query can use
  // them again.
  void Outdate(int64_t state);

  Stats stats() const;

  // Returns the bytes one kept spectrum of a d-wide stream keeping r
  // directions holds: 8·(d·r + r) for its vectors and values, and the entry's
  // fixed overhead.
  static int64_t EntryBytes(const measures_internal::KeptSpectrum& s);

 private:
  // Drops every entry and sets the kept state to `state`.
  void ResetLocked(int64_t state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  int64_t state_ ABSL_GUARDED_BY(mu_) = -1;
  std::map<int, SharedSpectrum> entries_ ABSL_GUARDED_BY(mu_);
  MemoryBudget::Reservation held_ ABSL_GUARDED_BY(mu_);
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

// A query's access to its session's SpectrumCache: the exact sums it reads are
// those of state `state`, and their stream s is the session's stream
// streams[s] (a query copies the streams it needs with new indices). Empty
// `streams`: the indices are the session's. Null `cache`: nothing is kept.
struct SpectrumCacheView {
  SpectrumCache* cache = nullptr;
  int64_t state = 0;
  std::vector<int> streams;

  SharedSpectrum Find(int s) const;
  void Insert(int s, SharedSpectrum spectrum) const;
};

// Returns the cap of a session's SpectrumCache: a quarter of `budget`'s limit
// when it has one, so that kept spectra never take the room queries and
// batches need, and at most `max_exact_bytes`. The spectra of all declared
// streams hold at most 8·(Σ d² + Σ d) bytes, less than the exact sums they
// come from (8·D² and more for D = Σ d), which max_exact_bytes bounds.
int64_t SpectrumCacheCap(const MemoryBudget* budget, int64_t max_exact_bytes);

}  // namespace cka::core

#endif  // CKA_CORE_SRC_SPECTRUM_CACHE_H_
