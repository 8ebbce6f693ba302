// Session::Commit: adding a prepared batch to the running sums, the join
// buffer and the duplicate records.
#include <cblas.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "buffer_cache.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "prepared_batch.h"
#include "session_state.h"
#include "spectrum_cache.h"
#include "tensor_convert.h"

namespace cka::core {

namespace {

// Returns the source of stream `name` ("" for a stream without one).
std::string_view SourceOf(std::string_view name) {
  const size_t slash = name.find('/');
  return slash == std::string_view::npos ? std::string_view()
                                         : name.substr(0, slash);
}

// Returns true when some stream of `names` comes from each of `sources`.
bool HasSources(const std::vector<std::string_view>& names,
                const std::vector<std::string>& sources) {
  return std::all_of(sources.begin(), sources.end(), [&](const auto& source) {
    return std::any_of(names.begin(), names.end(), [&](std::string_view n) {
      return SourceOf(n) == source;
    });
  });
}

// A session without declared streams: drops the oldest batches of the join
// buffer that are complete (every stream seen so far and every expected source
// arrived) while it holds more than the join window. Incomplete ones wait for
// their streams (until evicted by the join buffer's budget).
void ReleaseJoinWindow(const SessionConfig& config, SessionState& st) {
  for (auto it = st.pending_order.begin();
       it != st.pending_order.end() &&
       static_cast<int64_t>(st.pending.size()) > config.join_window;) {
    const std::string id = it->second;
    ++it;
    const AppliedBatch& applied = st.applied.at(id);
    if (applied.streams.size() < st.streams.size()) continue;
    std::vector<std::string_view> names;
    for (int s : applied.streams) names.push_back(st.streams[s]);
    if (HasSources(names, config.expected_sources)) st.DropPending(id);
  }
}

// Adds one batch's HSIC values to the sums of one bucket, under the session
// mutex, so row by row (the sums are S × S; a column-wise pass missed the cache
// and held queries up). `streams` are the stream indices of the batch's layers,
// the `k_new` new ones first, then those that arrived earlier; row i < k_new of
// `cross` (leading dimension `ld`) holds HSIC(K_i, K_j) for every layer j, and
// `self[i]` is HSIC(K_i, K_i). Every pair with a new layer gets the batch once
// in each order; pairs of two earlier layers had it before. The standard
// error's products (PairSums) are added beside the sums.
void AddPairs(const std::vector<int>& streams, int k_new, const double* cross,
              size_t ld, const std::vector<double>& self, PairSums& sums) {
  const size_t s = sums.size;
  const int k_all = static_cast<int>(streams.size());
  for (int x = 0; x < k_all; ++x) {
    const size_t row = streams[x] * s;
    double* num = sums.num.data() + row;
    double* self_sum = sums.self.data() + row;
    int64_t* count = sums.count.data() + row;
    double* num_sq = sums.num_sq.data() + row;
    double* self_sq = sums.self_sq.data() + row;
    double* num_self = sums.num_self.data() + row;
    double* self_prod = sums.self_prod.data() + row;
    const bool is_new = x < k_new;
    const double u = self[x];
    for (int y = 0; y < (is_new ? k_all : k_new); ++y) {
      const int b = streams[y];
      const double a = is_new ? cross[x * ld + y] : cross[y * ld + x];
      num[b] += a;
      self_sum[b] += u;
      count[b] += 1;
      num_sq[b] += a * a;
      self_sq[b] += u * u;
      num_self[b] += a * u;
      self_prod[b] += u * self[y];
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Commit
//
// The BLAS work of a commit runs without the session mutex, which every batch
// and query of the session needs: the products of the new layers' kernels with
// those of the same batch_id's earlier layers (V_new·V_oldᵀ) and, when the
// commit completes a batch of an exact session, the batch's feature-space sums
// (Σ x·xᵀ, Σ a·xᵀ). A commit runs in three steps:
//
//  1. Under the mutex, PlanCommitLocked checks the batch against the state and
//     decides what committing it does (a CommitPlan), changing nothing. The
//     plan holds shared references to the earlier layers' kernels and
//     activations: the join buffer never changes them once they are there
//     (PendingBatch keeps them as immutable blocks), so they can be read after
//     the mutex is released even if another commit drops or extends their
//     batch.
//  2. Without the mutex, ComputeCommit computes the products into buffers of
//     the commit's own (CommitProducts), reserved from the memory budget first.
//  3. Under the mutex again, the commit is planned anew: another commit may
//     have changed the state meanwhile. The products depend only on the plan's
//     token (which pending batch and how many of its layers, which layers of
//     this batch are new, whether it stays in the join buffer, whether an
//     exact batch completes); when the new plan has the same token,
//     ApplyCommitLocked adds them to the sums. When it does not, step 2 runs
//     again for the new plan. After kOutsideAttempts tries, or when the budget
//     has no room for the buffers, the products are computed under the mutex
//     (as every commit did before), so every commit makes progress. A commit
//     without such work (all its layers in one message, no exact batch to
//     complete, nothing to keep in the join buffer) applies in step 1's hold.
//
// Everything a commit changes is changed in step 3's one hold of the mutex, so
// a reader (Query, Info, TakeChanges, AllRecords, Serialize) sees a batch
// either wholly applied or not at all. In a single-threaded order every
// commit takes step 3 at once and adds the same products in the same order as
// a commit that held the mutex throughout: the minibatch sums are bit for bit
// the same. The exact sums are added as one local sum per batch (C += Σ_batch
// instead of BLAS accumulating into C in its own blocks of rows), which
// changes their rounding only when a batch spans several of OpenBLAS's blocks.

namespace {

// How many times a commit computes its products without the mutex before it
// computes them under it.
constexpr int kOutsideAttempts = 3;

}  // namespace

struct Session::CommitPlan {
  IngestResult result;           // layers_duplicate so far
  std::vector<int> fresh;        // positions in rep of layers to apply
  std::vector<int> fresh_index;  // their stream indices (-1: new stream)
  int new_streams = 0;
  bool complete = false;  // every expected stream is there after the commit
  bool keep = false;      // the batch's kernels stay in the join buffer
  int64_t add_bytes = 0;  // what the join buffer grows by when kept
  int64_t step = 0;
  int64_t bucket = 0;
  int s_count = 0;  // streams after the commit
  int k_new = 0;
  int k_old = 0;  // layers of this batch_id in the join buffer
  int64_t pairs_missed = 0;
  int64_t sums_growth = 0;
  int64_t applied_growth = 0;
  int64_t exact_growth = 0;
  int64_t resize_bytes = 0;  // copies of the sums that PairSums::Resize makes
  // The join buffer's batch of this batch_id (its seq), if any, and per
  // minibatch measure its kernel blocks (k_old layers in all).
  std::optional<uint64_t> pending_seq;
  std::vector<std::vector<SharedDoubles>> old_kernels;
  std::vector<int> old_streams;  // k_old stream indices
  // The commit completes a batch of an exact session and every declared
  // stream's activations are at hand: the pending ones in `old_activations`
  // (k_old, n × d_s each), the new ones in the batch. `offset`: S + 1 column
  // offsets of the declared streams in x.
  bool exact_sums = false;
  std::vector<SharedDoubles> old_activations;
  std::vector<int64_t> offset;

  // Returns true when the commit has BLAS work or copies worth leaving the
  // mutex for.
  bool NeedsProducts() const { return k_old > 0 || exact_sums || keep; }
  // Returns the bytes ComputeCommit allocates for this plan and a batch of k
  // layers of n examples with `measures` minibatch measures; with
  // `local_exact`, the exact batch's own sums too.
  int64_t ComputeBytes(int k, int64_t n, size_t measures,
                       bool local_exact) const {
    const int64_t packed = PackedSize(n);
    const int64_t m = static_cast<int64_t>(measures);
    const int64_t k_all = k_new + k_old;
    int64_t bytes = 0;
    if (k_new != k || k_old > 0) bytes += m * k_new * k_all * 8;
    if (keep || (k_new != k && k_old > 0)) bytes += m * k_new * packed * 8;
    if (k_old > 0 && !old_kernels.empty() && old_kernels.front().size() > 1)
      bytes += k_old * packed * 8;
    if (exact_sums) {
      const int64_t dim = offset.back();
      const int64_t sn = static_cast<int64_t>(offset.size()) - 1;
      bytes += (n * dim + n * sn) * 8;
      if (local_exact) bytes += (dim * dim + sn * dim) * 8;
    }
    return bytes;
  }
};

struct Session::CommitProducts {
  // What the products were computed for (see CommitPlan); nullopt: nothing.
  struct Token {
    std::optional<uint64_t> pending_seq;
    int k_old = 0;
    std::vector<int> fresh;
    bool keep = false;  // new_kernels are needed
    bool exact_sums = false;
    friend bool operator==(const Token& a, const Token& b) {
      return a.pending_seq == b.pending_seq && a.k_old == b.k_old &&
             a.fresh == b.fresh && a.keep == b.keep &&
             a.exact_sums == b.exact_sums;
    }
  };
  static Token TokenOf(const CommitPlan& plan) {
    return {plan.pending_seq, plan.k_old, plan.fresh, plan.keep,
            plan.exact_sums};
  }
  std::optional<Token> token;
  // Per minibatch measure: the new layers' packed kernels (k_new × packed),
  // when the batch stays in the join buffer or when not all of its layers are
  // new and some pair with earlier ones; empty otherwise.
  std::vector<std::vector<double>> new_kernels;
  // Per minibatch measure: k_new × (k_new + k_old), row i holding HSIC(K_i,
  // K_j) of new layer i with every new layer j and then every earlier one.
  // Empty when every layer of the batch is new and none came earlier: the
  // batch's own k × k pair matrix is all of it.
  std::vector<std::vector<double>> cross;
  // An exact batch (plan.exact_sums): its activations side by side (n × D),
  // their squared norms per stream (n × S), and, when computed without the
  // mutex, its Σ x·xᵀ (D × D, upper triangle) and Σ a·xᵀ (S × D).
  std::vector<double> x, a, xx, ax;

  int64_t NewKernelBytes() const {
    int64_t bytes = 0;
    for (const std::vector<double>& v : new_kernels)
      bytes += static_cast<int64_t>(v.size() * sizeof(double));
    return bytes;
  }
};

absl::StatusOr<Session::CommitPlan> Session::PlanCommitLocked(
    const PreparedBatch::Rep& rep) {
  SessionState& st = *state_;
  const bool exact = HasExact(config_);
  const int64_t n = rep.n;
  const size_t packed = static_cast<size_t>(PackedSize(n));
  CommitPlan plan;
  IngestResult& result = plan.result;

  const AppliedBatch* applied = nullptr;
  if (auto it = st.applied.find(rep.batch_id); it != st.applied.end())
    applied = &it->second;
  if (applied != nullptr && applied->n != n) {
    const std::string other = st.streams[applied->streams.front()];
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d rows, but stream '%s' had %d rows for this batch_id",
        LayerContext(rep.streams[0], rep.batch_id), n, other, applied->n));
  }
  std::vector<int>& fresh = plan.fresh;
  std::vector<int>& fresh_index = plan.fresh_index;
  int& new_streams = plan.new_streams;
  for (size_t i = 0; i < rep.streams.size(); ++i) {
    auto it = st.stream_index.find(rep.streams[i]);
    const int index = it == st.stream_index.end() ? -1 : it->second;
    if (index >= 0 && applied != nullptr &&
        std::binary_search(applied->streams.begin(), applied->streams.end(),
                           index)) {
      ++result.layers_duplicate;
      continue;
    }
    if (index < 0) ++new_streams;
    fresh.push_back(static_cast<int>(i));
    fresh_index.push_back(index);
  }
  if (fresh.empty()) return plan;
  const uint64_t limit = kMaxCounter - kCounterHeadroom;
  if (st.next_seq >= limit || st.version >= limit ||
      static_cast<uint64_t>(st.batches_applied) >= limit ||
      static_cast<uint64_t>(st.batches_evicted) >= limit) {
    return absl::ResourceExhaustedError(
        "this session's commit counters are used up (2^62 commits); export "
        "its matrices and start a new session");
  }
  if (static_cast<int64_t>(st.streams.size()) + new_streams >
      limits_.max_streams) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "batch '%s' adds %d new streams to the session's %d, more than the "
        "limit of %d streams "
        "per session",
        rep.batch_id, new_streams, st.streams.size(), limits_.max_streams));
  }
  std::vector<int64_t> widths = st.widths;
  if (exact) {
    // Declared streams only (Prepare checked), so every index is known.
    bool widths_change = false;
    for (size_t f = 0; f < fresh.size(); ++f) {
      const int64_t d = rep.widths[fresh[f]];
      int64_t& known = widths[fresh_index[f]];
      if (known != 0 && known != d) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: %d features per example, but this stream had %d before; the "
            "exact estimators "
            "need a fixed width",
            LayerContext(rep.streams[fresh[f]], rep.batch_id), d, known));
      }
      if (known == 0) widths_change = true;
      known = d;
    }
    if (widths_change && st.exact.dim == 0) {
      const int64_t dim =
          std::accumulate(widths.begin(), widths.end(), int64_t{0});
      const int64_t need = ExactBytes(dim, static_cast<int64_t>(widths.size()));
      if (need > limits_.max_exact_bytes) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "batch '%s': the exact estimators over the declared streams' %d "
            "features need %d "
            "bytes, more than the exact-estimator memory budget of %d bytes",
            rep.batch_id, dim, need, limits_.max_exact_bytes));
      }
    }
  }
  // Which streams of this batch_id will be present after this commit.
  const PendingBatch* pending = nullptr;
  if (auto it = st.pending.find(rep.batch_id); it != st.pending.end())
    pending = &it->second;
  const size_t arrived = (applied ? applied->streams.size() : 0) + fresh.size();
  bool& complete = plan.complete;
  if (!config_.streams.empty()) {
    complete = arrived >= config_.streams.size();
  } else {
    std::vector<std::string_view> names;
    if (applied != nullptr) {
      for (int s : applied->streams) names.push_back(st.streams[s]);
    }
    for (int f : fresh) names.push_back(rep.streams[f]);
    complete = arrived >= st.streams.size() + new_streams &&
               HasSources(names, config_.expected_sources);
  }
  const std::vector<int> measures = MinibatchMeasures(config_);
  int64_t& add_bytes = plan.add_bytes;
  add_bytes = static_cast<int64_t>(fresh.size() * measures.size() *
                                   (packed + 1) * sizeof(double));
  for (int f : fresh) {
    if (exact)
      add_bytes +=
          static_cast<int64_t>(rep.activations[f].size() * sizeof(double));
  }
  const int64_t pending_total = add_bytes + (pending ? pending->bytes() : 0);
  // Without declared streams a complete batch still keeps its kernels for its
  // join window, so that streams first seen later pair with it: when they fit
  // the join buffer.
  plan.keep = !complete || (config_.streams.empty() &&
                            pending_total <= limits_.max_pending_bytes);
  if (!plan.keep) add_bytes = 0;
  if (!complete) {
    const int64_t total = pending_total;
    if (total > limits_.max_pending_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("batch '%s' needs %d bytes in the join buffer until "
                          "all its streams arrive, more than "
                          "the session's pending budget of %d bytes",
                          rep.batch_id, total, limits_.max_pending_bytes));
    }
  }

  const int64_t step = plan.step =
      applied ? applied->step : (pending ? pending->step : rep.step);
  const int64_t bucket = plan.bucket = BucketOf(config_, step);
  const int s_count = plan.s_count =
      static_cast<int>(st.streams.size()) + new_streams;
  const int k_new = plan.k_new = static_cast<int>(fresh.size());
  const int k_old = plan.k_old =
      pending ? static_cast<int>(pending->streams.size()) : 0;
  // Layers applied earlier for this batch_id whose kernels have left the join
  // buffer (evicted, or out of its window): their pairs with the new layers
  // cannot be counted.
  plan.pairs_missed =
      applied != nullptr
          ? (static_cast<int64_t>(applied->streams.size()) - k_old) * k_new
          : 0;

  // Price what this commit adds to the state before changing or allocating
  // anything.
  if (st.sums_bytes < 0) st.sums_bytes = st.BucketSumsBytes();
  if (st.applied_bytes < 0) st.applied_bytes = st.AppliedBytesTotal();
  for (size_t m = 0; m < measures.size(); ++m) {
    auto it = st.buckets[m].find(bucket);
    if (it == st.buckets[m].end()) {
      if (static_cast<int64_t>(st.buckets[m].size()) >= limits_.max_buckets) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "batch '%s': step %d opens a new step bucket (%d), but measure "
            "'%s' already has %d buckets, the limit per session (use a wider "
            "step_bucket)",
            rep.batch_id, step, bucket, config_.measures[measures[m]].name,
            limits_.max_buckets));
      }
      plan.sums_growth += PairSumsBytes(s_count);
    } else if (it->second.size < s_count) {
      plan.sums_growth += PairSumsBytes(s_count) - it->second.bytes();
      plan.resize_bytes += it->second.bytes();
    }
  }
  plan.applied_growth = applied != nullptr
                            ? static_cast<int64_t>(4 * fresh.size())
                            : AppliedBytes(rep.batch_id.size(), fresh.size());
  const int64_t state_after =
      st.sums_bytes + st.applied_bytes + plan.sums_growth + plan.applied_growth;
  if (state_after > limits_.max_state_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "batch '%s' would take the session's running sums and duplicate "
        "records to %d bytes (%d step buckets of %d streams, %d measures), "
        "more than its state budget of %d bytes (use a wider step_bucket or "
        "fewer streams)",
        rep.batch_id, state_after,
        st.buckets.empty() ? 0 : st.buckets.front().size(), s_count,
        measures.size(), limits_.max_state_bytes));
  }
  if (pending != nullptr) {
    plan.pending_seq = pending->seq;
    plan.old_kernels = pending->kernels;
    plan.old_streams = pending->streams;
  }
  const int sn = static_cast<int>(config_.streams.size());
  if (exact && complete) {
    int64_t dim = 0;
    for (int w : fresh) dim += rep.widths[w];
    for (int o = 0; o < k_old; ++o)
      dim += static_cast<int64_t>(pending->activations[o]->size()) / n;
    if (st.exact.dim == 0) plan.exact_growth = ExactBytes(dim, sn);
    // Each declared stream once: the new ones are not in the join buffer.
    if (k_new + k_old == sn) {
      plan.exact_sums = true;
      plan.old_activations = pending != nullptr ? pending->activations
                                                : std::vector<SharedDoubles>();
      plan.offset.assign(sn + 1, 0);
      for (int s = 0; s < sn; ++s)
        plan.offset[s + 1] = plan.offset[s] + widths[s];
    }
  }
  return plan;
}

void Session::ComputeCommit(const PreparedBatch::Rep& rep,
                            const CommitPlan& plan, double* xx, double* ax,
                            CommitProducts* out) {
  const int64_t n = rep.n;
  const size_t packed = static_cast<size_t>(PackedSize(n));
  const int k = static_cast<int>(rep.streams.size());
  const int k_new = plan.k_new, k_old = plan.k_old, k_all = k_new + k_old;
  const std::vector<int>& fresh = plan.fresh;
  const size_t measures = rep.kernels.size();
  out->token = CommitProducts::TokenOf(plan);
  out->new_kernels.assign(measures, {});
  out->cross.assign(measures, {});
  std::vector<double> old;  // the earlier layers' kernels, when in blocks
  for (size_t m = 0; m < measures; ++m) {
    if (plan.keep || (k_new != k && k_old > 0)) {
      std::vector<double>& v = out->new_kernels[m];
      v.resize(k_new * packed);
      for (int f = 0; f < k_new; ++f) {
        std::copy_n(rep.kernels[m].data() + fresh[f] * packed, packed,
                    v.data() + f * packed);
      }
    }
    if (k_new == k && k_old == 0) continue;
    // cross = V_new · [V_new; V_old]ᵀ: every pair of this batch that involves
    // a new layer. The new × new block comes from Prepare, the new × old
    // block is computed here.
    const std::vector<double>& pairs = rep.pairs[m];
    std::vector<double>& cross = out->cross[m];
    cross.assign(static_cast<size_t>(k_new) * k_all, 0.0);
    for (int i = 0; i < k_new; ++i) {
      for (int j = 0; j < k_new; ++j) {
        cross[i * k_all + j] = pairs[fresh[i] * k + fresh[j]];
      }
    }
    if (k_old == 0) continue;
    const double* v_new =
        k_new == k ? rep.kernels[m].data() : out->new_kernels[m].data();
    const std::vector<SharedDoubles>& blocks = plan.old_kernels[m];
    const double* v_old = blocks.front()->data();
    if (blocks.size() > 1) {
      old.clear();
      for (const SharedDoubles& b : blocks)
        old.insert(old.end(), b->begin(), b->end());
      v_old = old.data();
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k_new, k_old,
                static_cast<int>(packed), 1.0, v_new, static_cast<int>(packed),
                v_old, static_cast<int>(packed), 0.0, cross.data() + k_new,
                k_all);
  }
  if (!plan.exact_sums) return;
  // Every declared stream's activations, from this commit or the join buffer.
  const int sn = static_cast<int>(plan.offset.size()) - 1;
  std::vector<const std::vector<double>*> xs(sn, nullptr);
  for (int f = 0; f < k_new; ++f)
    xs[plan.fresh_index[f]] = &rep.activations[fresh[f]];
  for (int o = 0; o < k_old; ++o)
    xs[plan.old_streams[o]] = plan.old_activations[o].get();
  const int64_t dim = plan.offset[sn];
  out->x.resize(n * dim);
  out->a.resize(n * sn);
  for (int s = 0; s < sn; ++s) {
    const int64_t d = plan.offset[s + 1] - plan.offset[s];
    const double* src = xs[s]->data();
    for (int64_t r = 0; r < n; ++r) {
      std::copy_n(src + r * d, d, out->x.data() + r * dim + plan.offset[s]);
      out->a[r * sn + s] =
          cblas_ddot(static_cast<int>(d), src + r * d, 1, src + r * d, 1);
    }
  }
  // Into the session's sums (under the mutex) or into the batch's own.
  double beta = 1.0;
  if (xx == nullptr) {
    // Reused buffers: a fresh D × D one costs a page fault per 4 KiB.
    out->xx = BufferCache::Global().Take(dim * dim);
    out->ax = BufferCache::Global().Take(sn * dim);
    xx = out->xx.data();
    ax = out->ax.data();
    beta = 0.0;
  }
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(dim),
              static_cast<int>(n), 1.0, out->x.data(), static_cast<int>(dim),
              beta, xx, static_cast<int>(dim));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, sn,
              static_cast<int>(dim), static_cast<int>(n), 1.0, out->a.data(),
              sn, out->x.data(), static_cast<int>(dim), beta, ax,
              static_cast<int>(dim));
}

absl::StatusOr<IngestResult> Session::Commit(PreparedBatch batch) {
  PreparedBatch::Rep& rep = *batch.rep_;
  const int k = static_cast<int>(rep.streams.size());
  CommitProducts products;
  MemoryBudget::Reservation work;  // the products' buffers
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<CommitPlan> plan;
    {
      absl::MutexLock lock(&mu_);
      plan = PlanCommitLocked(rep);
      if (!plan.ok()) return plan.status();
      if (plan->fresh.empty()) return plan->result;
      if (products.token == CommitProducts::TokenOf(*plan)) {
        // The new layers' kernels become the join buffer's, priced with it.
        work.Set(work.bytes() - products.NewKernelBytes());
        return ApplyCommitLocked(rep, *plan, &products);
      }
      products = CommitProducts();
      work.Release();
      bool outside = attempt < kOutsideAttempts && plan->NeedsProducts();
      if (outside && limits_.memory != nullptr) {
        absl::StatusOr<MemoryBudget::Reservation> r = limits_.memory->Reserve(
            plan->ComputeBytes(k, rep.n, rep.kernels.size(),
                               /*local_exact=*/true),
            absl::StrFormat("batch '%s' (pair products and exact sums of its "
                            "commit)",
                            rep.batch_id));
        outside = r.ok();
        if (r.ok()) work = *std::move(r);
      }
      if (!outside) return ApplyCommitLocked(rep, *plan, nullptr);
    }
    ComputeCommit(rep, *plan, nullptr, nullptr, &products);
  }
}

absl::StatusOr<IngestResult> Session::ApplyCommitLocked(
    PreparedBatch::Rep& rep, const CommitPlan& plan, CommitProducts* products) {
  SessionState& st = *state_;
  const bool exact = HasExact(config_);
  const int64_t n = rep.n;
  const std::vector<int> measures = MinibatchMeasures(config_);
  const int k = static_cast<int>(rep.streams.size());
  const int k_new = plan.k_new, k_old = plan.k_old;
  const std::vector<int>& fresh = plan.fresh;
  std::vector<int> fresh_index = plan.fresh_index;
  IngestResult result = plan.result;
  bool keep = plan.keep;
  int64_t add_bytes = plan.add_bytes;

  // The buffers of products computed here are priced with the state's growth.
  CommitProducts local;
  int64_t transient = plan.resize_bytes;
  if (products == nullptr) {
    transient += plan.ComputeBytes(k, n, measures.size(),
                                   /*local_exact=*/false);
  }
  if (absl::Status s = held_.Grow(
          plan.sums_growth + plan.applied_growth + add_bytes +
              plan.exact_growth + transient,
          absl::StrFormat("batch '%s' (new state and commit buffers)",
                          rep.batch_id));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = held_join_.Grow(
          add_bytes, absl::StrFormat("batch '%s' (its kernels in the join "
                                     "buffer until its streams arrive)",
                                     rep.batch_id));
      !s.ok()) {
    if (!plan.complete) {
      held_.Set(HeldBytesLocked());
      return s;
    }
    keep = false;  // only its join window wanted it: let it go
    add_bytes = 0;
  }

  // Apply.
  for (size_t f = 0; f < fresh.size(); ++f) {
    if (fresh_index[f] < 0)
      fresh_index[f] = st.AddStream(rep.streams[fresh[f]], 0);
    if (exact) st.widths[fresh_index[f]] = rep.widths[fresh[f]];
  }
  st.sums_bytes += plan.sums_growth;
  st.applied_bytes += plan.applied_growth;
  ExactSums& ex = st.exact;
  if (plan.exact_sums && ex.dim == 0) {
    const int sn = static_cast<int>(plan.offset.size()) - 1;
    ex.offset = plan.offset;
    ex.dim = ex.offset[sn];
    ex.xx.assign(ex.dim * ex.dim, 0.0);
    ex.x.assign(ex.dim, 0.0);
    ex.aa.assign(sn * sn, 0.0);
    ex.ax.assign(sn * ex.dim, 0.0);
  }
  if (products == nullptr) {
    products = &local;
    ComputeCommit(rep, plan, ex.xx.data(), ex.ax.data(), products);
  }
  const PendingBatch* pending = nullptr;
  if (plan.pending_seq.has_value()) pending = &st.pending.at(rep.batch_id);
  std::vector<int> cols = fresh_index;
  cols.insert(cols.end(), plan.old_streams.begin(), plan.old_streams.end());
  for (size_t m = 0; m < measures.size(); ++m) {
    const std::vector<double>& pairs = rep.pairs[m];
    std::vector<double> self_cols(k_new + k_old);
    for (int f = 0; f < k_new; ++f) {
      self_cols[f] = pairs[fresh[f] * k + fresh[f]];
    }
    for (int o = 0; o < k_old; ++o) self_cols[k_new + o] = pending->self[m][o];
    const bool whole = products->cross[m].empty();
    PairSums& sums = st.buckets[m][plan.bucket];
    st.dirty.insert(SumsKey(m, plan.bucket));
    sums.Resize(plan.s_count);
    AddPairs(cols, k_new, whole ? pairs.data() : products->cross[m].data(),
             whole ? k : k_new + k_old, self_cols, sums);
  }

  if (plan.exact_sums) {
    const int sn = static_cast<int>(plan.offset.size()) - 1;
    const int64_t dim = ex.dim;
    if (!products->xx.empty()) {
      // The batch's own sums, computed without the mutex.
      for (int64_t i = 0; i < dim; ++i) {
        double* dst = ex.xx.data() + i * dim;
        const double* src = products->xx.data() + i * dim;
        for (int64_t j = i; j < dim; ++j) dst[j] += src[j];
      }
      for (size_t i = 0; i < ex.ax.size(); ++i) ex.ax[i] += products->ax[i];
      BufferCache::Global().Give(std::move(products->xx));
      BufferCache::Global().Give(std::move(products->ax));
    }
    const std::vector<double>& x = products->x;
    const std::vector<double>& a = products->a;
    for (int64_t r = 0; r < n; ++r) {
      cblas_daxpy(static_cast<int>(dim), 1.0, x.data() + r * dim, 1,
                  ex.x.data(), 1);
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, sn, sn,
                static_cast<int>(n), 1.0, a.data(), sn, a.data(), sn, 1.0,
                ex.aa.data(), sn);
    ex.rows += n;
    ex.batches += 1;
    spectra_->Outdate(ex.batches);  // their bytes go back to the budget now
    st.dirty.insert(kExactKey);
  }
  if (!keep) {
    st.DropPending(rep.batch_id);
  } else {
    PendingBatch* p;
    if (pending == nullptr) {
      p = &st.pending[rep.batch_id];
      p->n = n;
      p->step = plan.step;
      p->seq = st.next_seq++;
      p->kernels.resize(measures.size());
      p->self.resize(measures.size());
      st.pending_order.emplace(p->seq, rep.batch_id);
    } else {
      p = &st.pending[rep.batch_id];
    }
    for (size_t m = 0; m < measures.size(); ++m) {
      p->kernels[m].push_back(std::make_shared<const std::vector<double>>(
          std::move(products->new_kernels[m])));
    }
    for (int f = 0; f < k_new; ++f) {
      p->streams.push_back(fresh_index[f]);
      for (size_t m = 0; m < measures.size(); ++m)
        p->self[m].push_back(rep.pairs[m][fresh[f] * k + fresh[f]]);
      if (exact) {
        p->activations.push_back(std::make_shared<const std::vector<double>>(
            std::move(rep.activations[fresh[f]])));
      }
    }
    st.pending_bytes += add_bytes;
    // A complete batch kept only for its join window is not written to the
    // store (after a restart its late streams count as missed pairs), unless
    // an earlier, incomplete state of it was.
    if (!plan.complete || pending != nullptr) {
      p->stored = true;
      st.dirty.insert(PendingKey(rep.batch_id));
    } else {
      p->stored = false;
    }
    // Evict the oldest other batches while over budget; this one fits (checked
    // above).
    while ((st.pending_bytes > limits_.max_pending_bytes ||
            static_cast<int64_t>(st.pending.size()) >
                limits_.max_pending_batches) &&
           st.pending.size() > 1) {
      auto oldest = st.pending_order.begin();
      if (oldest->second == rep.batch_id) ++oldest;
      st.DropPending(std::string(oldest->second));
      ++st.batches_evicted;
      ++result.batches_evicted;
    }
  }

  // Remember what was applied, within the dedupe window.
  AppliedBatch& record = st.applied[rep.batch_id];
  if (record.streams.empty()) {
    record.n = n;
    record.step = plan.step;
    record.seq = st.next_seq++;
    st.applied_order.push_back(rep.batch_id);
  }
  record.streams.insert(record.streams.end(), fresh_index.begin(),
                        fresh_index.end());
  std::sort(record.streams.begin(), record.streams.end());
  while (static_cast<int64_t>(st.applied_order.size()) >
         limits_.dedupe_window) {
    const std::string oldest = std::move(st.applied_order.front());
    st.applied_order.pop_front();
    if (st.pending.contains(oldest)) {
      st.DropPending(oldest);
      ++st.batches_evicted;
      ++result.batches_evicted;
    }
    if (auto it = st.applied.find(oldest); it != st.applied.end()) {
      st.applied_bytes -=
          AppliedBytes(oldest.size(), it->second.streams.size());
      st.applied.erase(it);
    }
    st.dirty.insert(AppliedKey(oldest));
  }
  st.dirty.insert(AppliedKey(rep.batch_id));
  st.dirty.insert(kMetaKey);
  if (keep && config_.streams.empty()) ReleaseJoinWindow(config_, st);
  result.pairs_missed = plan.pairs_missed;
  result.first_pairs_missed = plan.pairs_missed > 0 && st.pairs_missed == 0;
  st.pairs_missed += plan.pairs_missed;
  ++st.batches_applied;
  result.version = ++st.version;
  result.layers_applied = k_new;
  held_.Set(HeldBytesLocked());
  held_join_.Set(st.pending_bytes);
  return result;
}

}  // namespace cka::core
