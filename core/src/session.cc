// Session's construction, its counters and Ingest; the rest of Session lives
// by concern in session_prepare.cc (validation and the kernel pipeline),
// session_commit.cc (the running sums, the join buffer, duplicate records),
// session_query.cc (the matrices) and session_codec.cc (records and bytes).
#include "cka/core/session.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>

#include "absl/strings/str_format.h"
#include "prepared_batch.h"
#include "session_state.h"
#include "spectrum_cache.h"

namespace cka::core {

// ---------------------------------------------------------------------------------------------
// PreparedBatch

PreparedBatch::PreparedBatch() : rep_(std::make_unique<Rep>()) {}
PreparedBatch::~PreparedBatch() = default;
PreparedBatch::PreparedBatch(PreparedBatch&&) noexcept = default;
PreparedBatch& PreparedBatch::operator=(PreparedBatch&&) noexcept = default;
const std::string& PreparedBatch::batch_id() const { return rep_->batch_id; }
int64_t PreparedBatch::bytes() const {
  size_t b = 0;
  for (const auto& k : rep_->kernels) b += k.size() * sizeof(double);
  for (const auto& a : rep_->activations) b += a.size() * sizeof(double);
  return static_cast<int64_t>(b);
}

// ---------------------------------------------------------------------------------------------
// Session

Session::Session(SessionConfig config, SessionLimits limits)
    : config_(std::move(config)),
      limits_(limits),
      state_(std::make_unique<SessionState>()),
      spectra_(std::make_unique<SpectrumCache>(
          limits_.memory.get(),
          SpectrumCacheCap(limits_.memory.get(), limits_.max_exact_bytes))) {
  if (limits_.memory != nullptr) held_ = limits_.memory->Empty();
  if (limits_.join_memory != nullptr) held_join_ = limits_.join_memory->Empty();
  state_->buckets.resize(MinibatchMeasures(config_).size());
  state_->dirty = {kConfigKey, kMetaKey};
  for (size_t i = 0; i < config_.streams.size(); ++i) {
    state_->AddStream(config_.streams[i], config_.stream_widths.empty()
                                              ? 0
                                              : config_.stream_widths[i]);
  }
}

Session::~Session() = default;

absl::StatusOr<std::unique_ptr<Session>> Session::Create(SessionConfig config,
                                                         SessionLimits limits) {
  config = WithDefaults(std::move(config));
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  if (HasExact(config) && !config.stream_widths.empty()) {
    const int64_t dim = std::accumulate(config.stream_widths.begin(),
                                        config.stream_widths.end(), int64_t{0});
    const bool all_known =
        std::none_of(config.stream_widths.begin(), config.stream_widths.end(),
                     [](int64_t w) { return w == 0; });
    const int64_t need =
        ExactBytes(dim, static_cast<int64_t>(config.streams.size()));
    if (need > limits.max_exact_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("the exact estimators over %d declared streams of "
                          "%s%d features need %d bytes, more "
                          "than the exact-estimator memory budget of %d bytes",
                          config.streams.size(), all_known ? "" : "at least ",
                          dim, need, limits.max_exact_bytes));
    }
  }
  if (static_cast<int64_t>(config.streams.size()) > limits.max_streams) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("config.streams declares %d streams, more than the "
                        "limit of %d streams per session",
                        config.streams.size(), limits.max_streams));
  }
  return std::unique_ptr<Session>(new Session(std::move(config), limits));
}

absl::StatusOr<IngestResult> Session::Ingest(const BatchInput& batch,
                                             ThreadPool* pool) {
  absl::StatusOr<PreparedBatch> prepared = Prepare(batch, pool);
  if (!prepared.ok()) return prepared.status();
  return Commit(*std::move(prepared));
}

int64_t Session::HeldBytesLocked() const {
  const SessionState& st = *state_;
  const int64_t sums =
      st.sums_bytes >= 0 ? st.sums_bytes : st.BucketSumsBytes();
  const int64_t applied =
      st.applied_bytes >= 0 ? st.applied_bytes : st.AppliedBytesTotal();
  return sums + applied + st.pending_bytes + st.exact.bytes();
}

void Session::AccountRestoredState() {
  absl::MutexLock lock(&mu_);
  state_->sums_bytes = state_->BucketSumsBytes();
  state_->applied_bytes = state_->AppliedBytesTotal();
  held_.Set(HeldBytesLocked());
  held_join_.Set(state_->pending_bytes);
}

SessionInfo Session::Info() const {
  SessionInfo info;
  info.config = config_;
  absl::MutexLock lock(&mu_);
  const SessionState& st = *state_;
  info.streams = st.streams;
  info.batches_applied = st.batches_applied;
  info.batches_pending = static_cast<int64_t>(st.pending.size());
  info.batches_evicted = st.batches_evicted;
  info.pairs_missed = st.pairs_missed;
  info.pending_bytes = st.pending_bytes;
  info.state_bytes = st.SumsBytes();
  const SpectrumCache::Stats spectra = spectra_->stats();
  info.spectrum_bytes = spectra.bytes;
  info.spectra_reused = spectra.hits;
  info.spectra_computed = spectra.misses;
  info.held_bytes = HeldBytesLocked() + spectra.bytes;
  return info;
}

}  // namespace cka::core
