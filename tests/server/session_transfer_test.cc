#include "server/session_transfer.h"

#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"
#include "server/sqlite_state_store.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

std::string NewTempDir() {
  std::string pattern =
      (fs::path(testing::TempDir()) / "session_transfer_XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Returns a session with a few batches of float64 activations applied.
std::unique_ptr<core::Session> SessionWithBatches() {
  core::SessionConfig config;
  config.streams = {"a", "b"};
  absl::StatusOr<std::unique_ptr<core::Session>> session =
      core::Session::Create(config);
  EXPECT_TRUE(session.ok());
  for (int b = 0; b < 3; ++b) {
    std::vector<double> xa(6 * 3), xb(6 * 2);
    for (size_t i = 0; i < xa.size(); ++i) xa[i] = std::sin(b * 31.0 + i);
    for (size_t i = 0; i < xb.size(); ++i) xb[i] = std::cos(b * 17.0 + i);
    core::BatchInput input;
    input.batch_id = "b" + std::to_string(b);
    for (const auto* x : {&xa, &xb}) {
      core::LayerInput layer;
      layer.layer = x == &xa ? "a" : "b";
      layer.tensor.shape = {6, static_cast<int64_t>(x->size() / 6)};
      layer.tensor.dtype = core::DType::kFloat64;
      layer.tensor.data = x->data();
      layer.tensor.size_bytes = x->size() * sizeof(double);
      input.layers.push_back(std::move(layer));
    }
    EXPECT_TRUE((*session)->Ingest(input).ok());
  }
  return *std::move(session);
}

// Stores `session` as `id` in the database of `dir`.
void Store(const std::string& dir, const std::string& id,
           core::Session& session) {
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
      SqliteStateStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  StateWrite write;
  write.sessions.push_back({id, true, session.TakeChanges().records});
  ASSERT_TRUE((*store)->Write(write).ok());
}

class SessionTransferTest : public testing::Test {
 protected:
  void SetUp() override { dir_ = NewTempDir(); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(SessionTransferTest, ExportThenImportElsewhereGivesTheSameSession) {
  std::unique_ptr<core::Session> session = SessionWithBatches();
  const std::string expected = session->Serialize();
  ASSERT_NO_FATAL_FAILURE(Store(dir_ + "/from", "run-1", *session));
  const std::string file = dir_ + "/run-1.ckas";
  ASSERT_TRUE(ExportSession(dir_ + "/from", "run-1", file).ok());
  EXPECT_EQ(ReadFile(file), expected);

  ASSERT_TRUE(ImportSession(dir_ + "/to", file, "copy").ok());
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
      SqliteStateStore::Open(dir_ + "/to");
  ASSERT_TRUE(store.ok());
  absl::StatusOr<SessionRecords> records = (*store)->Load("copy");
  ASSERT_TRUE(records.ok()) << records.status();
  absl::StatusOr<std::unique_ptr<core::Session>> imported =
      core::Session::FromRecords(*records);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ((*imported)->Serialize(), expected);
}

TEST_F(SessionTransferTest, ExportOfAnUnknownSessionIsNotFound) {
  std::unique_ptr<core::Session> session = SessionWithBatches();
  ASSERT_NO_FATAL_FAILURE(Store(dir_, "s", *session));
  const absl::Status status = ExportSession(dir_, "nope", dir_ + "/out");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_FALSE(fs::exists(dir_ + "/out"));
}

TEST_F(SessionTransferTest, DamagedOrTruncatedFilesImportNothing) {
  std::unique_ptr<core::Session> session = SessionWithBatches();
  const std::string bytes = session->Serialize();
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x10;
  const struct {
    const char* name;
    std::string bytes;
  } cases[] = {{"flipped", flipped},
               {"truncated", bytes.substr(0, bytes.size() - 9)},
               {"empty", ""},
               {"text", "not a session at all"}};
  for (const auto& c : cases) {
    const std::string file = dir_ + "/" + c.name;
    { std::ofstream(file, std::ios::binary) << c.bytes; }
    const absl::Status status = ImportSession(dir_ + "/data", file, "s");
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_NE(std::string(status.message()).find(file), std::string::npos)
        << status;
    EXPECT_NE(std::string(status.message()).find("nothing was imported"),
              std::string::npos)
        << status;
  }
  // Nothing was written: not even a database was created.
  EXPECT_FALSE(fs::exists(dir_ + "/data/ckad.db"));
}

TEST_F(SessionTransferTest, ImportRefusesAnExistingIdAndABadId) {
  std::unique_ptr<core::Session> session = SessionWithBatches();
  const std::string file = dir_ + "/s.ckas";
  { std::ofstream(file, std::ios::binary) << session->Serialize(); }
  ASSERT_TRUE(ImportSession(dir_ + "/data", file, "s").ok());
  EXPECT_EQ(ImportSession(dir_ + "/data", file, "s").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ImportSession(dir_ + "/data", file, "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ImportSession(dir_ + "/data", dir_ + "/missing", "t").code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(SessionTransferTest, ADataDirectoryInUseIsRefused) {
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> held =
      SqliteStateStore::Open(dir_);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(ExportSession(dir_, "s", dir_ + "/out").code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace cka::server
