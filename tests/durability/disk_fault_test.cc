// Disk faults under ckad's SQLite store, injected by the faulty VFS
// (faulty_vfs.h): a full disk (ENOSPC on write), a failing write (EIO) and a
// failing fsync (EIO). The claims under test (README, "Durability"): while
// the disk fails, the acks of the batches whose group commit failed are
// UNAVAILABLE with a message naming the disk error and the stream stays
// open; no batch acknowledged OK is lost; once the disk works again ckad
// recovers by itself, its memory and its database agree, and the client's
// resends of the refused batches are acknowledged OK.
#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cka/server/server.h"
#include "cka/v1/similarity.grpc.pb.h"
#include "faulty_vfs.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "reference_cka.h"
#include "server/sqlite_state_store.h"
#include "test_util.h"

namespace cka::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kGrpcUnavailable = 14;

// A fault, and what the message of a refused ack must say about it.
struct FaultCase {
  const char* name;
  DiskFault fault;
  std::vector<std::string> message_parts;
};

const FaultCase kWriteFailsWithEnospc = {
    "EnospcOnWrite",
    {DiskOp::kWrite, SQLITE_FULL, ENOSPC},
    {"database or disk is full", "SQLITE_FULL"}};
const FaultCase kWriteFailsWithEio = {
    "EioOnWrite",
    {DiskOp::kWrite, SQLITE_IOERR_WRITE, EIO},
    {"disk I/O error", "SQLITE_IOERR_WRITE", "a write failed"}};
const FaultCase kFsyncFailsWithEio = {
    "EioOnFsync",
    {DiskOp::kSync, SQLITE_IOERR_FSYNC, EIO},
    {"disk I/O error", "SQLITE_IOERR_FSYNC", "an fsync failed"}};

std::string FaultName(const ::testing::TestParamInfo<FaultCase>& info) {
  return info.param.name;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string_view::npos;
}

// ---------------------------------------------------------------------------
// The store alone.

core::StateRecord Put(const std::string& key, const std::string& value) {
  return core::StateRecord{key, value, false};
}

server::StateWrite OneSession(const std::string& id,
                              std::vector<core::StateRecord> records) {
  server::StateWrite write;
  write.sessions.push_back({id, false, std::move(records)});
  return write;
}

class StoreDiskFaultTest : public ::testing::TestWithParam<FaultCase> {
 protected:
  void SetUp() override {
    FaultyVfs::Get().Disarm();
    dir_ = MakeTempDir(absl::StrCat("store_", GetParam().name));
  }
  void TearDown() override {
    FaultyVfs::Get().Disarm();
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string dir_;
};

TEST_P(StoreDiskFaultTest,
       FailedWriteIsUnavailableAppliesNothingAndNextOneWorks) {
  FaultyVfs& vfs = FaultyVfs::Get();
  absl::StatusOr<std::unique_ptr<server::SqliteStateStore>> store =
      server::SqliteStateStore::Open(dir_, FaultyVfs::kName);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Write(OneSession("s", {Put("k1", "before")})).ok());

  vfs.Arm(GetParam().fault);
  const int64_t injected = vfs.injected();
  const absl::Status failed = (*store)->Write(
      OneSession("s", {Put("k1", "failed"), Put("k2", "failed")}));
  EXPECT_GT(vfs.injected(), injected) << "the fault was never hit";
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  for (const std::string& part : GetParam().message_parts)
    EXPECT_TRUE(Contains(std::string(failed.message()), part))
        << failed << " lacks " << part;
  // The connection rolled the transaction back: what it reads is the last
  // committed state.
  absl::StatusOr<server::SessionRecords> now = (*store)->Load("s");
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(*now, (server::SessionRecords{{"k1", "before"}}));

  // A crash now: what a restart finds is the database and WAL files as they
  // are. The failed transaction is either whole (its frames reached the WAL
  // and SQLite's recovery accepts them: a fsync that failed may still have
  // written) or absent, never half.
  const std::string crash_dir = dir_ + "/crash";
  fs::create_directories(crash_dir);
  for (const char* suffix : {"", "-wal"}) {
    const std::string from = (*store)->path() + suffix;
    if (fs::exists(from)) fs::copy_file(from, crash_dir + "/ckad.db" + suffix);
  }

  vfs.Disarm();
  ASSERT_TRUE((*store)->Write(OneSession("s", {Put("k3", "after")})).ok());
  store->reset();
  absl::StatusOr<std::unique_ptr<server::SqliteStateStore>> reopened =
      server::SqliteStateStore::Open(dir_);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  absl::StatusOr<server::SessionRecords> stored = (*reopened)->Load("s");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored,
            (server::SessionRecords{{"k1", "before"}, {"k3", "after"}}));

  absl::StatusOr<std::unique_ptr<server::SqliteStateStore>> crashed =
      server::SqliteStateStore::Open(crash_dir);
  ASSERT_TRUE(crashed.ok()) << crashed.status();
  absl::StatusOr<server::SessionRecords> found = (*crashed)->Load("s");
  ASSERT_TRUE(found.ok()) << found.status();
  const server::SessionRecords whole = {{"k1", "failed"}, {"k2", "failed"}};
  const server::SessionRecords absent = {{"k1", "before"}};
  EXPECT_TRUE(*found == whole || *found == absent);
}

INSTANTIATE_TEST_SUITE_P(Faults, StoreDiskFaultTest,
                         ::testing::Values(kWriteFailsWithEnospc,
                                           kWriteFailsWithEio,
                                           kFsyncFailsWithEio),
                         FaultName);

TEST(StoreDiskFaultTruncateTest,
     FailedTruncateOfTheCheckpointAtCloseLosesNothing) {
  FaultyVfs& vfs = FaultyVfs::Get();
  vfs.Disarm();
  const std::string dir = MakeTempDir("store_truncate");
  {
    absl::StatusOr<std::unique_ptr<server::SqliteStateStore>> store =
        server::SqliteStateStore::Open(dir, FaultyVfs::kName);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Write(OneSession("s", {Put("k", "v")})).ok());
    // Closing checkpoints the WAL into the database file and truncates it to
    // its size: that truncate fails.
    vfs.Arm({DiskOp::kTruncate, SQLITE_IOERR_TRUNCATE, EIO});
  }
  EXPECT_GT(vfs.injected(), 0);
  vfs.Disarm();
  absl::StatusOr<std::unique_ptr<server::SqliteStateStore>> reopened =
      server::SqliteStateStore::Open(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  absl::StatusOr<server::SessionRecords> stored = (*reopened)->Load("s");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored, (server::SessionRecords{{"k", "v"}}));
  reopened->reset();
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------
// ckad in-process, streaming.

constexpr int kExamples = 6;
const std::vector<int> kWidths = {5, 3};  // layers l0, l1 of source "a"

std::string Stream(int layer) { return absl::StrCat("a/l", layer); }

Activations BatchActivations(int layer, int index) {
  std::mt19937_64 rng(7919ULL * index + 31ULL * layer + 1);
  std::mt19937_64 shared_rng(1000003ULL * index + 17);
  std::normal_distribution<double> normal;
  std::vector<double> shared(kExamples * 8);
  for (double& v : shared) v = normal(shared_rng);
  Activations a;
  a.n = kExamples;
  a.d = kWidths[layer];
  a.x.resize(static_cast<size_t>(a.n) * a.d);
  for (int i = 0; i < a.n; ++i) {
    for (int j = 0; j < a.d; ++j)
      a.x[i * a.d + j] = normal(rng) + 0.8 * shared[i * 8 + j];
  }
  return a;
}

v1::ActivationBatch MakeBatch(const std::string& session, int index) {
  v1::ActivationBatch batch;
  batch.set_session_id(session);
  batch.set_source("a");
  batch.set_batch_id(absl::StrCat("b", index));
  batch.set_step(index);
  for (int layer = 0; layer < static_cast<int>(kWidths.size()); ++layer) {
    const Activations a = BatchActivations(layer, index);
    v1::LayerActivation* l = batch.add_layers();
    l->set_layer(absl::StrCat("l", layer));
    v1::Tensor* t = l->mutable_activations();
    t->add_shape(a.n);
    t->add_shape(a.d);
    t->set_dtype(v1::FLOAT64);
    t->set_data(a.x.data(), a.x.size() * sizeof(double));
  }
  return batch;
}

// What a restart must reproduce: the matrix and the counters.
struct SessionSnapshot {
  v1::SimilarityMatrix matrix;
  int64_t batches_applied = -1;
};

class ServerDiskFaultTest : public ::testing::TestWithParam<FaultCase> {
 protected:
  void SetUp() override {
    FaultyVfs::Get().Disarm();
    options_.data_dir = MakeTempDir(absl::StrCat("server_", GetParam().name));
  }
  void TearDown() override {
    FaultyVfs::Get().Disarm();
    stub_.reset();
    server_.reset();
    if (!HasFailure()) fs::remove_all(options_.data_dir);
  }

  void Start(const std::string& vfs) {
    options_.sqlite_vfs = vfs;
    server_ = StartServer(options_);
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Similarity::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return context;
  }

  grpc::Status CreateSession(const std::string& id) {
    v1::CreateSessionRequest request;
    request.set_session_id(id);
    for (int layer = 0; layer < static_cast<int>(kWidths.size()); ++layer)
      request.mutable_config()->add_streams(Stream(layer));
    v1::Session session;
    return stub_->CreateSession(Context().get(), request, &session);
  }
  grpc::Status DeleteSession(const std::string& id) {
    v1::DeleteSessionRequest request;
    request.set_session_id(id);
    v1::DeleteSessionResponse response;
    return stub_->DeleteSession(Context().get(), request, &response);
  }
  absl::StatusOr<SessionSnapshot> Snapshot(const std::string& id) {
    SessionSnapshot snapshot;
    v1::GetSimilarityRequest query;
    query.set_session_id(id);
    grpc::Status s =
        stub_->GetSimilarity(Context().get(), query, &snapshot.matrix);
    if (!s.ok()) return absl::InternalError(s.error_message());
    v1::GetSessionRequest get;
    get.set_session_id(id);
    v1::Session info;
    s = stub_->GetSession(Context().get(), get, &info);
    if (!s.ok()) return absl::InternalError(s.error_message());
    snapshot.batches_applied = info.batches_applied();
    return snapshot;
  }

  server::ServerOptions options_;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<v1::Similarity::Stub> stub_;
};

TEST_P(ServerDiskFaultTest,
       RefusedBatchesAreUnavailableAckedOnesSurviveAndCkadRecovers) {
  FaultyVfs& vfs = FaultyVfs::Get();
  const std::string session = "s";
  ASSERT_NO_FATAL_FAILURE(Start(FaultyVfs::kName));
  ASSERT_TRUE(CreateSession(session).ok());
  ASSERT_TRUE(CreateSession("doomed").ok());

  grpc::ClientContext stream_context;
  auto stream = stub_->StreamActivations(&stream_context);
  std::vector<int> acked;  // acknowledged OK
  // Sends batches `indices` together (so that they may share group commits)
  // and returns their acks.
  auto send = [&](const std::vector<int>& indices) {
    std::vector<v1::BatchAck> acks;
    for (int i : indices) EXPECT_TRUE(stream->Write(MakeBatch(session, i)));
    for (int i : indices) {
      v1::BatchAck ack;
      EXPECT_TRUE(stream->Read(&ack)) << "the stream ended at b" << i;
      EXPECT_EQ(ack.batch_id(), absl::StrCat("b", i));
      if (ack.code() == 0) acked.push_back(i);
      acks.push_back(ack);
    }
    return acks;
  };
  for (const v1::BatchAck& ack : send({0, 1, 2})) {
    ASSERT_EQ(ack.code(), 0) << ack.message();
    EXPECT_FALSE(ack.duplicate());
  }

  // The disk fails: every group commit fails, so every ack is UNAVAILABLE,
  // and so are the session calls that wait for the disk.
  vfs.Arm(GetParam().fault);
  // Together with the batches, so that they share the failed rounds (ckad
  // retries a failed round after a second).
  std::future<grpc::Status> created =
      std::async(std::launch::async, [&] { return CreateSession("late"); });
  std::future<grpc::Status> deleted =
      std::async(std::launch::async, [&] { return DeleteSession("doomed"); });
  const std::vector<int> refused = {3, 4};
  for (const v1::BatchAck& ack : send(refused)) {
    EXPECT_EQ(ack.code(), kGrpcUnavailable) << ack.message();
    for (const std::string& part : GetParam().message_parts) {
      EXPECT_TRUE(Contains(ack.message(), part))
          << "'" << ack.message() << "' lacks '" << part << "'";
    }
  }
  for (std::future<grpc::Status>* call : {&created, &deleted}) {
    const grpc::Status status = call->get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_message();
    for (const std::string& part : GetParam().message_parts) {
      EXPECT_TRUE(Contains(status.error_message(), part))
          << "'" << status.error_message() << "' lacks '" << part << "'";
    }
  }
  EXPECT_GT(vfs.injected(), 0) << "the fault was never hit";

  // The disk works again: ckad retries by itself. The refused batches were
  // applied in memory, and the retry writes the session whole, so a new batch
  // finds them counted; their resends are duplicates, acknowledged OK once
  // durable.
  vfs.Disarm();
  for (const v1::BatchAck& ack : send({5})) {
    ASSERT_EQ(ack.code(), 0) << ack.message();
  }
  absl::StatusOr<SessionSnapshot> in_memory = Snapshot(session);
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  EXPECT_EQ(in_memory->batches_applied, 6);
  for (const v1::BatchAck& ack : send(refused)) {
    ASSERT_EQ(ack.code(), 0) << ack.message();
    EXPECT_TRUE(ack.duplicate()) << ack.batch_id();
  }
  for (const v1::BatchAck& ack : send({6, 7})) {
    ASSERT_EQ(ack.code(), 0) << ack.message();
    EXPECT_FALSE(ack.duplicate());
  }
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());
  // The retried create answers once the session is durable; the refused
  // delete had already removed the session from memory.
  ASSERT_TRUE(CreateSession("late").ok());
  EXPECT_EQ(DeleteSession("doomed").error_code(), grpc::StatusCode::NOT_FOUND);

  in_memory = Snapshot(session);
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  server_->Shutdown();
  server_.reset();

  // The database holds what memory held: the same sums give the same
  // matrix, bit for bit, and the same counters.
  ASSERT_NO_FATAL_FAILURE(Start(""));
  absl::StatusOr<SessionSnapshot> restored = Snapshot(session);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->batches_applied, in_memory->batches_applied);
  EXPECT_EQ(restored->matrix.SerializeAsString(),
            in_memory->matrix.SerializeAsString());
  v1::GetSessionRequest get;
  get.set_session_id("late");
  v1::Session info;
  EXPECT_TRUE(stub_->GetSession(Context().get(), get, &info).ok());
  // The deletion that failed was retried by ckad itself.
  get.set_session_id("doomed");
  EXPECT_EQ(stub_->GetSession(Context().get(), get, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // And both equal an independent computation over exactly the batches
  // acknowledged OK.
  std::sort(acked.begin(), acked.end());
  acked.erase(std::unique(acked.begin(), acked.end()), acked.end());
  ASSERT_EQ(acked, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  std::vector<ReferenceBatch> batches;
  for (int i : acked) {
    ReferenceBatch& b = batches.emplace_back();
    for (int layer = 0; layer < static_cast<int>(kWidths.size()); ++layer)
      b[Stream(layer)] = BatchActivations(layer, i);
  }
  EXPECT_EQ(restored->batches_applied, static_cast<int64_t>(acked.size()));
  const v1::SimilarityMatrix& m = restored->matrix;
  ASSERT_EQ(m.rows_size(), 2);
  ASSERT_EQ(m.cols_size(), 2);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      const int k = i * 2 + j;
      EXPECT_EQ(m.batches(k), static_cast<int64_t>(acked.size()));
      const double expected =
          ReferenceMinibatchCka(batches, m.rows(i), m.cols(j), true);
      // Float64 in, float64 sums over 8 batches: only the summation order
      // differs from the reference.
      EXPECT_NEAR(m.values(k), expected, 1e-10 * std::abs(expected))
          << m.rows(i) << " × " << m.cols(j);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Faults, ServerDiskFaultTest,
                         ::testing::Values(kWriteFailsWithEnospc,
                                           kWriteFailsWithEio,
                                           kFsyncFailsWithEio),
                         FaultName);

}  // namespace
}  // namespace cka::testing
