// Session::Query: the CKA matrix of a set of streams from the running sums
// (minibatch measures, over a range of step buckets) or from the exact
// feature-space sums; Session::QuerySeries: chosen pairs in each step bucket.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cka/core/measures/cka_standard_error.h"
#include "cka/core/session.h"
#include "moment_matrix.h"
#include "session_state.h"
#include "spectrum_cache.h"

namespace cka::core {

namespace {

// Returns the steps of `candidates` that are int64 values, as "a or b" (the
// suggestions of a step-range error, which can lie beyond the int64 range).
std::string StepsThatFit(std::initializer_list<__int128> candidates) {
  std::vector<std::string> fit;
  for (__int128 c : candidates) {
    if (c >= std::numeric_limits<int64_t>::min() &&
        c <= std::numeric_limits<int64_t>::max()) {
      fit.push_back(absl::StrCat(static_cast<int64_t>(c)));
    }
  }
  return absl::StrJoin(fit, " or ");
}

// Returns the index in config.measures of the measure named `name` (empty:
// the first); NotFound naming the session's measures.
absl::StatusOr<int> FindMeasure(const SessionConfig& config,
                                const std::string& name) {
  if (name.empty()) return 0;
  auto it = std::find_if(config.measures.begin(), config.measures.end(),
                         [&](const Measure& m) { return m.name == name; });
  if (it != config.measures.end()) {
    return static_cast<int>(it - config.measures.begin());
  }
  if (name.size() > kMaxNameBytes) return ValidateName("measure", name);
  std::vector<std::string> names;
  for (const Measure& m : config.measures) names.push_back(m.name);
  return absl::NotFoundError(absl::StrCat(
      "measure '", name,
      "' is not in this session (measures: ", absl::StrJoin(names, ", "), ")"));
}

// Returns the index into SessionState::buckets of the minibatch measure
// config.measures[measure_index].
int MinibatchIndex(const SessionConfig& config, int measure_index) {
  int mb = 0;
  for (int i = 0; i < measure_index; ++i)
    mb += IsExact(config.measures[i].estimator) ? 0 : 1;
  return mb;
}

// NotFound for the stream `name` of `field`, which `st` does not have.
absl::Status UnknownStream(const SessionState& st, std::string_view field,
                           const std::string& name) {
  return absl::NotFoundError(absl::StrFormat(
      "%s: stream '%s' is not in this session (it has %d streams%s%s)", field,
      name.substr(0, kMaxNameBytes), st.streams.size(),
      st.streams.empty() ? "" : ", e.g. ",
      st.streams.empty() ? "" : st.streams.front()));
}

absl::StatusOr<std::vector<int>> ResolveStreams(
    const SessionState& st, const std::vector<std::string>& names,
    const char* field) {
  std::vector<int> out;
  if (names.empty()) {
    out.resize(st.streams.size());
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  // A name given twice is refused rather than answered once: the matrix's
  // layout must be the one asked for, and a repeated name costs a row each.
  std::vector<int> position(st.streams.size(), -1);
  for (const std::string& name : names) {
    auto it = st.stream_index.find(name);
    if (it == st.stream_index.end()) return UnknownStream(st, field, name);
    if (position[it->second] >= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: stream '%s' is named twice (at %d and %d); name each stream "
          "once",
          field, name, position[it->second], out.size()));
    }
    position[it->second] = static_cast<int>(out.size());
    out.push_back(it->second);
  }
  return out;
}

// The squared Frobenius norm terms z_st of MATH.md for streams s and t
// (debiased if asked).
double ExactZ(const ExactSums& ex, int s, int t, bool debiased) {
  if (s > t) std::swap(s, t);
  const int64_t dim = ex.dim;
  const double rows = static_cast<double>(ex.rows);
  const int64_t s0 = ex.offset[s], s1 = ex.offset[s + 1];
  const int64_t t0 = ex.offset[t], t1 = ex.offset[t + 1];
  auto xx = [&](int64_t i, int64_t j) {
    return i <= j ? ex.xx[i * dim + j] : ex.xx[j * dim + i];
  };
  // mean_i = Σx_i / N; C_ij = Σ x_i x_j − N·mean_i·mean_j.
  double z = 0.0;
  double mu_g_mu = 0.0;  // μ_sᵀ · Σ x_s x_tᵀ · μ_t
  for (int64_t i = s0; i < s1; ++i) {
    const double mi = ex.x[i] / rows;
    for (int64_t j = t0; j < t1; ++j) {
      const double mj = ex.x[j] / rows;
      const double g = xx(i, j);
      const double c = g - rows * mi * mj;
      z += c * c;
      mu_g_mu += mi * g * mj;
    }
  }
  if (!debiased) return z;
  // Σ_i r_si r_ti and Σ r_si from the running sums (MATH.md, expanding r = ‖x −
  // μ‖²).
  double mu_s2 = 0.0, mu_t2 = 0.0, sum_as = 0.0, sum_at = 0.0;
  for (int64_t i = s0; i < s1; ++i) {
    mu_s2 += (ex.x[i] / rows) * (ex.x[i] / rows);
    sum_as += xx(i, i);
  }
  for (int64_t j = t0; j < t1; ++j) {
    mu_t2 += (ex.x[j] / rows) * (ex.x[j] / rows);
    sum_at += xx(j, j);
  }
  const int sn = static_cast<int>(ex.offset.size()) - 1;
  double mu_t_ax_s = 0.0;  // μ_tᵀ Σ a_s x_t
  for (int64_t j = t0; j < t1; ++j)
    mu_t_ax_s += (ex.x[j] / rows) * ex.ax[s * dim + j];
  double mu_s_ax_t = 0.0;  // μ_sᵀ Σ a_t x_s
  for (int64_t i = s0; i < s1; ++i)
    mu_s_ax_t += (ex.x[i] / rows) * ex.ax[t * dim + i];
  const double rr = ex.aa[s * sn + t] - 2.0 * mu_t_ax_s + mu_t2 * sum_as -
                    2.0 * mu_s_ax_t + 4.0 * mu_g_mu + mu_s2 * sum_at -
                    3.0 * rows * mu_s2 * mu_t2;
  const double r_s = sum_as - rows * mu_s2;
  const double r_t = sum_at - rows * mu_t2;
  return z - rows / (rows - 2.0) * rr +
         r_s * r_t / ((rows - 1.0) * (rows - 2.0));
}

// Adds the entries rows × cols of the S × S row-major `src` (S = `s`) to the
// nr × nc row-major `acc`; entries with a row or column >= s are skipped (those
// streams have no batches in this bucket). `cols_identity`: cols[j] == j.
template <typename T>
void AddBlock(const std::vector<T>& src, int s, const std::vector<int>& rows,
              const std::vector<int>& cols, bool cols_identity, T* acc) {
  const size_t nc = cols.size();
  for (size_t i = 0; i < rows.size(); ++i) {
    const int a = rows[i];
    if (a >= s) continue;
    const T* row = src.data() + static_cast<size_t>(a) * s;
    T* out = acc + i * nc;
    if (cols_identity) {
      const size_t end = std::min(nc, static_cast<size_t>(s));
      for (size_t j = 0; j < end; ++j) out[j] += row[j];
    } else {
      for (size_t j = 0; j < nc; ++j) {
        const int b = cols[j];
        if (b < s) out[j] += row[b];
      }
    }
  }
}

bool IsIdentity(const std::vector<int>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != static_cast<int>(i)) return false;
  }
  return true;
}

// Queries copy the exact sums of the streams they need under the session's
// mutex and compute outside it; above this size they compute under the mutex
// instead, so that a query never doubles the memory of a large exact session.
constexpr int64_t kMaxExactCopyBytes = int64_t{64} << 20;

// The bytes of an ExactSubset of streams of `widths`; saturating.
int64_t SubsetBytes(const std::vector<int64_t>& widths) {
  int64_t dim = 0;
  for (int64_t d : widths) dim = SaturatingAdd(dim, d);
  const int64_t sn = static_cast<int64_t>(widths.size());
  const int64_t values =
      SaturatingAdd(SaturatingAdd(SaturatingMul(dim, dim), dim),
                    SaturatingAdd(sn * sn, SaturatingMul(sn, dim)));
  return SaturatingMul(values, 8);
}

// The bytes of ExactSubset(ex, streams).
int64_t ExactSubsetBytes(const ExactSums& ex, const std::vector<int>& streams) {
  std::vector<int64_t> widths;
  for (int s : streams) widths.push_back(ex.offset[s + 1] - ex.offset[s]);
  return SubsetBytes(widths);
}

// Returns the sums of `ex` restricted to `streams` (ascending stream indices),
// which become streams 0, 1, ... of the result. ExactZ gives the same values on
// the result as on `ex` (same numbers, same order of operations). Only the
// blocks ExactZ reads are copied: the upper triangle of xx (j >= i) by blocks.
ExactSums ExactSubset(const ExactSums& ex, const std::vector<int>& streams) {
  ExactSums sub;
  const int sn = static_cast<int>(streams.size());
  const int ex_sn = static_cast<int>(ex.offset.size()) - 1;
  sub.offset.assign(sn + 1, 0);
  for (int u = 0; u < sn; ++u) {
    const int s = streams[u];
    sub.offset[u + 1] = sub.offset[u] + ex.offset[s + 1] - ex.offset[s];
  }
  sub.dim = sub.offset[sn];
  sub.rows = ex.rows;
  sub.batches = ex.batches;
  const int64_t dim = sub.dim;
  sub.xx.resize(static_cast<size_t>(dim * dim));
  sub.x.resize(static_cast<size_t>(dim));
  sub.aa.resize(static_cast<size_t>(sn) * sn);
  sub.ax.resize(static_cast<size_t>(sn) * dim);
  for (int u = 0; u < sn; ++u) {
    const int s = streams[u];
    const int64_t s0 = ex.offset[s], width = ex.offset[s + 1] - s0;
    std::copy_n(ex.x.data() + s0, width, sub.x.data() + sub.offset[u]);
    for (int v = 0; v < sn; ++v) {
      const int t = streams[v];
      const int64_t t0 = ex.offset[t], t_width = ex.offset[t + 1] - t0;
      sub.aa[u * sn + v] = ex.aa[s * ex_sn + t];
      std::copy_n(ex.ax.data() + s * ex.dim + t0, t_width,
                  sub.ax.data() + u * dim + sub.offset[v]);
      if (v < u) continue;
      for (int64_t i = 0; i < width; ++i) {
        std::copy_n(ex.xx.data() + (s0 + i) * ex.dim + t0, t_width,
                    sub.xx.data() + (sub.offset[u] + i) * dim + sub.offset[v]);
      }
    }
  }
  return sub;
}

// Writes the exact CKA of rows × cols (stream indices of `ex`) to the nr × nc
// row-major `values`, leaving NaN where a self term is <= 0.
void ExactMatrix(const ExactSums& ex, const std::vector<int>& rows,
                 const std::vector<int>& cols, bool debiased, double* values) {
  const size_t nc = cols.size();
  std::vector<double> self(ex.offset.size() - 1,
                           std::numeric_limits<double>::quiet_NaN());
  auto self_z = [&](int s) {
    if (std::isnan(self[s])) self[s] = ExactZ(ex, s, s, debiased);
    return self[s];
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < nc; ++j) {
      const int s = rows[i], t = cols[j];
      const double zs = self_z(s), zt = self_z(t);
      if (zs > 0 && zt > 0) {
        values[i * nc + j] =
            (s == t ? zs : ExactZ(ex, s, t, debiased)) / std::sqrt(zs * zt);
      }
    }
  }
}

}  // namespace

absl::StatusOr<SimilarityMatrix> Session::Query(
    const SimilarityQuery& query) const {
  if (query.block_threshold.has_value()) {
    // Checked first, so that a bad option costs no matrix.
    if (absl::Status s = ValidateBlockOptions(
            {*query.block_threshold, query.block_warn_share});
        !s.ok()) {
      return s;
    }
    SimilarityQuery matrix_only = query;
    matrix_only.block_threshold.reset();
    absl::StatusOr<SimilarityMatrix> out = Query(matrix_only);
    if (!out.ok()) return out;
    absl::StatusOr<std::vector<LayerBlock>> blocks = QueryBlocks(query);
    if (!blocks.ok()) return blocks.status();
    out->blocks = *std::move(blocks);
    return out;
  }
  absl::StatusOr<int> found = FindMeasure(config_, query.measure);
  if (!found.ok()) return found.status();
  const int measure_index = *found;
  const Measure& measure = config_.measures[measure_index];
  const bool ranged = query.step_min.has_value() || query.step_max.has_value();
  int64_t bucket_min = std::numeric_limits<int64_t>::min();
  int64_t bucket_max = std::numeric_limits<int64_t>::max();
  if (ranged) {
    if (IsMomentKind(measure.kind)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "measure '", measure.name, "' is ", MeasureKindName(measure.kind),
          ", whose moment sums are kept for all time only; step_min/step_max "
          "apply to minibatch measures only"));
    }
    if (IsExact(measure.estimator)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "measure '", measure.name, "' is ", EstimatorName(measure.estimator),
          ", which is kept over all steps; step_min/step_max apply to "
          "minibatch measures only"));
    }
    const int64_t w = config_.step_bucket;
    if (w == 0) {
      return absl::FailedPreconditionError(
          "this session has step_bucket 0 (one bucket for all time); create it "
          "with a "
          "step_bucket to query step ranges");
    }
    if (query.step_min.has_value()) {
      if (*query.step_min % w != 0) {
        const __int128 lo =
            static_cast<__int128>(FloorDiv(*query.step_min, w)) * w;
        return absl::InvalidArgumentError(
            absl::StrFormat("step_min %d does not start a step bucket of width "
                            "%d (try %s)",
                            *query.step_min, w, StepsThatFit({lo, lo + w})));
      }
      bucket_min = *query.step_min / w;
    }
    if (query.step_max.has_value()) {
      // step_max ends a bucket when it is the last step of its bucket: its
      // remainder is w − 1 (computed without step_max + 1, which can
      // overflow).
      int64_t remainder = *query.step_max % w;
      if (remainder < 0) remainder += w;
      if (remainder != w - 1) {
        const __int128 hi =
            static_cast<__int128>(FloorDiv(*query.step_max, w)) * w;
        return absl::InvalidArgumentError(absl::StrFormat(
            "step_max %d does not end a step bucket of width %d (try %s)",
            *query.step_max, w, StepsThatFit({hi - 1, hi + w - 1})));
      }
      bucket_max = FloorDiv(*query.step_max, w);
    }
    if (query.step_min.has_value() && query.step_max.has_value() &&
        *query.step_min > *query.step_max) {
      return absl::InvalidArgumentError(
          absl::StrFormat("step range is empty: step_min %d > step_max %d",
                          *query.step_min, *query.step_max));
    }
  }

  SimilarityMatrix out;
  out.measure = measure.name;
  // Stream indices are never reused and names never change, so the rows and
  // columns resolved here stay valid after the mutex is released. The sums are
  // copied (or added up over the buckets) under the mutex in a second,
  // short hold, and the matrix is computed outside it.
  std::vector<int> rows, cols;
  // A moment measure's distinct streams: their widths.
  std::vector<int64_t> moment_widths;
  {
    absl::MutexLock lock(&mu_);
    const SessionState& st = *state_;
    absl::StatusOr<std::vector<int>> r = ResolveStreams(st, query.rows, "rows");
    if (!r.ok()) return r.status();
    absl::StatusOr<std::vector<int>> c = ResolveStreams(st, query.cols, "cols");
    if (!c.ok()) return c.status();
    rows = *std::move(r);
    cols = *std::move(c);
    out.rows.reserve(rows.size());
    out.cols.reserve(cols.size());
    for (int i : rows) out.rows.push_back(st.streams[i]);
    for (int i : cols) out.cols.push_back(st.streams[i]);
    if (IsMomentKind(measure.kind)) {
      std::vector<int> distinct = rows;
      distinct.insert(distinct.end(), cols.begin(), cols.end());
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()),
                     distinct.end());
      for (int i : distinct) {
        moment_widths.push_back(st.exact.dim > 0 ? st.exact.offset[i + 1] -
                                                       st.exact.offset[i]
                                                 : st.widths[i]);
      }
    }
  }
  const size_t nr = rows.size(), nc = cols.size();
  // The largest copy of the exact sums this query makes; a larger subset is
  // read under the mutex. A moment measure costs O(p³) per pair, too long to
  // hold the mutex for (commits wait on it), so its copy is priced in full
  // and made whenever the budget has room for it.
  int64_t copy_limit = kMaxExactCopyBytes;
  if (IsMomentKind(measure.kind))
    copy_limit = std::max(copy_limit, SubsetBytes(moment_widths));
  MemoryBudget::Reservation work;
  if (limits_.memory != nullptr) {
    // values, batches, standard errors and the sums added up over the buckets
    // (num, two self, six for the standard error). Saturating: the widths of
    // a restored state may be absurd.
    int64_t bytes = SaturatingMul(static_cast<int64_t>(nr * nc), 12 * 8);
    if (IsMomentKind(measure.kind))
      bytes = SaturatingAdd(bytes, MomentMatrixBytes(moment_widths));
    const std::string what =
        absl::StrFormat("a %d × %d similarity matrix", nr, nc);
    absl::StatusOr<MemoryBudget::Reservation> r = limits_.memory->Reserve(
        IsExact(measure.estimator) ? SaturatingAdd(bytes, copy_limit) : bytes,
        what);
    if (!r.ok() && copy_limit > kMaxExactCopyBytes) {
      copy_limit = kMaxExactCopyBytes;  // no room: read under the mutex
      r = limits_.memory->Reserve(SaturatingAdd(bytes, copy_limit), what);
    }
    if (!r.ok()) return r.status();
    work = *std::move(r);
  }
  out.values.assign(nr * nc, std::numeric_limits<double>::quiet_NaN());
  out.batches.assign(nr * nc, 0);
  out.standard_errors.assign(nr * nc, std::numeric_limits<double>::quiet_NaN());

  if (IsExact(measure.estimator)) {
    const bool debiased = measure.estimator == Estimator::kExactDebiased;
    std::vector<int> needed = rows;
    needed.insert(needed.end(), cols.begin(), cols.end());
    std::sort(needed.begin(), needed.end());
    needed.erase(std::unique(needed.begin(), needed.end()), needed.end());
    // `rows` and `cols` index `ex`'s streams; `kept` maps them to the
    // session's for its spectrum cache.
    auto exact_matrix = [&](const ExactSums& ex,
                            const SpectrumCacheView& kept) -> absl::Status {
      if (!IsMomentKind(measure.kind)) {
        ExactMatrix(ex, rows, cols, debiased, out.values.data());
        return absl::OkStatus();
      }
      absl::StatusOr<std::string> note =
          MomentMatrix(ex, rows, cols, measure.kind, out.rows, out.cols,
                       out.values.data(), kept, query.cancelled);
      if (!note.ok()) return note.status();
      out.note = *std::move(note);
      return absl::OkStatus();
    };
    // The state of the sums read (see spectrum_cache.h).
    SpectrumCacheView kept{spectra_.get(), 0, {}};
    ExactSums subset;
    {
      absl::MutexLock lock(&mu_);
      const ExactSums& ex = state_->exact;
      std::fill(out.batches.begin(), out.batches.end(), ex.batches);
      if (ex.dim == 0 || ex.rows < (debiased ? 4 : 2)) {
        if (IsMomentKind(measure.kind)) {
          out.note =
              "no value yet: the declared streams have fewer than 2 "
              "rows of completed batches";
        }
        return out;
      }
      kept.state = ex.batches;
      if (ExactSubsetBytes(ex, needed) > copy_limit) {
        if (absl::Status s = exact_matrix(ex, kept); !s.ok()) return s;
        return out;
      }
      subset = ExactSubset(ex, needed);
    }
    kept.streams = needed;
    // Stream indices of the subset: positions in `needed`.
    auto remap = [&](std::vector<int>& v) {
      for (int& s : v) {
        s = static_cast<int>(std::lower_bound(needed.begin(), needed.end(), s) -
                             needed.begin());
      }
    };
    remap(rows);
    remap(cols);
    if (absl::Status s = exact_matrix(subset, kept); !s.ok()) return s;
    return out;
  }

  // Minibatch: sum the buckets in range, then divide. For a square query
  // (rows == cols) the column self terms are the transpose of the row ones.
  const int mb = MinibatchIndex(config_, measure_index);
  const bool square = rows == cols;
  const bool rows_identity = IsIdentity(rows);
  const bool cols_identity = square ? rows_identity : IsIdentity(cols);
  std::vector<double> num(nr * nc, 0.0), self_r(nr * nc, 0.0);
  std::vector<double> self_c_t(square ? 0 : nc * nr, 0.0);  // nc × nr
  // The standard error's: Σa², Σu², Σa·u, Σu·v, and the column terms Σv², Σa·v
  // (nc × nr) when not square.
  std::vector<double> num_sq(nr * nc, 0.0), self_sq_r(nr * nc, 0.0),
      num_self_r(nr * nc, 0.0), self_prod(nr * nc, 0.0);
  std::vector<double> self_sq_c_t(square ? 0 : nc * nr, 0.0),
      num_self_c_t(square ? 0 : nc * nr, 0.0);
  {
    absl::MutexLock lock(&mu_);
    const std::map<int64_t, PairSums>& buckets = state_->buckets[mb];
    for (auto it = buckets.lower_bound(bucket_min);
         it != buckets.end() && it->first <= bucket_max; ++it) {
      const PairSums& sums = it->second;
      using Sum = std::pair<const std::vector<double>*, std::vector<double>*>;
      for (const Sum& sum :
           {Sum{&sums.num, &num}, Sum{&sums.self, &self_r},
            Sum{&sums.num_sq, &num_sq}, Sum{&sums.self_sq, &self_sq_r},
            Sum{&sums.num_self, &num_self_r},
            Sum{&sums.self_prod, &self_prod}}) {
        AddBlock(*sum.first, sums.size, rows, cols, cols_identity,
                 sum.second->data());
      }
      AddBlock(sums.count, sums.size, rows, cols, cols_identity,
               out.batches.data());
      if (square) continue;
      for (const Sum& sum :
           {Sum{&sums.self, &self_c_t}, Sum{&sums.self_sq, &self_sq_c_t},
            Sum{&sums.num_self, &num_self_c_t}}) {
        AddBlock(*sum.first, sums.size, cols, rows, rows_identity,
                 sum.second->data());
      }
    }
  }
  const std::vector<double>& self_t = square ? self_r : self_c_t;
  const std::vector<double>& self_sq_t = square ? self_sq_r : self_sq_c_t;
  const std::vector<double>& num_self_t = square ? num_self_r : num_self_c_t;
  for (size_t i = 0; i < nr; ++i) {
    for (size_t j = 0; j < nc; ++j) {
      const size_t e = i * nc + j, t = j * nr + i;
      const double self_c = self_t[t];
      if (out.batches[e] > 0 && self_r[e] > 0 && self_c > 0) {
        out.values[e] = num[e] / std::sqrt(self_r[e] * self_c);
        out.standard_errors[e] = CkaStandardError(
            {out.batches[e], num[e], self_r[e], self_c, num_sq[e], self_sq_r[e],
             self_sq_t[t], num_self_r[e], num_self_t[t], self_prod[e]});
      }
    }
  }
  return out;
}

absl::StatusOr<SimilaritySeries> Session::QuerySeries(
    const SeriesQuery& query) const {
  absl::StatusOr<int> found = FindMeasure(config_, query.measure);
  if (!found.ok()) return found.status();
  const Measure& measure = config_.measures[*found];
  if (IsMomentKind(measure.kind)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "measure '", measure.name, "' is ", MeasureKindName(measure.kind),
        ", whose moment sums are kept for all time only, not per step "
        "bucket; a series needs a minibatch measure"));
  }
  if (IsExact(measure.estimator)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "measure '", measure.name, "' is ", EstimatorName(measure.estimator),
        ", which is kept over all steps, not per step bucket; a series needs "
        "a minibatch measure"));
  }
  const size_t np = query.pairs.size();
  if (np == 0 || np > kMaxSeriesPairs) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pairs: %d pairs given; name 1 to %d (row, col) pairs",
                        np, kMaxSeriesPairs));
  }
  SimilaritySeries out;
  out.measure = measure.name;
  out.pairs = query.pairs;
  out.step_bucket = config_.step_bucket;
  const int mb = MinibatchIndex(config_, *found);

  // Per bucket and pair (bucket-major): the sums Query would add up for a
  // range of that one bucket, copied under the mutex.
  std::vector<int64_t> bucket_ids;
  std::vector<CkaBatchSums> sums;
  MemoryBudget::Reservation work;
  {
    absl::MutexLock lock(&mu_);
    const SessionState& st = *state_;
    auto resolve = [&](const std::string& name, size_t p,
                       const char* field) -> absl::StatusOr<int> {
      auto it = st.stream_index.find(name);
      if (it != st.stream_index.end()) return it->second;
      return UnknownStream(st, absl::StrFormat("pairs[%d].%s", p, field), name);
    };
    std::vector<int> rows(np), cols(np);
    for (size_t p = 0; p < np; ++p) {
      absl::StatusOr<int> r = resolve(query.pairs[p].row, p, "row");
      if (!r.ok()) return r.status();
      absl::StatusOr<int> c = resolve(query.pairs[p].col, p, "col");
      if (!c.ok()) return c.status();
      rows[p] = *r;
      cols[p] = *c;
    }
    const std::map<int64_t, PairSums>& buckets = st.buckets[mb];
    const size_t nb = buckets.size();
    if (limits_.memory != nullptr) {
      absl::StatusOr<MemoryBudget::Reservation> r = limits_.memory->Reserve(
          static_cast<int64_t>(nb * (np * (sizeof(CkaBatchSums) + 24) + 64)),
          absl::StrFormat("a series of %d pairs over %d step buckets", np, nb));
      if (!r.ok()) return r.status();
      work = *std::move(r);
    }
    bucket_ids.reserve(nb);
    sums.resize(nb * np);
    size_t b = 0;
    for (const auto& [id, bucket] : buckets) {
      bucket_ids.push_back(id);
      const int s = bucket.size;
      for (size_t p = 0; p < np; ++p) {
        const int r = rows[p], c = cols[p];
        if (r >= s || c >= s) continue;
        CkaBatchSums& e = sums[b * np + p];
        // Added to 0.0 as Query adds them up, so that the values are the same
        // bit for bit.
        const size_t rc = static_cast<size_t>(r) * s + c;
        const size_t cr = static_cast<size_t>(c) * s + r;
        e.sum_a += bucket.num[rc];
        e.sum_u += bucket.self[rc];
        e.sum_v += bucket.self[cr];
        e.batches = bucket.count[rc];
        e.sum_aa += bucket.num_sq[rc];
        e.sum_uu += bucket.self_sq[rc];
        e.sum_vv += bucket.self_sq[cr];
        e.sum_au += bucket.num_self[rc];
        e.sum_av += bucket.num_self[cr];
        e.sum_uv += bucket.self_prod[rc];
      }
      ++b;
    }
  }
  const int64_t w = config_.step_bucket;
  out.buckets.resize(bucket_ids.size());
  for (size_t b = 0; b < bucket_ids.size(); ++b) {
    SeriesBucket& bucket = out.buckets[b];
    if (w == 0) {
      bucket.step_first = std::numeric_limits<int64_t>::min();
      bucket.step_last = std::numeric_limits<int64_t>::max();
    } else {
      // Clamped: a bucket at either end of the step range can reach past it.
      const __int128 first = static_cast<__int128>(bucket_ids[b]) * w;
      bucket.step_first = static_cast<int64_t>(
          std::max<__int128>(first, std::numeric_limits<int64_t>::min()));
      bucket.step_last = static_cast<int64_t>(std::min<__int128>(
          first + w - 1, std::numeric_limits<int64_t>::max()));
    }
    bucket.values.assign(np, std::numeric_limits<double>::quiet_NaN());
    bucket.batches.assign(np, 0);
    bucket.standard_errors.assign(np, std::numeric_limits<double>::quiet_NaN());
    for (size_t p = 0; p < np; ++p) {
      const CkaBatchSums& e = sums[b * np + p];
      bucket.batches[p] = e.batches;
      if (e.batches > 0 && e.sum_u > 0 && e.sum_v > 0) {
        bucket.values[p] = e.sum_a / std::sqrt(e.sum_u * e.sum_v);
        bucket.standard_errors[p] = CkaStandardError(e);
      }
    }
  }
  return out;
}

}  // namespace cka::core
