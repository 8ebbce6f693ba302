#include "server/sqlite_state_store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cka/core/session.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

std::string NewTempDir() {
  std::string pattern =
      (fs::path(testing::TempDir()) / "sqlite_state_store_XXXXXX").string();
  EXPECT_NE(mkdtemp(pattern.data()), nullptr);
  return pattern;
}

core::StateRecord Put(const std::string& key, const std::string& value) {
  return core::StateRecord{key, value, false};
}
core::StateRecord Erase(const std::string& key) {
  return core::StateRecord{key, "", true};
}

StateWrite::Session Records(const std::string& id,
                            std::vector<core::StateRecord> records,
                            bool replace = false) {
  return StateWrite::Session{id, replace, std::move(records)};
}

// Runs `sql` on the database file directly, as another program would.
void RunSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error != nullptr ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

class SqliteStateStoreTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
        SqliteStateStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  std::string db_path() const { return dir_ + "/ckad.db"; }

  std::string dir_;
  std::unique_ptr<SqliteStateStore> store_;
};

TEST_F(SqliteStateStoreTest, WrittenRecordsSurviveReopening) {
  StateWrite write;
  write.sessions.push_back(
      Records("s1", {Put("config", "c1"), Put("meta", std::string("\0\1\2", 3)),
                     Put("empty", "")}));
  ASSERT_TRUE(store_->Write(write).ok());
  Reopen();
  absl::StatusOr<std::map<std::string, SessionRecords>> all = store_->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  const std::map<std::string, SessionRecords> expected = {
      {"s1",
       {{"config", "c1"}, {"meta", std::string("\0\1\2", 3)}, {"empty", ""}}}};
  EXPECT_EQ(*all, expected);
  absl::StatusOr<SessionRecords> one = store_->Load("s1");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, expected.at("s1"));
  EXPECT_EQ(store_->Load("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, OneWriteUpdatesDeletesAndReplacesManySessions) {
  StateWrite first;
  first.sessions.push_back(Records("a", {Put("config", "a"), Put("k1", "1")}));
  first.sessions.push_back(Records("b", {Put("config", "b"), Put("k1", "1")}));
  first.sessions.push_back(Records("c", {Put("config", "c")}));
  ASSERT_TRUE(store_->Write(first).ok());

  StateWrite second;
  second.deleted_sessions = {"c"};
  second.sessions.push_back(
      Records("a", {Put("k1", "one"), Put("k2", "2"), Erase("config")}));
  second.sessions.push_back(Records("b", {Put("config", "B")}, true));
  // Deleted and created again in the same write: only the new records stay.
  second.sessions.push_back(Records("c", {Put("fresh", "x")}));
  ASSERT_TRUE(store_->Write(second).ok());

  absl::StatusOr<std::map<std::string, SessionRecords>> all = store_->LoadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  const std::map<std::string, SessionRecords> expected = {
      {"a", {{"k1", "one"}, {"k2", "2"}}},
      {"b", {{"config", "B"}}},
      {"c", {{"fresh", "x"}}}};
  EXPECT_EQ(*all, expected);
}

TEST_F(SqliteStateStoreTest, DeleteRemovesEveryRowAndIsOkWhenAbsent) {
  StateWrite write;
  write.sessions.push_back(Records("gone", {Put("config", "g"), Put("x", "")}));
  write.sessions.push_back(Records("kept", {Put("config", "k")}));
  ASSERT_TRUE(store_->Write(write).ok());
  ASSERT_TRUE(store_->Delete("gone").ok());
  EXPECT_TRUE(store_->Delete("never").ok());
  Reopen();
  absl::StatusOr<std::map<std::string, SessionRecords>> all = store_->LoadAll();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(all->count("kept"), 1u);
  EXPECT_EQ(store_->Load("gone").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, DatabaseIsInWalModeAndMarkedAsCkads) {
  store_.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path().c_str(), &db), SQLITE_OK);
  auto pragma = [db](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    std::string value(
        reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
    sqlite3_finalize(stmt);
    return value;
  };
  EXPECT_EQ(pragma("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(pragma("PRAGMA application_id"),
            std::to_string(SqliteStateStore::kApplicationId));
  EXPECT_EQ(pragma("PRAGMA user_version"),
            std::to_string(SqliteStateStore::kSchemaVersion));
  sqlite3_close(db);
}

// README (Durability) promises a WAL journal and synchronous=FULL: journal_mode
// is a property of the file, synchronous one of ckad's own connection.
TEST_F(SqliteStateStoreTest, ConnectionRunsWithWalJournalAndSynchronousFull) {
  absl::StatusOr<SqliteStateStore::Pragmas> pragmas = store_->ReadPragmas();
  ASSERT_TRUE(pragmas.ok()) << pragmas.status();
  EXPECT_EQ(pragmas->journal_mode, "wal");
  constexpr int kSynchronousFull = 2;  // PRAGMA synchronous: 0 OFF … 3 EXTRA
  EXPECT_EQ(pragmas->synchronous, kSynchronousFull);
  // And again on a database that existed before (the pragmas are set on every
  // open, not only at creation).
  Reopen();
  pragmas = store_->ReadPragmas();
  ASSERT_TRUE(pragmas.ok()) << pragmas.status();
  EXPECT_EQ(pragmas->journal_mode, "wal");
  EXPECT_EQ(pragmas->synchronous, kSynchronousFull);
}

TEST_F(SqliteStateStoreTest, UnknownVfsIsRefusedAsInvalidArgument) {
  store_.reset();
  absl::Status status = SqliteStateStore::Open(dir_, "no-such-vfs").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(Contains(status, "no-such-vfs")) << status;
}

TEST_F(SqliteStateStoreTest, SecondStoreOnTheSameDirectoryIsRefused) {
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> second =
      SqliteStateStore::Open(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(second.status(), "in use by another ckad"));
}

TEST_F(SqliteStateStoreTest, DamagedDatabaseIsRefusedAsDataLoss) {
  StateWrite write;
  for (int i = 0; i < 50; ++i) {
    write.sessions.push_back(Records("s" + std::to_string(i),
                                     {Put("config", std::string(300, 'c'))}));
  }
  ASSERT_TRUE(store_->Write(write).ok());
  store_.reset();
  // Garbage over page 2, the root of the sessions table.
  const uintmax_t size = fs::file_size(db_path());
  ASSERT_GE(size, 3 * 4096u);
  {
    std::fstream f(db_path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    f << std::string(4096, '\xab');
  }
  absl::Status status = SqliteStateStore::Open(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(Contains(status, db_path())) << status;
  EXPECT_TRUE(Contains(status, "damaged")) << status;
  EXPECT_EQ(fs::file_size(db_path()), size);
}

TEST_F(SqliteStateStoreTest, SqliteDatabaseOfAnotherApplicationIsRefused) {
  store_.reset();
  fs::remove(db_path());
  RunSql(db_path(), "CREATE TABLE photos(id INTEGER PRIMARY KEY, jpeg BLOB)");
  absl::Status status = SqliteStateStore::Open(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(Contains(status, "another application")) << status;
  EXPECT_TRUE(Contains(status, db_path())) << status;
  // Untouched: the other application's table is still the only one.
  RunSql(db_path(), "SELECT count(*) FROM photos");
}

TEST_F(SqliteStateStoreTest, CkadDatabaseOfAnUnknownSchemaVersionIsRefused) {
  store_.reset();
  RunSql(db_path(), "PRAGMA user_version = 99");
  absl::Status status = SqliteStateStore::Open(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(Contains(status, "schema version 99")) << status;
}

TEST_F(SqliteStateStoreTest, FileThatIsNotSqliteIsRefusedAndLeftAlone) {
  store_.reset();
  const std::string junk(10000, 'j');
  {
    std::ofstream out(db_path(), std::ios::binary | std::ios::trunc);
    out << junk;
  }
  absl::Status status = SqliteStateStore::Open(dir_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(Contains(status, "not an SQLite database")) << status;
  std::ifstream in(db_path(), std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), junk);
}

TEST_F(SqliteStateStoreTest, SessionRecordsRoundTripThroughFromRecords) {
  core::SessionConfig config;
  absl::StatusOr<std::unique_ptr<core::Session>> session =
      core::Session::Create(config);
  ASSERT_TRUE(session.ok());
  StateWrite write;
  write.sessions.push_back(Records("s", (*session)->TakeChanges().records));
  ASSERT_TRUE(store_->Write(write).ok());
  Reopen();
  absl::StatusOr<SessionRecords> records = store_->Load("s");
  ASSERT_TRUE(records.ok());
  absl::StatusOr<std::unique_ptr<core::Session>> restored =
      core::Session::FromRecords(*records);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->Serialize(), (*session)->Serialize());
}

TEST(SqliteStateStoreOpenTest, CreatesMissingDirectoriesAndRejectsAnEmptyPath) {
  const std::string base = NewTempDir();
  const std::string nested = base + "/a/b";
  EXPECT_TRUE(SqliteStateStore::Open(nested).ok());
  EXPECT_TRUE(fs::exists(nested + "/ckad.db"));
  EXPECT_EQ(SqliteStateStore::Open("").status().code(),
            absl::StatusCode::kInvalidArgument);
  { std::ofstream(base + "/file") << "x"; }
  EXPECT_FALSE(SqliteStateStore::Open(base + "/file").ok());
  fs::remove_all(base);
}

}  // namespace
}  // namespace cka::server
