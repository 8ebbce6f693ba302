// A session's state as keyed records (Session::TakeChanges, AllRecords,
// FromRecords) and as one byte string (Serialize, Restore).
//
// Records (all integers and doubles little-endian; vectors are a u64 count then
// the elements):
//   config             measures, declared streams and widths, step bucket
//   meta               stream names and widths, counters, sequence numbers
//   sums/<m>/<bucket>  PairSums of minibatch measure m in one step bucket; the
//                      standard error's four sums follow the counts (records
//                      written before them end after the counts)
//   exact              ExactSums
//   applied/<id>       AppliedBatch (the duplicate check of batch_id <id>)
//   pending/<id>       PendingBatch (a batch waiting in the join buffer)
// Serialize: "CKAS", format version (u64), record count, (key, value) pairs,
// then the FNV-1a-64 hash of everything before it.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "byte_codec.h"
#include "cka/core/hsic.h"
#include "cka/core/session.h"
#include "session_state.h"

namespace cka::core {

std::string SumsKey(size_t measure, int64_t bucket) {
  return absl::StrCat("sums/", measure, "/", bucket);
}
std::string AppliedKey(const std::string& batch_id) {
  return absl::StrCat("applied/", batch_id);
}
std::string PendingKey(const std::string& batch_id) {
  return absl::StrCat("pending/", batch_id);
}

namespace {

constexpr char kMagic[4] = {'C', 'K', 'A', 'S'};
constexpr uint64_t kFormatVersion = 2;

absl::Status Damaged(const std::string& what) {
  return absl::DataLossError(
      absl::StrCat("stored session state is damaged: ", what));
}

bool SortedUniqueBelow(const std::vector<int>& v, int limit) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0 || v[i] >= limit || (i > 0 && v[i] <= v[i - 1])) return false;
  }
  return true;
}

// --- config

std::string EncodeConfig(const SessionConfig& c) {
  ByteWriter w;
  w.U64(c.measures.size());
  for (const Measure& m : c.measures) {
    w.String(m.name);
    w.U8(static_cast<uint8_t>(m.kernel));
    w.F64(m.rbf_threshold);
    w.U8(static_cast<uint8_t>(m.estimator));
  }
  w.U64(c.streams.size());
  for (const std::string& s : c.streams) w.String(s);
  w.I64s(c.stream_widths);
  w.I64(c.step_bucket);
  // Added later: records written before end at the step bucket.
  w.U64(c.expected_sources.size());
  for (const std::string& s : c.expected_sources) w.String(s);
  w.I64(c.join_window);
  // Added later still: records written before end at the join window, and
  // their measures are all CKA.
  w.U64(c.measures.size());
  for (const Measure& m : c.measures) w.U8(static_cast<uint8_t>(m.kind));
  return std::move(w.bytes());
}

absl::StatusOr<SessionConfig> DecodeConfig(std::string_view bytes) {
  ByteReader r(bytes);
  SessionConfig c;
  int64_t count;
  if (!r.Count(&count, 8 + 1 + 8 + 1)) return Damaged("config: measures");
  c.measures.resize(count);
  for (Measure& m : c.measures) {
    uint8_t kernel, estimator;
    if (!r.String(&m.name) || !r.U8(&kernel) || !r.F64(&m.rbf_threshold) ||
        !r.U8(&estimator)) {
      return Damaged("config: truncated measure");
    }
    m.kernel = static_cast<Kernel>(kernel);
    m.estimator = static_cast<Estimator>(estimator);
  }
  if (!r.Count(&count, 8)) return Damaged("config: streams");
  c.streams.resize(count);
  for (std::string& s : c.streams) {
    if (!r.String(&s)) return Damaged("config: truncated stream");
  }
  if (!r.I64s(&c.stream_widths) || !r.I64(&c.step_bucket)) {
    return Damaged("config: widths or step bucket");
  }
  if (r.done()) {
    c.join_window = c.streams.empty() ? kDefaultJoinWindow : 0;
  } else {
    if (!r.Count(&count, 8)) return Damaged("config: expected sources");
    c.expected_sources.resize(count);
    for (std::string& s : c.expected_sources) {
      if (!r.String(&s)) return Damaged("config: truncated expected source");
    }
    if (!r.I64(&c.join_window)) return Damaged("config: join window");
    if (!r.done()) {
      if (!r.Count(&count, 1) ||
          static_cast<size_t>(count) != c.measures.size()) {
        return Damaged("config: measure kinds");
      }
      for (Measure& m : c.measures) {
        uint8_t kind;
        if (!r.U8(&kind)) return Damaged("config: truncated measure kinds");
        m.kind = static_cast<MeasureKind>(kind);
      }
      if (!r.done()) return Damaged("config: bytes after the measure kinds");
    }
  }
  if (absl::Status s = ValidateConfig(c); !s.ok()) {
    return Damaged(absl::StrCat("config: ", s.message()));
  }
  return c;
}

// --- meta: the streams (beyond the declared ones) and the counters

std::string EncodeMeta(const SessionState& st) {
  ByteWriter w;
  w.U64(st.streams.size());
  for (const std::string& s : st.streams) w.String(s);
  w.I64s(st.widths);
  w.I64(st.batches_applied);
  w.I64(st.batches_evicted);
  w.U64(st.next_seq);
  w.U64(st.version);
  w.I64(st.pairs_missed);  // added later: older records end before it
  return std::move(w.bytes());
}

absl::Status DecodeMeta(std::string_view bytes, const SessionConfig& config,
                        SessionState& st) {
  ByteReader r(bytes);
  int64_t count;
  if (!r.Count(&count, 8)) return Damaged("meta: streams");
  std::vector<std::string> names(count);
  for (std::string& name : names) {
    if (!r.String(&name)) return Damaged("meta: truncated stream name");
  }
  if (count < static_cast<int64_t>(config.streams.size()) ||
      !std::equal(config.streams.begin(), config.streams.end(),
                  names.begin())) {
    return Damaged("meta: streams do not start with the declared streams");
  }
  for (size_t i = config.streams.size(); i < names.size(); ++i) {
    if (!ValidateName("stream", names[i]).ok() ||
        st.stream_index.contains(names[i])) {
      return Damaged(absl::StrCat("meta: bad or repeated stream at index ", i));
    }
    st.AddStream(names[i], 0);
  }
  if (!r.I64s(&st.widths) || st.widths.size() != st.streams.size()) {
    return Damaged("meta: stream widths");
  }
  for (int64_t w : st.widths) {
    if (w < 0 || w > (int64_t{1} << 40)) return Damaged("meta: stream width");
  }
  if (!r.I64(&st.batches_applied) || !r.I64(&st.batches_evicted) ||
      !r.U64(&st.next_seq) || !r.U64(&st.version) ||
      (!r.done() && (!r.I64(&st.pairs_missed) || st.pairs_missed < 0)) ||
      !r.done() || st.batches_applied < 0 || st.batches_evicted < 0 ||
      st.next_seq > kMaxCounter || st.version > kMaxCounter ||
      static_cast<uint64_t>(st.batches_applied) > kMaxCounter ||
      static_cast<uint64_t>(st.batches_evicted) > kMaxCounter) {
    return Damaged("meta: counters");
  }
  return absl::OkStatus();
}

// --- sums of one measure in one bucket

// The standard error's sums of PairSums (const or not), in record order.
template <typename Sums>
auto StandardErrorSums(Sums& sums) {
  return std::array{&sums.num_sq, &sums.self_sq, &sums.num_self,
                    &sums.self_prod};
}

std::string EncodeSums(const PairSums& sums) {
  ByteWriter w;
  w.Reserve(8 * sizeof(uint64_t) + sums.num.size() * 6 * sizeof(double) +
            sums.count.size() * sizeof(int64_t));
  w.I64(sums.size);
  w.Doubles(sums.num);
  w.Doubles(sums.self);
  w.I64s(sums.count);
  for (const std::vector<double>* v : StandardErrorSums(sums)) w.Doubles(*v);
  return std::move(w.bytes());
}

absl::StatusOr<PairSums> DecodeSums(std::string_view bytes, int streams) {
  ByteReader r(bytes);
  int64_t size;
  PairSums sums;
  if (!r.I64(&size) || !r.Doubles(&sums.num) || !r.Doubles(&sums.self) ||
      !r.I64s(&sums.count)) {
    return Damaged("truncated sums");
  }
  // A record written before the standard error's sums ends here: their
  // entries with batches become NaN (see PairSums).
  const bool has_se_sums = !r.done();
  for (std::vector<double>* v : StandardErrorSums(sums)) {
    if (has_se_sums && !r.Doubles(v)) return Damaged("truncated sums");
  }
  if (!r.done()) return Damaged("sums: bytes after the last sum");
  if (size < 0 || size > streams) return Damaged("sums: stream count");
  const size_t cells = static_cast<size_t>(size) * size;
  if (sums.num.size() != cells || sums.self.size() != cells ||
      sums.count.size() != cells) {
    return Damaged("sums: inconsistent sizes");
  }
  for (std::vector<double>* v : StandardErrorSums(sums)) {
    if (!has_se_sums) {
      v->assign(cells, 0.0);
      for (size_t e = 0; e < cells; ++e) {
        if (sums.count[e] != 0)
          (*v)[e] = std::numeric_limits<double>::quiet_NaN();
      }
    } else if (v->size() != cells) {
      return Damaged("sums: inconsistent sizes");
    }
  }
  sums.size = static_cast<int>(size);
  return sums;
}

// --- exact sums

std::string EncodeExact(const ExactSums& ex) {
  ByteWriter w;
  w.Reserve(8 * sizeof(uint64_t) + ex.offset.size() * sizeof(int64_t) +
            (ex.xx.size() + ex.x.size() + ex.aa.size() + ex.ax.size()) *
                sizeof(double));
  w.I64(ex.dim);
  w.I64s(ex.offset);
  w.Doubles(ex.xx);
  w.Doubles(ex.x);
  w.Doubles(ex.aa);
  w.Doubles(ex.ax);
  w.I64(ex.rows);
  w.I64(ex.batches);
  return std::move(w.bytes());
}

absl::Status DecodeExact(std::string_view bytes, const SessionConfig& config,
                         const SessionState& st, ExactSums& ex) {
  ByteReader r(bytes);
  if (!r.I64(&ex.dim) || !r.I64s(&ex.offset) || !r.Doubles(&ex.xx) ||
      !r.Doubles(&ex.x) || !r.Doubles(&ex.aa) || !r.Doubles(&ex.ax) ||
      !r.I64(&ex.rows) || !r.I64(&ex.batches) || !r.done()) {
    return Damaged("truncated exact sums");
  }
  const size_t sn = config.streams.size();
  bool ok = ex.dim > 0 && ex.offset.size() == sn + 1 && ex.offset[0] == 0;
  for (size_t s = 0; ok && s < sn; ++s) {
    ok = st.widths[s] > 0 && ex.offset[s + 1] - ex.offset[s] == st.widths[s];
  }
  const size_t dim = static_cast<size_t>(ex.dim);
  ok = ok && ex.offset[sn] == ex.dim && ex.xx.size() % dim == 0 &&
       ex.xx.size() / dim == dim && ex.x.size() == dim &&
       ex.aa.size() == sn * sn && ex.ax.size() == sn * dim && ex.rows >= 0 &&
       ex.batches >= 0;
  return ok ? absl::OkStatus() : Damaged("exact sums: inconsistent sizes");
}

// --- applied and pending batches

std::string EncodeApplied(const AppliedBatch& a) {
  ByteWriter w;
  w.I64(a.n);
  w.I64(a.step);
  w.U64(a.seq);
  w.Ints(a.streams);
  return std::move(w.bytes());
}

absl::StatusOr<AppliedBatch> DecodeApplied(std::string_view bytes,
                                           const SessionState& st) {
  ByteReader r(bytes);
  AppliedBatch a;
  if (!r.I64(&a.n) || !r.I64(&a.step) || !r.U64(&a.seq) ||
      !r.Ints(&a.streams) || !r.done()) {
    return Damaged("truncated applied batch");
  }
  if (a.n < 1 || a.streams.empty() ||
      !SortedUniqueBelow(a.streams, static_cast<int>(st.streams.size())) ||
      a.seq >= st.next_seq) {
    return Damaged("applied batch: inconsistent");
  }
  return a;
}

// Pending kernels are k packed n × n kernels (hsic.h). Records written before
// the packed layout hold k full n × n kernels: those are packed here. False
// when the size fits neither.
bool PackKernels(int64_t n, size_t k, std::vector<double>* kernels) {
  const size_t packed = static_cast<size_t>(PackedSize(n));
  const size_t full = static_cast<size_t>(n) * n;
  if (kernels->size() == k * packed) return true;
  if (kernels->size() != k * full) return false;
  std::vector<double> out(k * packed);
  double* dst = out.data();
  for (size_t l = 0; l < k; ++l) {
    const double* src = kernels->data() + l * full;
    for (int64_t i = 0; i < n; ++i) {
      *dst++ = src[i * n + i];
      for (int64_t j = i + 1; j < n; ++j) {
        *dst++ = src[i * n + j] * std::sqrt(2.0);
      }
    }
  }
  kernels->swap(out);
  return true;
}

std::string EncodePending(const PendingBatch& p) {
  ByteWriter w;
  size_t bytes = (7 + p.kernels.size() + p.self.size() + p.activations.size()) *
                     sizeof(uint64_t) +
                 p.streams.size() * sizeof(int64_t);
  bytes += static_cast<size_t>(p.bytes());
  w.Reserve(bytes);
  w.I64(p.n);
  w.I64(p.step);
  w.U64(p.seq);
  w.Ints(p.streams);
  w.U64(p.kernels.size());
  for (const auto& blocks : p.kernels) w.ConcatDoubles(blocks);
  w.U64(p.self.size());
  for (const auto& s : p.self) w.Doubles(s);
  w.U64(p.activations.size());
  for (const auto& a : p.activations) w.Doubles(*a);
  return std::move(w.bytes());
}

absl::StatusOr<PendingBatch> DecodePending(std::string_view bytes,
                                           const AppliedBatch& applied,
                                           bool exact, const SessionState& st) {
  ByteReader r(bytes);
  PendingBatch p;
  int64_t count;
  if (!r.I64(&p.n) || !r.I64(&p.step) || !r.U64(&p.seq) ||
      !r.Ints(&p.streams)) {
    return Damaged("truncated pending batch");
  }
  std::vector<int> sorted = p.streams;
  std::sort(sorted.begin(), sorted.end());
  if (p.n != applied.n || p.streams.empty() ||
      !SortedUniqueBelow(sorted, static_cast<int>(st.streams.size())) ||
      !std::includes(applied.streams.begin(), applied.streams.end(),
                     sorted.begin(), sorted.end()) ||
      p.seq >= st.next_seq) {
    return Damaged("pending batch: inconsistent with its applied record");
  }
  const size_t k = p.streams.size();
  const size_t measures = st.buckets.size();
  if (!r.Count(&count, 8) || static_cast<size_t>(count) != measures) {
    return Damaged("pending batch: kernel count");
  }
  p.kernels.resize(count);
  for (auto& blocks : p.kernels) {
    std::vector<double> kernel;
    if (!r.Doubles(&kernel) || !PackKernels(p.n, k, &kernel)) {
      return Damaged("pending batch: kernels");
    }
    blocks.push_back(
        std::make_shared<const std::vector<double>>(std::move(kernel)));
  }
  if (!r.Count(&count, 8) || static_cast<size_t>(count) != measures) {
    return Damaged("pending batch: self term count");
  }
  p.self.resize(count);
  for (auto& self : p.self) {
    if (!r.Doubles(&self) || self.size() != k) {
      return Damaged("pending batch: self terms");
    }
  }
  if (!r.Count(&count, 8) || static_cast<size_t>(count) != (exact ? k : 0)) {
    return Damaged("pending batch: activation count");
  }
  for (int64_t a = 0; a < count; ++a) {
    const int64_t w = st.widths[p.streams[a]];
    std::vector<double> x;
    if (!r.Doubles(&x) || w <= 0 || x.size() % static_cast<size_t>(w) != 0 ||
        x.size() / static_cast<size_t>(w) != static_cast<size_t>(p.n)) {
      return Damaged("pending batch: activations");
    }
    p.activations.push_back(
        std::make_shared<const std::vector<double>>(std::move(x)));
  }
  if (!r.done()) return Damaged("pending batch: trailing bytes");
  return p;
}

bool HasExactMeasure(const SessionConfig& config) {
  return std::any_of(config.measures.begin(), config.measures.end(),
                     [](const Measure& m) { return IsExact(m.estimator); });
}

// The current value of `key`, or nullopt when it does not exist.
std::optional<std::string> EncodeRecord(const SessionConfig& config,
                                        const SessionState& st,
                                        const std::string& key) {
  if (key == kConfigKey) return EncodeConfig(config);
  if (key == kMetaKey) return EncodeMeta(st);
  if (key == kExactKey) {
    if (st.exact.dim == 0) return std::nullopt;
    return EncodeExact(st.exact);
  }
  const size_t slash = key.find('/');
  const std::string_view kind = std::string_view(key).substr(0, slash);
  const std::string rest = key.substr(slash + 1);
  if (kind == "applied") {
    auto it = st.applied.find(rest);
    if (it == st.applied.end()) return std::nullopt;
    return EncodeApplied(it->second);
  }
  if (kind == "pending") {
    auto it = st.pending.find(rest);
    if (it == st.pending.end() || !it->second.stored) return std::nullopt;
    return EncodePending(it->second);
  }
  // sums/<m>/<bucket>
  const size_t slash2 = rest.find('/');
  size_t m;
  int64_t bucket;
  if (!absl::SimpleAtoi(rest.substr(0, slash2), &m) ||
      !absl::SimpleAtoi(rest.substr(slash2 + 1), &bucket) ||
      m >= st.buckets.size()) {
    return std::nullopt;
  }
  auto it = st.buckets[m].find(bucket);
  if (it == st.buckets[m].end()) return std::nullopt;
  return EncodeSums(it->second);
}

}  // namespace

StateChanges Session::TakeChanges() {
  absl::MutexLock lock(&mu_);
  SessionState& st = *state_;
  StateChanges changes;
  changes.version = st.version;
  changes.records.reserve(st.dirty.size());
  for (const std::string& key : st.dirty) {
    StateRecord record;
    record.key = key;
    if (std::optional<std::string> value = EncodeRecord(config_, st, key)) {
      record.value = *std::move(value);
    } else {
      record.deleted = true;
    }
    changes.records.push_back(std::move(record));
  }
  st.dirty.clear();
  return changes;
}

StateChanges Session::AllRecords() const {
  absl::MutexLock lock(&mu_);
  const SessionState& st = *state_;
  StateChanges all;
  all.version = st.version;
  all.records.push_back({kConfigKey, EncodeConfig(config_), false});
  all.records.push_back({kMetaKey, EncodeMeta(st), false});
  for (size_t m = 0; m < st.buckets.size(); ++m) {
    for (const auto& [bucket, sums] : st.buckets[m]) {
      all.records.push_back({SumsKey(m, bucket), EncodeSums(sums), false});
    }
  }
  if (st.exact.dim != 0) {
    all.records.push_back({kExactKey, EncodeExact(st.exact), false});
  }
  for (const std::string& id : st.applied_order) {
    all.records.push_back(
        {AppliedKey(id), EncodeApplied(st.applied.at(id)), false});
  }
  for (const auto& [seq, id] : st.pending_order) {
    const PendingBatch& p = st.pending.at(id);
    if (p.stored)
      all.records.push_back({PendingKey(id), EncodePending(p), false});
  }
  return all;
}

absl::StatusOr<std::unique_ptr<Session>> Session::FromRecords(
    const std::map<std::string, std::string>& records, SessionLimits limits) {
  auto config_it = records.find(kConfigKey);
  auto meta_it = records.find(kMetaKey);
  if (config_it == records.end() || meta_it == records.end()) {
    return Damaged("the config or meta record is missing");
  }
  absl::StatusOr<SessionConfig> config = DecodeConfig(config_it->second);
  if (!config.ok()) return config.status();
  std::unique_ptr<Session> session(new Session(*config, limits));
  SessionState& st = *session->state_;
  st.dirty.clear();
  if (absl::Status s = DecodeMeta(meta_it->second, *config, st); !s.ok()) {
    return s;
  }
  const bool exact = HasExactMeasure(*config);
  std::vector<std::pair<uint64_t, std::string>> applied_order;
  std::vector<std::pair<std::string, const std::string*>> pending;
  for (const auto& [key, value] : records) {
    if (key == kConfigKey || key == kMetaKey) continue;
    if (key == kExactKey) {
      if (!exact)
        return Damaged("exact sums in a session without exact measures");
      if (absl::Status s = DecodeExact(value, *config, st, st.exact); !s.ok()) {
        return s;
      }
      continue;
    }
    const size_t slash = key.find('/');
    const std::string_view kind = std::string_view(key).substr(0, slash);
    const std::string rest =
        slash == std::string::npos ? std::string() : key.substr(slash + 1);
    if (kind == "applied") {
      absl::StatusOr<AppliedBatch> a = DecodeApplied(value, st);
      if (!a.ok()) {
        return Damaged(
            absl::StrCat("record '", key, "': ", a.status().message()));
      }
      applied_order.emplace_back(a->seq, rest);
      st.applied.emplace(rest, *std::move(a));
    } else if (kind == "pending") {
      pending.emplace_back(rest, &value);
    } else if (kind == "sums") {
      std::vector<std::string> parts = absl::StrSplit(rest, '/');
      size_t m;
      int64_t bucket;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &m) ||
          !absl::SimpleAtoi(parts[1], &bucket) || m >= st.buckets.size() ||
          SumsKey(m, bucket) != key) {
        return Damaged(absl::StrCat("unknown record '", key, "'"));
      }
      absl::StatusOr<PairSums> sums =
          DecodeSums(value, static_cast<int>(st.streams.size()));
      if (!sums.ok()) {
        return Damaged(
            absl::StrCat("record '", key, "': ", sums.status().message()));
      }
      st.buckets[m].emplace(bucket, *std::move(sums));
    } else {
      return Damaged(absl::StrCat("unknown record '", key, "'"));
    }
  }
  // A commit adds at most one batch to a pair's count, so no pair can have
  // counted more batches over all buckets than the session applied; more is
  // damage (and would overflow the sums of a query).
  const size_t streams = st.streams.size();
  for (const auto& measure : st.buckets) {
    std::vector<int64_t> total(streams * streams, 0);
    for (const auto& [bucket, sums] : measure) {
      for (int a = 0; a < sums.size; ++a) {
        for (int b = 0; b < sums.size; ++b) {
          const int64_t c = sums.count[a * sums.size + b];
          int64_t& t = total[a * streams + b];
          if (c < 0 || c > st.batches_applied - t) {
            return Damaged(
                absl::StrCat("sums of bucket ", bucket,
                             " count more batches than were applied"));
          }
          t += c;
        }
      }
    }
  }
  if (st.exact.batches > st.batches_applied || st.exact.rows < 0) {
    return Damaged("exact sums count more batches than were applied");
  }
  std::sort(applied_order.begin(), applied_order.end());
  for (size_t i = 0; i < applied_order.size(); ++i) {
    if (i > 0 && applied_order[i].first == applied_order[i - 1].first) {
      return Damaged("two applied batches share a sequence number");
    }
    st.applied_order.push_back(applied_order[i].second);
  }
  for (const auto& [id, value] : pending) {
    auto applied = st.applied.find(id);
    if (applied == st.applied.end()) {
      return Damaged(
          absl::StrCat("pending batch '", id, "' was never applied"));
    }
    absl::StatusOr<PendingBatch> p =
        DecodePending(*value, applied->second, exact, st);
    if (!p.ok()) {
      return Damaged(
          absl::StrCat("record 'pending/", id, "': ", p.status().message()));
    }
    if (st.pending_order.count(p->seq) > 0) {
      return Damaged("two pending batches share a sequence number");
    }
    st.pending_bytes += p->bytes();
    st.pending_order.emplace(p->seq, id);
    st.pending.emplace(id, *std::move(p));
  }
  session->AccountRestoredState();
  return session;
}

std::string Session::Serialize() const {
  const StateChanges all = AllRecords();
  ByteWriter w;
  w.bytes().append(kMagic, sizeof kMagic);
  w.U64(kFormatVersion);
  w.U64(all.records.size());
  for (const StateRecord& record : all.records) {
    w.String(record.key);
    w.String(record.value);
  }
  w.U64(Fnv1a64(w.bytes()));
  return std::move(w.bytes());
}

absl::StatusOr<std::unique_ptr<Session>> Session::Restore(
    std::string_view bytes, SessionLimits limits) {
  if (bytes.size() < sizeof kMagic + 16 ||
      !std::equal(kMagic, kMagic + 4, bytes.begin())) {
    return Damaged("it does not start with the ckad session header");
  }
  uint64_t stored_hash;
  std::memcpy(&stored_hash, bytes.data() + bytes.size() - 8, 8);
  const std::string_view body = bytes.substr(0, bytes.size() - 8);
  if (Fnv1a64(body) != stored_hash) return Damaged("checksum mismatch");
  ByteReader r(body.substr(sizeof kMagic));
  uint64_t version;
  if (!r.U64(&version) || version != kFormatVersion) {
    return Damaged(absl::StrCat("unknown format version ", version,
                                " (this ckad reads ", kFormatVersion, ")"));
  }
  int64_t count;
  if (!r.Count(&count, 16)) return Damaged("record count");
  std::map<std::string, std::string> records;
  for (int64_t i = 0; i < count; ++i) {
    std::string key, value;
    if (!r.String(&key) || !r.String(&value))
      return Damaged("truncated record");
    if (!records.emplace(std::move(key), std::move(value)).second) {
      return Damaged("repeated record");
    }
  }
  if (!r.done()) return Damaged("trailing bytes");
  absl::StatusOr<std::unique_ptr<Session>> session =
      FromRecords(records, limits);
  if (!session.ok()) return session.status();
  // An imported session is new to whatever store it goes to: all of it is a
  // change.
  SessionState& st = *(*session)->state_;
  for (const auto& [key, value] : records) st.dirty.insert(key);
  return session;
}

}  // namespace cka::core
