// libFuzzer target: input bytes → cka.v1.ActivationBatch → the server's
// conversion to core types (BatchInputFromProto) → Session::Prepare + Commit →
// Query, in three sessions with different configurations (fuzz_util.h). A
// tensor carrying exactly one byte of data first gets the data its shape needs
// (SynthesizeData, up to 256 KiB), so that a few bytes reach n up to 8192 and
// the memory pricing of Prepare and Commit, which draw from a 128 MiB budget.
// Every error status is fine; a crash, a sanitizer report, an allocation over
// libFuzzer's -malloc_limit_mb (a mispriced batch) or a broken invariant is a
// finding. Invariants checked on every input:
//   - a rejected commit leaves Serialize() and the pending changes unchanged;
//   - an accepted one is recorded by TakeChanges: a store that applies every
//     StateChanges holds exactly AllRecords(), and FromRecords() of it and
//     Restore(Serialize()) both give back the same bytes;
//   - committing the same batch again adds nothing (exactly once);
//   - query results have rows × cols values and batch counts, symmetric for
//     the full matrix, rows in Info()'s stream order;
//   - once the input's sessions are gone, every byte reserved from the memory
//     budgets has been given back.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cka/core/session.h"
#include "cka/core/thread_pool.h"
#include "cka/v1/similarity.pb.h"
#include "fuzz_util.h"
#include "server/proto_convert.h"

namespace cka::fuzz {
namespace {

using Records = std::map<std::string, std::string>;

core::ThreadPool& Pool() {
  static core::ThreadPool* pool = new core::ThreadPool(2);
  return *pool;
}

// Applies `changes` to `store` as a durable store would (upsert or delete).
void ApplyChanges(const core::StateChanges& changes, Records* store) {
  for (const core::StateRecord& r : changes.records) {
    if (r.deleted) {
      store->erase(r.key);
    } else {
      (*store)[r.key] = r.value;
    }
  }
}

Records AsRecords(const core::StateChanges& changes) {
  Records records;
  ApplyChanges(changes, &records);
  return records;
}

// Names the first key where `store` and `all` differ (for the finding's
// message).
std::string FirstDifference(const Records& store, const Records& all) {
  for (const auto& [key, value] : all) {
    auto it = store.find(key);
    if (it == store.end()) return "'" + key + "' is missing from the store";
    if (it->second != value) {
      return "'" + key + "' differs (" + std::to_string(it->second.size()) +
             " bytes stored, " + std::to_string(value.size()) +
             " in AllRecords)";
    }
  }
  for (const auto& [key, value] : store) {
    if (all.count(key) == 0)
      return "'" + key + "' is stored but not in AllRecords";
  }
  return "no difference";
}

// Checks the shape of `m`; `full` when it was asked for every stream.
void CheckMatrix(const core::SimilarityMatrix& m, bool full,
                 const core::SessionInfo& info) {
  const size_t cells = m.rows.size() * m.cols.size();
  FUZZ_CHECK(m.values.size() == cells, "values are not rows × cols");
  FUZZ_CHECK(m.batches.size() == cells, "batches are not rows × cols");
  for (int64_t b : m.batches) FUZZ_CHECK(b >= 0, "negative batch count");
  if (!full) return;
  FUZZ_CHECK(m.rows == info.streams, "full query rows differ from Info()");
  FUZZ_CHECK(m.cols == m.rows, "full query is not square");
  const size_t s = m.rows.size();
  for (size_t i = 0; i < s; ++i) {
    for (size_t j = 0; j < i; ++j) {
      FUZZ_CHECK(m.batches[i * s + j] == m.batches[j * s + i],
                 "batch counts are not symmetric");
    }
  }
}

// Runs every kind of query the session answers, plus some built from the
// (fuzzed) names of `input`.
void QueryEverything(const core::Session& session,
                     const core::BatchInput& input) {
  const core::SessionInfo info = session.Info();
  FUZZ_CHECK(info.batches_applied >= 0 && info.batches_pending >= 0 &&
                 info.pending_bytes >= 0 && info.state_bytes >= 0,
             "negative counter");
  FUZZ_CHECK(
      static_cast<int64_t>(info.streams.size()) <= FuzzLimits().max_streams,
      "more streams than max_streams");
  v1::Session session_proto;
  server::SessionToProto("s", info, &session_proto);

  for (const core::Measure& measure : info.config.measures) {
    core::SimilarityQuery query;
    query.measure = measure.name;
    absl::StatusOr<core::SimilarityMatrix> m = session.Query(query);
    FUZZ_CHECK(m.ok(), "full query failed: " + m.status().ToString());
    CheckMatrix(*m, /*full=*/true, info);
    v1::SimilarityMatrix proto;
    server::SimilarityMatrixToProto("s", *m, &proto);

    const int64_t w = info.config.step_bucket;
    if (w > 0 && input.step > -(int64_t{1} << 62) &&
        input.step < (int64_t{1} << 62)) {
      // The bucket of input.step: [floor(step / w) * w, that + w - 1].
      int64_t start = input.step / w * w;
      if (start > input.step) start -= w;
      query.step_min = start;
      query.step_max = start + w - 1;
      m = session.Query(query);
      if (m.ok()) CheckMatrix(*m, /*full=*/true, info);
    }
  }

  core::SimilarityQuery named;
  named.measure = input.batch_id;  // usually unknown: NotFound
  for (size_t i = 0; i < input.layers.size() && i < 4; ++i) {
    named.rows.push_back(core::StreamName(input.source, input.layers[i].layer));
  }
  if (absl::StatusOr<core::SimilarityMatrix> m = session.Query(named); m.ok()) {
    CheckMatrix(*m, /*full=*/false, info);
  }
  named.measure.clear();
  named.cols = named.rows;
  if (absl::StatusOr<core::SimilarityMatrix> m = session.Query(named); m.ok()) {
    CheckMatrix(*m, /*full=*/false, info);
  }
}

void FuzzSession(const FuzzSessionConfig& fc, const core::BatchInput& input,
                 core::ThreadPool* pool) {
  const core::SessionLimits limits = FuzzLimits();
  absl::StatusOr<std::unique_ptr<core::Session>> created =
      core::Session::Create(fc.config, limits);
  FUZZ_CHECK(created.ok(), fc.name + ": " + created.status().ToString());
  core::Session& session = **created;
  std::vector<float> base_storage;
  absl::StatusOr<core::IngestResult> base =
      session.Ingest(BaseBatch(&base_storage));
  FUZZ_CHECK(base.ok(), fc.name + ": base batch: " + base.status().ToString());
  Records store;
  ApplyChanges(session.TakeChanges(), &store);
  const std::string before = session.Serialize();

  absl::StatusOr<core::PreparedBatch> prepared = session.Prepare(input, pool);
  if (!prepared.ok()) {
    QueryEverything(session, input);
    return;
  }
  FUZZ_CHECK(prepared->bytes() >= 0, "negative prepared bytes");
  absl::StatusOr<core::IngestResult> committed =
      session.Commit(*std::move(prepared));
  if (!committed.ok()) {
    FUZZ_CHECK(session.Serialize() == before,
               fc.name + ": a rejected commit changed the state: " +
                   committed.status().ToString());
    FUZZ_CHECK(session.TakeChanges().records.empty(),
               fc.name + ": a rejected commit left changes to store");
    QueryEverything(session, input);
    return;
  }

  const core::StateChanges changes = session.TakeChanges();
  FUZZ_CHECK(changes.version >= committed->version,
             "TakeChanges is older than the commit");
  ApplyChanges(changes, &store);
  const Records all = AsRecords(session.AllRecords());
  FUZZ_CHECK(store == all,
             fc.name + ": the incremental store differs from AllRecords(): " +
                 FirstDifference(store, all));
  const std::string after = session.Serialize();
  if (committed->layers_applied == 0) {
    FUZZ_CHECK(after == before, fc.name + ": a pure duplicate changed state");
  }

  absl::StatusOr<std::unique_ptr<core::Session>> restored =
      core::Session::Restore(after, limits);
  FUZZ_CHECK(restored.ok(), fc.name + ": Restore(Serialize()) failed: " +
                                restored.status().ToString());
  FUZZ_CHECK((*restored)->Serialize() == after,
             fc.name + ": Restore(Serialize()) is not the same state");
  absl::StatusOr<std::unique_ptr<core::Session>> rebuilt =
      core::Session::FromRecords(store, limits);
  FUZZ_CHECK(rebuilt.ok(), fc.name + ": FromRecords(store) failed: " +
                               rebuilt.status().ToString());
  FUZZ_CHECK((*rebuilt)->Serialize() == after,
             fc.name + ": FromRecords(store) is not the same state");

  QueryEverything(session, input);

  // A resend of an accepted batch is never counted twice.
  absl::StatusOr<core::IngestResult> again = session.Ingest(input, pool);
  FUZZ_CHECK(again.ok(), fc.name + ": resending an accepted batch failed: " +
                             again.status().ToString());
  FUZZ_CHECK(again->layers_applied == 0,
             fc.name + ": a resent batch was applied again");
  FUZZ_CHECK(session.Serialize() == after,
             fc.name + ": a resent batch changed the state");
}

}  // namespace
}  // namespace cka::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in a string field is a parse failure, which protobuf also
  // logs; the log would only slow the fuzzer down.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cka;
  v1::ActivationBatch batch;
  if (!batch.ParseFromArray(data, static_cast<int>(size))) return 0;
  fuzz::SynthesizeData(&batch);
  absl::StatusOr<core::BatchInput> input = server::BatchInputFromProto(batch);
  if (!input.ok()) return 0;
  static const std::vector<fuzz::FuzzSessionConfig>* const configs =
      new std::vector<fuzz::FuzzSessionConfig>(fuzz::BatchFuzzConfigs());
  for (const fuzz::FuzzSessionConfig& fc : *configs) {
    // The declared session prepares its layers on the pool, as the server
    // does; the others on the calling thread.
    fuzz::FuzzSession(fc, *input,
                      fc.name == "declared" ? &fuzz::Pool() : nullptr);
    fuzz::CheckBudgetReturned();
  }
  return 0;
}
