// A session: the running HSIC statistics of a set of streams and the CKA
// matrices they give.
//
// Thread safety: every public method of Session is thread-safe, and what holds
// the session's mutex is:
// - Prepare(): nothing; it may run on many threads at once (it is where the
//   Gram work and the pairs within one message happen).
// - Commit(): two short holds. The first checks the batch and takes shared
//   references to the join buffer's kernels and activations it pairs with;
//   then, without the mutex, the BLAS work runs (the new layers' products with
//   those kernels, an exact batch's Σ x·xᵀ and Σ a·xᵀ). The second hold checks
//   the batch again and adds everything: the pair sums (O(k·S) per layer),
//   the exact batch's sums (an O(D²) addition, its Σ x and Σ a·aᵀ) and the
//   join buffer and duplicate records, all at once, so that no reader sees
//   part of a batch. When another commit changed what the work depended on, it
//   is redone; after a few tries, or when the memory budget has no room for
//   its buffers, it runs under the mutex.
// - Query(): only to resolve the stream names and to copy (or add up over the
//   step buckets) the sums it needs; it computes the matrix after releasing
//   the mutex (an exact query larger than 64 MiB computes under it).
// - Info(), TakeChanges(), AllRecords(), Serialize(): for their whole run
//   (they copy or encode the state).
#ifndef CKA_CORE_SESSION_H_
#define CKA_CORE_SESSION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/block_structure.h"
#include "cka/core/config.h"
#include "cka/core/memory_budget.h"
#include "cka/core/tensor.h"

namespace cka::core {

class ThreadPool;
class SessionState;
class SpectrumCache;

// Per-session budgets. Exceeding one is ResourceExhausted with the figure and
// the limit.
struct SessionLimits {
  int64_t max_streams = 1024;
  int64_t max_examples = 8192;                   // n of one batch
  int64_t max_pending_bytes = int64_t{1} << 30;  // join buffer, see Session
  int64_t max_pending_batches = 4096;
  int64_t max_exact_bytes = int64_t{2}
                            << 30;  // feature-space sums of the exact measures
  int64_t dedupe_window = 1 << 20;  // batch ids remembered for duplicate checks
  // The running sums of every step bucket plus the duplicate records; a batch
  // that would take them over is refused. A bucket of S streams costs 56·S²
  // bytes per minibatch measure (six sums and a count per pair).
  int64_t max_state_bytes = int64_t{1} << 30;
  // Step buckets per minibatch measure.
  int64_t max_buckets = int64_t{1} << 16;
  // The process-wide budget every allocation of this session is drawn from:
  // its state (sums, join buffer, duplicate records, exact sums) while it
  // lives, a batch's kernels while it is prepared and committed, a query's
  // matrix while it is computed. Null: nothing is drawn (no process limit).
  std::shared_ptr<MemoryBudget> memory;
  // The budget of the join buffers of all sessions together: a commit whose
  // join-buffer growth does not fit is refused (nothing is evicted for it).
  // Null: only max_pending_bytes per session.
  std::shared_ptr<MemoryBudget> join_memory;
};

// A batch after validation and Gram work, ready to commit. Opaque; move-only.
class PreparedBatch {
 public:
  PreparedBatch();
  ~PreparedBatch();
  PreparedBatch(PreparedBatch&&) noexcept;
  PreparedBatch& operator=(PreparedBatch&&) noexcept;

  const std::string& batch_id() const;
  // Returns the bytes this batch holds (kernels and, for exact sessions,
  // activations).
  int64_t bytes() const;

 private:
  friend class Session;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

// What one committed batch did.
struct IngestResult {
  // Layers whose contributions were added.
  int layers_applied = 0;
  // Layers already applied for this batch_id, ignored.
  int layers_duplicate = 0;
  // Pending batches evicted from the join buffer by this commit.
  int64_t batches_evicted = 0;
  // The session's state version after this commit (0 when nothing changed): a
  // StateChanges with a version >= this one contains the commit.
  uint64_t version = 0;
  // Pairs of a new layer with a layer of the same batch_id applied earlier
  // whose kernels had already left the join buffer: not counted (see
  // SessionInfo::pairs_missed).
  int64_t pairs_missed = 0;
  // True when this commit missed the session's first pairs (for logging once).
  bool first_pairs_missed = false;
  // Returns true when every layer was a duplicate (nothing was added).
  bool duplicate() const { return layers_applied == 0 && layers_duplicate > 0; }
};

// A request for a CKA matrix.
struct SimilarityQuery {
  std::string measure;              // empty: the session's first measure
  std::vector<std::string> rows;    // empty: every stream, in first-seen order
  std::vector<std::string> cols;    // empty: every stream, in first-seen order
  std::optional<int64_t> step_min;  // inclusive; must start a bucket
  std::optional<int64_t> step_max;  // inclusive; must end a bucket
  // When set, the answer's `blocks` summarise each source's block structure
  // at this threshold (block_structure.h), whatever rows and cols are.
  std::optional<double> block_threshold;
  double block_warn_share = kDefaultBlockWarnShare;
  // Polled between the pairs of a moment measure (each O(p³)); once it
  // returns true the query stops with Cancelled. Empty: never cancelled.
  std::function<bool()> cancelled;
};

// A CKA matrix. values[i * cols.size() + j] is CKA(rows[i], cols[j]); NaN where
// there is no value (no common batch, or a self term <= 0). For a moment
// measure (MeasureKind other than kCka) it is that measure with X = rows[i]
// and Y = cols[j] (kRegressionR2: R²(rows[i] → cols[j]), the share of
// cols[j]'s variance the linear fit from rows[i] explains), NaN where it is
// undefined (a stream without variance; `note` says which). batches has the
// same layout and counts the batches that contributed to the entry.
// standard_errors has the same layout too: the delta-method standard error of
// a minibatch entry over its batches (core/MATH.md, "Standard error of a
// minibatch CKA entry"); NaN for a measure that is not minibatch CKA, an entry
// with no value or fewer than 2 batches, and an entry some of whose batches
// were stored before ckad kept the standard error's sums.
struct SimilarityMatrix {
  std::string measure;
  std::vector<std::string> rows;
  std::vector<std::string> cols;
  std::vector<double> values;
  std::vector<int64_t> batches;
  // A moment measure's word on its values, empty when there is none: why
  // entries are NaN (a stream without variance) and where CCA's correlations
  // are 1 whatever the data (core/MATH.md, "CCA").
  std::string note;
  std::vector<double> standard_errors;
  // With SimilarityQuery::block_threshold: the runs of alike consecutive
  // layers of every source of the session (Session::Query says how).
  std::vector<LayerBlock> blocks;
};

// One (row stream, column stream) pair of a series query.
struct StreamPair {
  std::string row;
  std::string col;
};

// A request for the CKA of chosen pairs in each step bucket on its own (the
// values of a chart of CKA over training).
struct SeriesQuery {
  std::string measure;            // empty: the session's first measure
  std::vector<StreamPair> pairs;  // 1 to kMaxSeriesPairs pairs
};

// The most pairs one SeriesQuery may name.
inline constexpr size_t kMaxSeriesPairs = 1024;

// The values of one step bucket. values[p] is CKA(pairs[p].row, pairs[p].col)
// over the batches of this bucket only; NaN where there is no value (no
// common batch in the bucket, or a self term <= 0). batches[p] counts the
// batches that contributed; standard_errors[p] is the value's standard error
// (as in SimilarityMatrix).
struct SeriesBucket {
  int64_t step_first = 0;  // the bucket's first step (INT64_MIN when the
                           // session has step_bucket 0)
  int64_t step_last = 0;   // its last step (INT64_MAX for step_bucket 0)
  std::vector<double> values;
  std::vector<int64_t> batches;
  std::vector<double> standard_errors;
};

// The answer to a SeriesQuery: one entry per step bucket that has data (any
// stream), ascending by step.
struct SimilaritySeries {
  std::string measure;
  std::vector<StreamPair> pairs;  // as asked
  int64_t step_bucket = 0;        // the session's bucket width
  std::vector<SeriesBucket> buckets;
};

// One durable piece of a session's state, keyed (see Session::TakeChanges).
struct StateRecord {
  std::string key;
  std::string value;     // empty when deleted
  bool deleted = false;  // the key no longer exists
};

// The records changed since the previous TakeChanges, up to state `version`.
struct StateChanges {
  uint64_t version = 0;
  std::vector<StateRecord> records;
};

// Counters of a session.
struct SessionInfo {
  SessionConfig config;  // with defaults filled in
  std::vector<std::string>
      streams;  // first-seen order (declared streams first)
  int64_t batches_applied =
      0;  // committed batches that added at least one layer
  int64_t batches_pending = 0;  // batches waiting in the join buffer
  int64_t batches_evicted =
      0;  // batches dropped from the join buffer before completion
  // (stream, stream, batch) pairs never counted because one layer of the
  // batch arrived after the other's kernels had left the join buffer.
  int64_t pairs_missed = 0;
  int64_t pending_bytes = 0;
  int64_t state_bytes = 0;  // memory held by the running sums
  // Memory the session holds in all: running sums, join buffer, duplicate
  // records, exact sums and kept spectra (what it draws from the memory
  // budget).
  int64_t held_bytes = 0;
  // The moment measures' kept spectra (see Session::Query): the bytes they
  // hold (part of held_bytes), and how many stream spectra queries took from
  // them or had to compute, since the session was created or restored.
  int64_t spectrum_bytes = 0;
  int64_t spectra_reused = 0;
  int64_t spectra_computed = 0;
};

// The running statistics of one session (core/MATH.md, "Minibatch CKA" and
// "Exact feature-space CKA").
//
// A batch joins streams by batch_id: each stream's kernels wait in a bounded
// join buffer until every expected stream of that batch_id has arrived (the
// declared streams, or — when none are declared — every stream the session has
// seen and every expected source, and then for the session's join window of
// most recent batches, so that a stream first seen later still pairs with
// them); each pair of streams contributes as soon as both are there. A layer
// that arrives after its partners' kernels have left the buffer is applied,
// and its missed pairs are counted (SessionInfo::pairs_missed). All
// contributions of a batch go to the step bucket of its first arrival's step.
class Session {
 public:
  // Returns a new empty session, InvalidArgument for a bad config,
  // ResourceExhausted when the declared widths need more exact-estimator memory
  // than limits.max_exact_bytes (the message gives the figure).
  static absl::StatusOr<std::unique_ptr<Session>> Create(
      SessionConfig config, SessionLimits limits = {});

  // Returns a session restored from Serialize()'s bytes; DataLoss when they are
  // damaged, truncated or of an unknown version. `limits` apply to what happens
  // next.
  static absl::StatusOr<std::unique_ptr<Session>> Restore(
      std::string_view bytes, SessionLimits limits = {});

  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Validates `batch` and computes its kernels without touching the session's
  // state. The tensors in `batch` are read during the call only. With a pool,
  // layers are processed in parallel on it. InvalidArgument for any bad input
  // (names, shapes, byte counts, dtypes, NaN/Inf, rows differing between
  // layers, n too small, non-symmetric Gram, a Gram in an exact session,
  // identical examples under an RBF measure, undeclared streams);
  // ResourceExhausted when n exceeds limits.max_examples or when the memory
  // the batch needs (its kernels, pair products and working buffers, priced
  // from the shapes before anything is allocated) does not fit the memory
  // budget. The PreparedBatch holds that memory's reservation.
  absl::StatusOr<PreparedBatch> Prepare(const BatchInput& batch,
                                        ThreadPool* pool = nullptr) const;

  // Adds a prepared batch to the running sums, atomically: on error nothing
  // changed. InvalidArgument when the rows differ from another stream's for
  // this batch_id or a width changes in an exact session; ResourceExhausted
  // when a new stream exceeds max_streams, the batch alone exceeds the join
  // buffer, a new step bucket exceeds max_buckets, the state would exceed
  // max_state_bytes, or the state's growth does not fit the memory budget
  // (priced before anything is allocated). Layers already applied for this
  // batch_id are counted as duplicates and ignored.
  absl::StatusOr<IngestResult> Commit(PreparedBatch batch);

  // Prepare + Commit.
  absl::StatusOr<IngestResult> Ingest(const BatchInput& batch,
                                      ThreadPool* pool = nullptr);

  // Returns the CKA matrix for `query`. NotFound for an unknown measure or
  // stream; InvalidArgument for a stream named twice in rows (or in cols), or
  // a step range that is empty or not bucket-aligned; FailedPrecondition for a
  // step range on an exact or moment measure (kept for all time only) or on a
  // session without step buckets; ResourceExhausted when the matrix (with a
  // moment measure: its per-stream spectra and one pair's scratch) does not
  // fit the memory budget. A moment measure decomposes each stream's moment
  // once per query, O(d³), under the mutex when the streams' sums exceed
  // 64 MiB (as exact CKA does), else after copying them; the spectra are kept
  // for later queries of any moment measure until the next batch completes
  // (their bytes drawn from the memory budget, at most a quarter of its limit;
  // when they do not fit, queries compute them as before), and the values are
  // the same bits with or without them.
  //
  // With block_threshold set, also fills `blocks`: for each source of the
  // session, FindLayerBlocks over that source's own layers in first-seen
  // order, from the square matrix of those layers under the same measure and
  // step range (one more Query per source with >= 2 layers, each priced like
  // this one); InvalidArgument naming block_threshold or block_warn_share for
  // a value outside (0, 1]. The blocks are read in holds of the mutex of their
  // own, so a commit between them and the matrix can make them differ by
  // that commit.
  absl::StatusOr<SimilarityMatrix> Query(const SimilarityQuery& query) const;

  // Returns, for each step bucket with data, the CKA of every pair of
  // `query` over that bucket's batches alone: each value equals Query's with
  // step_min/step_max set to the bucket's range. NotFound for an unknown
  // measure or stream; InvalidArgument for no pairs or more than
  // kMaxSeriesPairs; FailedPrecondition for an exact or moment measure (it
  // keeps its sums over all steps, not per bucket); ResourceExhausted when
  // buckets × pairs do not fit the memory budget (priced before anything is
  // allocated). Holds the mutex only to copy the sums it needs.
  absl::StatusOr<SimilaritySeries> QuerySeries(const SeriesQuery& query) const;

  // Returns the configuration and counters. Copies the config and every
  // stream name.
  SessionInfo Info() const;
  const SessionConfig& config() const { return config_; }

  // Returns the complete running state (config, sums per bucket, applied batch
  // ids, pending batches) as bytes that Restore() accepts.
  std::string Serialize() const;

  // Incremental durability. The state is a set of keyed records ("config",
  // "meta", "exact", "sums/<measure>/<bucket>", "applied/<batch_id>",
  // "pending/<batch_id>"); a store that applies every StateChanges in order
  // (upsert, or delete when `deleted`) holds exactly AllRecords(), from which
  // FromRecords() rebuilds the session. The duplicate record of a batch and the
  // sums it changed are always in the same StateChanges.
  //
  // TakeChanges returns the records changed since the previous call (for a new
  // or Restore()d session: all of them) and the version they bring the store
  // to. AllRecords returns every record and the current version.
  StateChanges TakeChanges();
  StateChanges AllRecords() const;
  // Returns the session held by `records` (key → value), with no pending
  // changes; DataLoss naming the record when one is missing, damaged or
  // inconsistent with the others.
  static absl::StatusOr<std::unique_ptr<Session>> FromRecords(
      const std::map<std::string, std::string>& records,
      SessionLimits limits = {});

 private:
  Session(SessionConfig config, SessionLimits limits);
  // Returns the blocks of Query's answer for `query` (its block_threshold
  // set), session_blocks.cc.
  absl::StatusOr<std::vector<LayerBlock>> QueryBlocks(
      const SimilarityQuery& query) const;
  // Returns the bytes the state holds in all (SessionInfo::held_bytes).
  int64_t HeldBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the state's bytes in held_ (after a restore), without a check.
  void AccountRestoredState();

  // Commit's steps (session_commit.cc explains them): what committing `rep`
  // does, checked against the state and changing nothing; the BLAS work, which
  // needs no lock (with `xx`, `ax` null the exact sums go to `out`, else they
  // are accumulated into the session's sums there); and the changes.
  struct CommitPlan;
  struct CommitProducts;
  absl::StatusOr<CommitPlan> PlanCommitLocked(const PreparedBatch::Rep& rep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void ComputeCommit(const PreparedBatch::Rep& rep,
                            const CommitPlan& plan, double* xx, double* ax,
                            CommitProducts* out);
  absl::StatusOr<IngestResult> ApplyCommitLocked(PreparedBatch::Rep& rep,
                                                 const CommitPlan& plan,
                                                 CommitProducts* products)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SessionConfig config_;
  const SessionLimits limits_;
  mutable absl::Mutex mu_;
  std::unique_ptr<SessionState> state_ ABSL_GUARDED_BY(mu_);
  // The state's bytes, drawn from limits_.memory, and its join buffer's, drawn
  // from limits_.join_memory.
  MemoryBudget::Reservation held_ ABSL_GUARDED_BY(mu_);
  MemoryBudget::Reservation held_join_ ABSL_GUARDED_BY(mu_);
  // The moment measures' spectra kept between queries; thread-safe with its
  // own mutex, which may be taken while holding mu_ (never the other way).
  const std::unique_ptr<SpectrumCache> spectra_;
};

}  // namespace cka::core

#endif  // CKA_CORE_SESSION_H_
