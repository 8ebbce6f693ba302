// Session::Serialize and Session::Restore: the complete running state as bytes.
//
// Format: "CKAS", version (u64), the body below, then the FNV-1a-64 hash of
// everything before it. All integers and doubles are little-endian; vectors are
// a u64 count then the elements.
#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "byte_codec.h"
#include "cka/core/session.h"
#include "session_state.h"

namespace cka::core {
namespace {

constexpr char kMagic[4] = {'C', 'K', 'A', 'S'};
constexpr uint64_t kVersion = 1;

void WriteConfig(const SessionConfig& c, ByteWriter& w) {
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
}

bool ReadConfig(ByteReader& r, SessionConfig* c) {
  int64_t count;
  if (!r.Count(&count, 8 + 1 + 8 + 1)) return false;
  c->measures.resize(count);
  for (Measure& m : c->measures) {
    uint8_t kernel, estimator;
    if (!r.String(&m.name) || !r.U8(&kernel) || !r.F64(&m.rbf_threshold) ||
        !r.U8(&estimator)) {
      return false;
    }
    m.kernel = static_cast<Kernel>(kernel);
    m.estimator = static_cast<Estimator>(estimator);
  }
  if (!r.Count(&count, 8)) return false;
  c->streams.resize(count);
  for (std::string& s : c->streams) {
    if (!r.String(&s)) return false;
  }
  return r.I64s(&c->stream_widths) && r.I64(&c->step_bucket);
}

bool SortedUniqueBelow(const std::vector<int>& v, int limit) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0 || v[i] >= limit || (i > 0 && v[i] <= v[i - 1])) return false;
  }
  return true;
}

absl::Status Damaged(const std::string& what) {
  return absl::DataLossError(
      absl::StrCat("stored session state is damaged: ", what));
}

}  // namespace

std::string Session::Serialize() const {
  ByteWriter w;
  w.bytes().append(kMagic, sizeof kMagic);
  w.U64(kVersion);
  WriteConfig(config_, w);
  absl::MutexLock lock(&mu_);
  const SessionState& st = *state_;
  w.U64(st.streams.size());
  for (const std::string& s : st.streams) w.String(s);
  w.I64s(st.widths);
  w.I64(st.batches_applied);
  w.I64(st.batches_evicted);
  w.U64(st.next_seq);
  w.U64(st.buckets.size());
  for (const auto& measure : st.buckets) {
    w.U64(measure.size());
    for (const auto& [key, sums] : measure) {
      w.I64(key);
      w.I64(sums.size);
      w.Doubles(sums.num);
      w.Doubles(sums.self);
      w.I64s(sums.count);
    }
  }
  const ExactSums& ex = st.exact;
  w.I64(ex.dim);
  w.I64s(ex.offset);
  w.Doubles(ex.xx);
  w.Doubles(ex.x);
  w.Doubles(ex.aa);
  w.Doubles(ex.ax);
  w.I64(ex.rows);
  w.I64(ex.batches);
  w.U64(st.applied_order.size());
  for (const std::string& id : st.applied_order) {
    const AppliedBatch& a = st.applied.at(id);
    w.String(id);
    w.I64(a.n);
    w.I64(a.step);
    w.Ints(a.streams);
  }
  w.U64(st.pending_order.size());
  for (const auto& [seq, id] : st.pending_order) {
    const PendingBatch& p = st.pending.at(id);
    w.String(id);
    w.I64(p.n);
    w.I64(p.step);
    w.U64(p.seq);
    w.Ints(p.streams);
    w.U64(p.kernels.size());
    for (const auto& k : p.kernels) w.Doubles(k);
    w.U64(p.self.size());
    for (const auto& s : p.self) w.Doubles(s);
    w.U64(p.activations.size());
    for (const auto& a : p.activations) w.Doubles(a);
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
  if (!r.U64(&version) || version != kVersion) {
    return Damaged(absl::StrCat("unknown format version ", version,
                                " (this ckad reads ", kVersion, ")"));
  }
  SessionConfig config;
  if (!ReadConfig(r, &config)) return Damaged("truncated config");
  if (absl::Status s = ValidateConfig(config); !s.ok()) {
    return Damaged(absl::StrCat("invalid config: ", s.message()));
  }
  std::unique_ptr<Session> session(new Session(config, limits));
  SessionState& st = *session->state_;
  const bool exact =
      std::any_of(config.measures.begin(), config.measures.end(),
                  [](const Measure& m) { return IsExact(m.estimator); });

  int64_t stream_count;
  if (!r.Count(&stream_count, 8)) return Damaged("truncated stream list");
  std::vector<std::string> names(stream_count);
  for (std::string& name : names) {
    if (!r.String(&name)) return Damaged("truncated stream name");
  }
  if (stream_count < static_cast<int64_t>(config.streams.size()) ||
      !std::equal(config.streams.begin(), config.streams.end(),
                  names.begin())) {
    return Damaged("stream list does not start with the declared streams");
  }
  for (size_t i = config.streams.size(); i < names.size(); ++i) {
    if (!ValidateName("stream", names[i]).ok() ||
        st.stream_index.contains(names[i])) {
      return Damaged(absl::StrCat("bad or repeated stream name at index ", i));
    }
    st.AddStream(names[i], 0);
  }
  const int s_count = static_cast<int>(st.streams.size());
  if (!r.I64s(&st.widths) || st.widths.size() != st.streams.size()) {
    return Damaged("stream widths");
  }
  for (int64_t w : st.widths) {
    if (w < 0) return Damaged("negative stream width");
  }
  if (!r.I64(&st.batches_applied) || !r.I64(&st.batches_evicted) ||
      !r.U64(&st.next_seq) || st.batches_applied < 0 ||
      st.batches_evicted < 0) {
    return Damaged("counters");
  }
  int64_t measure_count;
  if (!r.Count(&measure_count, 8) ||
      measure_count != static_cast<int64_t>(st.buckets.size())) {
    return Damaged("measure count");
  }
  for (auto& measure : st.buckets) {
    int64_t bucket_count;
    if (!r.Count(&bucket_count, 40)) return Damaged("bucket count");
    for (int64_t b = 0; b < bucket_count; ++b) {
      int64_t key, size;
      PairSums sums;
      if (!r.I64(&key) || !r.I64(&size) || !r.Doubles(&sums.num) ||
          !r.Doubles(&sums.self) || !r.I64s(&sums.count)) {
        return Damaged("truncated bucket");
      }
      const size_t cells = static_cast<size_t>(size) * size;
      if (size < 0 || size > s_count || sums.num.size() != cells ||
          sums.self.size() != cells || sums.count.size() != cells ||
          measure.count(key) > 0) {
        return Damaged(absl::StrCat("bucket ", key, " has inconsistent sizes"));
      }
      sums.size = static_cast<int>(size);
      measure.emplace(key, std::move(sums));
    }
  }
  ExactSums& ex = st.exact;
  if (!r.I64(&ex.dim) || !r.I64s(&ex.offset) || !r.Doubles(&ex.xx) ||
      !r.Doubles(&ex.x) || !r.Doubles(&ex.aa) || !r.Doubles(&ex.ax) ||
      !r.I64(&ex.rows) || !r.I64(&ex.batches)) {
    return Damaged("truncated exact sums");
  }
  if (ex.dim != 0) {
    const size_t sn = config.streams.size();
    bool ok =
        exact && ex.offset.size() == sn + 1 && ex.offset[0] == 0 && ex.dim > 0;
    for (size_t s = 0; ok && s < sn; ++s) {
      ok = ex.offset[s + 1] - ex.offset[s] == st.widths[s] && st.widths[s] > 0;
    }
    const size_t dim = static_cast<size_t>(ex.dim);
    ok = ok && ex.offset[sn] == ex.dim && ex.xx.size() / dim == dim &&
         ex.xx.size() % dim == 0 && ex.x.size() == dim &&
         ex.aa.size() == sn * sn && ex.ax.size() == sn * dim && ex.rows >= 0 &&
         ex.batches >= 0;
    if (!ok) return Damaged("exact sums have inconsistent sizes");
  } else if (!ex.offset.empty() || !ex.xx.empty() || !ex.x.empty() ||
             !ex.aa.empty() || !ex.ax.empty() || ex.rows != 0 ||
             ex.batches != 0) {
    return Damaged("exact sums without a width");
  }
  int64_t applied_count;
  if (!r.Count(&applied_count, 40)) return Damaged("applied count");
  for (int64_t i = 0; i < applied_count; ++i) {
    std::string id;
    AppliedBatch a;
    if (!r.String(&id) || !r.I64(&a.n) || !r.I64(&a.step) ||
        !r.Ints(&a.streams)) {
      return Damaged("truncated applied batch");
    }
    if (a.n < 1 || a.streams.empty() ||
        !SortedUniqueBelow(a.streams, s_count) || st.applied.contains(id)) {
      return Damaged(absl::StrCat("applied batch '", id, "'"));
    }
    st.applied.emplace(id, std::move(a));
    st.applied_order.push_back(std::move(id));
  }
  int64_t pending_count;
  if (!r.Count(&pending_count, 48)) return Damaged("pending count");
  for (int64_t i = 0; i < pending_count; ++i) {
    std::string id;
    PendingBatch p;
    int64_t count;
    if (!r.String(&id) || !r.I64(&p.n) || !r.I64(&p.step) || !r.U64(&p.seq) ||
        !r.Ints(&p.streams)) {
      return Damaged("truncated pending batch");
    }
    auto applied = st.applied.find(id);
    std::vector<int> sorted = p.streams;
    std::sort(sorted.begin(), sorted.end());
    if (applied == st.applied.end() || applied->second.n != p.n ||
        p.streams.empty() || !SortedUniqueBelow(sorted, s_count) ||
        p.seq >= st.next_seq || st.pending.contains(id) ||
        st.pending_order.count(p.seq) > 0) {
      return Damaged(absl::StrCat("pending batch '", id, "'"));
    }
    const size_t k = p.streams.size();
    const size_t n2 = static_cast<size_t>(p.n) * p.n;
    if (!r.Count(&count, 8) ||
        count != static_cast<int64_t>(st.buckets.size())) {
      return Damaged("pending kernels");
    }
    p.kernels.resize(count);
    for (auto& kernel : p.kernels) {
      if (!r.Doubles(&kernel) || kernel.size() / k != n2 ||
          kernel.size() % k != 0) {
        return Damaged(absl::StrCat("pending batch '", id, "' kernels"));
      }
    }
    if (!r.Count(&count, 8) ||
        count != static_cast<int64_t>(st.buckets.size())) {
      return Damaged("pending self terms");
    }
    p.self.resize(count);
    for (auto& self : p.self) {
      if (!r.Doubles(&self) || self.size() != k)
        return Damaged("pending self terms");
    }
    if (!r.Count(&count, 8) || count != static_cast<int64_t>(exact ? k : 0)) {
      return Damaged("pending activations");
    }
    p.activations.resize(count);
    for (size_t a = 0; a < p.activations.size(); ++a) {
      const int64_t w = st.widths[p.streams[a]];
      if (!r.Doubles(&p.activations[a]) || w <= 0 ||
          p.activations[a].size() / static_cast<size_t>(w) !=
              static_cast<size_t>(p.n) ||
          p.activations[a].size() % static_cast<size_t>(w) != 0) {
        return Damaged(absl::StrCat("pending batch '", id, "' activations"));
      }
    }
    st.pending_bytes += p.bytes();
    st.pending_order.emplace(p.seq, id);
    st.pending.emplace(std::move(id), std::move(p));
  }
  if (!r.done()) return Damaged("trailing or missing bytes");
  return session;
}

}  // namespace cka::core
