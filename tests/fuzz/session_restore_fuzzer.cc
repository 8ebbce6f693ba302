// libFuzzer target: input bytes → Session::Restore, three ways:
//   1. the bytes as they are (mostly rejected by the header or the checksum);
//   2. the bytes with their last 8 replaced by the right checksum
//      (WithFixedChecksum), so that mutations reach the record decoders;
//   3. the bytes split leniently into records (SplitRecords) →
//      Session::FromRecords.
// A session that comes back is queried, serialised, restored again, and given a
// small batch. Every error status is fine; a crash, a sanitizer report, an
// allocation beyond libFuzzer's -rss_limit_mb/-malloc_limit_mb or a broken
// invariant is a finding. Invariants: a restored session serialises to bytes
// that Restore accepts and that serialise identically (and the same through
// AllRecords → FromRecords); its full queries have Info()'s streams as rows
// (or are refused over the memory budget);
// a rejected batch leaves Serialize() unchanged, an accepted one is never
// counted twice; once the input's sessions are gone, every byte reserved from
// the memory budgets has been given back.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cka/core/session.h"
#include "fuzz_util.h"

namespace cka::fuzz {
namespace {

std::map<std::string, std::string> AsRecords(
    const core::StateChanges& changes) {
  std::map<std::string, std::string> records;
  for (const core::StateRecord& r : changes.records) {
    if (!r.deleted) records[r.key] = r.value;
  }
  return records;
}

// Checks that `bytes` (a Serialize() result) round-trips exactly.
void CheckRoundTrip(const std::string& bytes, const core::Session& session) {
  const core::SessionLimits limits = FuzzLimits();
  absl::StatusOr<std::unique_ptr<core::Session>> again =
      core::Session::Restore(bytes, limits);
  FUZZ_CHECK(again.ok(),
             "Restore(Serialize()) failed: " + again.status().ToString());
  FUZZ_CHECK((*again)->Serialize() == bytes,
             "Restore(Serialize()) is not the same state");
  absl::StatusOr<std::unique_ptr<core::Session>> rebuilt =
      core::Session::FromRecords(AsRecords(session.AllRecords()), limits);
  FUZZ_CHECK(rebuilt.ok(), "FromRecords(AllRecords()) failed: " +
                               rebuilt.status().ToString());
  FUZZ_CHECK((*rebuilt)->Serialize() == bytes,
             "FromRecords(AllRecords()) is not the same state");
}

void QueryAll(const core::Session& session) {
  const core::SessionInfo info = session.Info();
  FUZZ_CHECK(info.batches_applied >= 0 && info.batches_pending >= 0 &&
                 info.batches_evicted >= 0 && info.pending_bytes >= 0 &&
                 info.state_bytes >= 0,
             "negative counter");
  for (const core::Measure& measure : info.config.measures) {
    core::SimilarityQuery query;
    query.measure = measure.name;
    absl::StatusOr<core::SimilarityMatrix> m = session.Query(query);
    // A restored session may hold more than FuzzLimits() allow: its query
    // may be priced over the budget, but fail for no other reason.
    if (absl::IsResourceExhausted(m.status())) continue;
    FUZZ_CHECK(m.ok(), "full query of measure '" + measure.name +
                           "' failed: " + m.status().ToString());
    FUZZ_CHECK(m->rows == info.streams && m->cols == info.streams,
               "full query rows differ from Info()");
    const size_t cells = m->rows.size() * m->cols.size();
    FUZZ_CHECK(m->values.size() == cells && m->batches.size() == cells,
               "matrix is not rows × cols");
    if (info.config.step_bucket > 0) {
      query.step_min = 0;
      query.step_max = info.config.step_bucket - 1;
      (void)session.Query(query);
    }
  }
}

// Sends one small batch for (at most) the first two streams of the session.
void IngestOne(core::Session& session) {
  const core::SessionInfo info = session.Info();
  if (info.streams.empty()) return;
  constexpr int kN = 6;
  std::vector<std::vector<float>> storage;
  core::BatchInput batch;
  batch.batch_id = "fuzz-ingest";
  batch.step = 1;
  bool first = true;
  for (size_t i = 0; i < info.streams.size() && i < 2; ++i) {
    const std::string& stream = info.streams[i];
    const size_t slash = stream.find('/');
    const std::string source =
        slash == std::string::npos ? "" : stream.substr(0, slash);
    if (!first && source != batch.source) break;  // one source per batch
    batch.source = source;
    first = false;
    int64_t d = 3;
    for (size_t k = 0;
         k < info.config.streams.size() && k < info.config.stream_widths.size();
         ++k) {
      if (info.config.streams[k] == stream &&
          info.config.stream_widths[k] > 0 &&
          info.config.stream_widths[k] <= 64) {
        d = info.config.stream_widths[k];
      }
    }
    storage.push_back(
        SampleActivations(kN, static_cast<int>(d), static_cast<uint32_t>(i)));
    core::LayerInput layer;
    layer.layer =
        slash == std::string::npos ? stream : stream.substr(slash + 1);
    layer.tensor.shape = {kN, d};
    layer.tensor.dtype = core::DType::kFloat32;
    layer.tensor.data = storage.back().data();
    layer.tensor.size_bytes = storage.back().size() * sizeof(float);
    batch.layers.push_back(std::move(layer));
  }
  const std::string before = session.Serialize();
  absl::StatusOr<core::IngestResult> result = session.Ingest(batch);
  if (!result.ok()) {
    FUZZ_CHECK(
        session.Serialize() == before,
        "a rejected batch changed the state: " + result.status().ToString());
    return;
  }
  const std::string after = session.Serialize();
  CheckRoundTrip(after, session);
  QueryAll(session);
  absl::StatusOr<core::IngestResult> again = session.Ingest(batch);
  FUZZ_CHECK(again.ok() && again->layers_applied == 0,
             "a resent batch was applied again or failed");
  FUZZ_CHECK(session.Serialize() == after, "a resent batch changed the state");
}

void Exercise(std::unique_ptr<core::Session> session) {
  const std::string bytes = session->Serialize();
  CheckRoundTrip(bytes, *session);
  QueryAll(*session);
  IngestOne(*session);
}

}  // namespace
}  // namespace cka::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cka;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const core::SessionLimits limits = fuzz::FuzzLimits();

  absl::StatusOr<std::unique_ptr<core::Session>> as_is =
      core::Session::Restore(bytes, limits);
  if (as_is.ok()) fuzz::Exercise(*std::move(as_is));

  const std::string fixed = fuzz::WithFixedChecksum(bytes);
  if (fixed != bytes) {
    absl::StatusOr<std::unique_ptr<core::Session>> restored =
        core::Session::Restore(fixed, limits);
    if (restored.ok()) fuzz::Exercise(*std::move(restored));
  }

  const std::map<std::string, std::string> records = fuzz::SplitRecords(bytes);
  if (!records.empty()) {
    absl::StatusOr<std::unique_ptr<core::Session>> rebuilt =
        core::Session::FromRecords(records, limits);
    if (rebuilt.ok()) fuzz::Exercise(*std::move(rebuilt));
  }
  fuzz::CheckBudgetReturned();
  return 0;
}
