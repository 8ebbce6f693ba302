// The mutable state of a Session, guarded by Session::mu_. Internal to
// cka::core.
//
// Layout: pair matrices are S × S row-major over stream indices, entry (s, t)
// at [s * S + t]. Kernels of one batch are k × n² row-major: row r is vec(K̂) of
// the r-th stream.
#ifndef CKA_CORE_SRC_SESSION_STATE_H_
#define CKA_CORE_SRC_SESSION_STATE_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "cka/core/config.h"

namespace cka::core {

// The running minibatch sums of one measure in one step bucket
// (core/MATH.md, "Minibatch CKA" and "Standard error of a minibatch CKA
// entry"). Per common batch b of s and t: a = HSIC(K_s, K_t), u_s = HSIC(K_s,
// K_s). The sums of entry (s, t) with those of (t, s) are the nine sums of
// CkaBatchSums (cka_standard_error.h): Σu and Σv are self at (s, t) and (t, s).
struct PairSums {
  int size = 0;  // S: streams covered; streams >= size have no batches here
  std::vector<double> num;     // Σ a over the common batches of s and t
  std::vector<double> self;    // (s, t): Σ u_s over the common batches
  std::vector<int64_t> count;  // number of common batches of s and t
  // The standard error's sums over the same batches. A bucket restored from a
  // record written before they were kept has NaN in every entry with batches,
  // so that an SE over those batches is NaN, never a wrong number.
  std::vector<double> num_sq;     // Σ a²
  std::vector<double> self_sq;    // (s, t): Σ u_s²
  std::vector<double> num_self;   // (s, t): Σ a·u_s
  std::vector<double> self_prod;  // Σ u_s·u_t

  // Grows to `s` streams, keeping every sum.
  void Resize(int s);
  int64_t bytes() const;
};

// Feature-space sums of the exact estimators over the declared streams
// (core/MATH.md, "Exact feature-space CKA"). D = Σ d_s; x is one example's
// concatenated activations (D), a_s = ‖x_s‖².
struct ExactSums {
  int64_t dim = 0;              // D; 0 until the first complete batch
  std::vector<int64_t> offset;  // S + 1 column offsets of the streams in x
  std::vector<double>
      xx;  // D × D, Σ x·xᵀ; only the upper triangle (j >= i) is kept
  std::vector<double> x;   // D, Σ x
  std::vector<double> aa;  // S × S, Σ a_s·a_t
  std::vector<double> ax;  // S × D, Σ a_s·x
  int64_t rows = 0;        // N
  int64_t batches = 0;

  int64_t bytes() const;
};

// Values in the join buffer that never change once there: a commit takes
// shared references to them under the session mutex and reads them after
// releasing it, while other commits may drop or extend their batch.
using SharedDoubles = std::shared_ptr<const std::vector<double>>;

// A batch_id some of whose expected streams have not arrived yet.
struct PendingBatch {
  int64_t n = 0;
  int64_t step = 0;
  uint64_t seq = 0;          // arrival order, for eviction
  std::vector<int> streams;  // k stream indices, in arrival order
  // Per minibatch measure: the k packed kernels (hsic.h) in `streams` order,
  // as the blocks the commits added: each block is j × PackedSize(n), the j
  // layers of one commit.
  std::vector<std::vector<SharedDoubles>> kernels;
  std::vector<std::vector<double>>
      self;  // per minibatch measure: k values HSIC(K_s, K_s)
  std::vector<SharedDoubles>
      activations;  // exact sessions: per stream, n × d_s
  // False for a complete batch kept only for the join window: it is not a
  // state record (not stored, not exported), so it is gone after a restart.
  bool stored = true;

  int64_t bytes() const;
};

// What the duplicate check remembers of a batch_id.
struct AppliedBatch {
  int64_t n = 0;
  int64_t step = 0;
  uint64_t seq = 0;  // order of first application, for the dedupe window
  std::vector<int> streams;  // sorted stream indices applied for this batch_id
};

class SessionState {
 public:
  std::vector<std::string> streams;  // index → name, first-seen order
  absl::flat_hash_map<std::string, int> stream_index;
  std::vector<int64_t> widths;  // index → d (0 unknown / Gram only)
  // Per minibatch measure (in config order, exact measures skipped): bucket →
  // sums.
  std::vector<std::map<int64_t, PairSums>> buckets;
  ExactSums exact;
  absl::flat_hash_map<std::string, PendingBatch> pending;
  std::map<uint64_t, std::string>
      pending_order;  // seq → batch_id, oldest first
  int64_t pending_bytes = 0;
  absl::flat_hash_map<std::string, AppliedBatch> applied;
  std::deque<std::string>
      applied_order;  // oldest first, bounded by dedupe_window
  // BucketSumsBytes() and the Σ AppliedBytes of `applied`, kept up to date by
  // Commit; -1 until first computed (a restored state).
  int64_t sums_bytes = -1;
  int64_t applied_bytes = -1;
  uint64_t next_seq = 0;
  int64_t batches_applied = 0;
  int64_t batches_evicted = 0;
  // Pairs (stream, batch) that could not be counted: a layer arrived after the
  // kernels of its batch's earlier layers had left the join buffer.
  int64_t pairs_missed = 0;
  // Keys of the state records (see session_codec.cc) changed since the last
  // Session::TakeChanges, and the number of commits that changed state.
  std::set<std::string> dirty;
  uint64_t version = 0;

  // Adds `name` as a new stream and returns its index.
  int AddStream(const std::string& name, int64_t width);
  // Removes the pending batch `batch_id` (if any), adjusts pending_bytes and
  // marks its record changed.
  void DropPending(const std::string& batch_id);
  // The bytes of the exact sums and of every bucket's PairSums; of the
  // buckets' only.
  int64_t SumsBytes() const;
  int64_t BucketSumsBytes() const;
  int64_t AppliedBytesTotal() const;
};

// The bytes one duplicate record of `batch_id` with `streams` streams holds:
// the id twice (map key and order queue), the stream indices and the
// containers' overhead.
int64_t AppliedBytes(size_t batch_id_bytes, size_t streams);

// Returns the bytes of the exact sums for total width `dim` over `streams`
// streams. Saturates at INT64_MAX: widths come from configs and stored state
// and may be absurd.
int64_t ExactBytes(int64_t dim, int64_t streams);
// Returns true when `config` has an exact measure.
bool HasExact(const SessionConfig& config);
// Returns the indices into config.measures of the minibatch (non-exact)
// measures: SessionState::buckets has one entry per index, in this order.
std::vector<int> MinibatchMeasures(const SessionConfig& config);

// Returns a / b rounded towards negative infinity (b != 0).
int64_t FloorDiv(int64_t a, int64_t b);
// Returns the step bucket of `step` under `config`'s step_bucket.
int64_t BucketOf(const SessionConfig& config, int64_t step);

// The bytes of one bucket's PairSums over `streams` streams: six doubles and
// a count per pair.
inline int64_t PairSumsBytes(int64_t streams) { return streams * streams * 56; }

// The largest value of a session's counters (sequence numbers, version,
// batches applied and evicted) that a stored state may hold. Commit refuses to
// run within kCounterHeadroom of it (one commit adds far less), so every state
// a commit produces can be restored, and no counter can overflow.
inline constexpr uint64_t kMaxCounter = uint64_t{1} << 62;
inline constexpr uint64_t kCounterHeadroom = uint64_t{1} << 32;

// Keys of the state records: "config", "meta", "exact", "sums/<measure
// index>/<bucket>", "applied/<batch_id>", "pending/<batch_id>".
inline constexpr char kConfigKey[] = "config";
inline constexpr char kMetaKey[] = "meta";
inline constexpr char kExactKey[] = "exact";
std::string SumsKey(size_t measure, int64_t bucket);
std::string AppliedKey(const std::string& batch_id);
std::string PendingKey(const std::string& batch_id);

}  // namespace cka::core

#endif  // CKA_CORE_SRC_SESSION_STATE_H_
