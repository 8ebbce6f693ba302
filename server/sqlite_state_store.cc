#include "server/sqlite_state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

constexpr char kSchema[] =
    "CREATE TABLE sessions("
    "  session_id TEXT PRIMARY KEY NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE records("
    "  session_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value BLOB NOT NULL,"
    "  PRIMARY KEY (session_id, key)"
    ") WITHOUT ROWID;";

absl::Status IoError(const std::string& what, const std::string& path,
                     int err) {
  return absl::UnavailableError(
      absl::StrCat(what, " '", path, "': ", std::strerror(err)));
}

// A prepared statement, finalised when it goes out of scope.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  int prepare_rc() const { return rc_; }
  sqlite3_stmt* get() const { return stmt_; }

  void BindText(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                      SQLITE_STATIC);
  }
  void BindBlob(int index, const std::string& bytes) {
    // A zero-length blob with a null pointer would be bound as NULL.
    sqlite3_bind_blob(stmt_, index, bytes.empty() ? "" : bytes.data(),
                      static_cast<int>(bytes.size()), SQLITE_STATIC);
  }
  std::string ColumnBytes(int index) const {
    const void* p = sqlite3_column_blob(stmt_, index);
    const int n = sqlite3_column_bytes(stmt_, index);
    return p == nullptr ? std::string()
                        : std::string(static_cast<const char*>(p), n);
  }
  // Runs a statement that returns no rows, then resets it for the next
  // bindings.
  int Run() {
    const int rc = sqlite3_step(stmt_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return rc == SQLITE_ROW ? SQLITE_DONE : rc;
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// Steps `stmt` while *rc is OK or a row; returns true with *rc == SQLITE_ROW
// for each row, then false with the final code (SQLITE_DONE at the end).
bool NextRow(const Statement& stmt, int* rc) {
  if (*rc != SQLITE_OK && *rc != SQLITE_ROW) return false;
  *rc = sqlite3_step(stmt.get());
  return *rc == SQLITE_ROW;
}

// Returns the name of SQLite's extended result code `rc` where it says which
// disk operation failed, else null.
const char* DiskErrorName(int rc) {
  switch (rc) {
    case SQLITE_FULL:
      return "SQLITE_FULL: the disk is full";
    case SQLITE_IOERR_WRITE:
      return "SQLITE_IOERR_WRITE: a write failed";
    case SQLITE_IOERR_FSYNC:
      return "SQLITE_IOERR_FSYNC: an fsync failed";
    case SQLITE_IOERR_DIR_FSYNC:
      return "SQLITE_IOERR_DIR_FSYNC: an fsync of the directory failed";
    case SQLITE_IOERR_TRUNCATE:
      return "SQLITE_IOERR_TRUNCATE: a truncate failed";
    case SQLITE_IOERR_READ:
      return "SQLITE_IOERR_READ: a read failed";
    case SQLITE_IOERR_SHORT_READ:
      return "SQLITE_IOERR_SHORT_READ: a read came back short";
    case SQLITE_IOERR_FSTAT:
      return "SQLITE_IOERR_FSTAT: an fstat failed";
    default:
      return nullptr;
  }
}

// Returns `message` (default: SQLite's message for the last error on `db`)
// and, for a disk error (result `rc`), which operation failed: "disk I/O
// error (SQLITE_IOERR_FSYNC: an fsync failed)". (The system's errno is not
// reported: SQLite does not record it for a failed COMMIT.)
std::string DescribeError(sqlite3* db, int rc, const char* message = nullptr) {
  std::string out = message != nullptr ? message
                    : db != nullptr    ? sqlite3_errmsg(db)
                                       : sqlite3_errstr(rc);
  if (const char* name = DiskErrorName(rc); name != nullptr)
    absl::StrAppend(&out, " (", name, ")");
  return out;
}

bool IsDamage(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}

// Returns the single integer a pragma answers, or an error.
absl::StatusOr<int64_t> PragmaInt(sqlite3* db, const char* sql,
                                  const std::string& path) {
  Statement stmt(db, sql);
  int rc = stmt.prepare_rc();
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_ROW) return sqlite3_column_int64(stmt.get(), 0);
  const std::string message =
      absl::StrCat("'", path, "': ", DescribeError(db, rc));
  if ((rc & 0xff) == SQLITE_NOTADB) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", path, "' is not an SQLite database, so not a ckad database"));
  }
  if (IsDamage(rc)) {
    return absl::DataLossError(absl::StrCat("database damaged: ", message));
  }
  return absl::UnavailableError(absl::StrCat("cannot read ", message));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStateStore>> SqliteStateStore::Open(
    const std::string& dir, const std::string& vfs) {
  if (dir.empty()) return absl::InvalidArgumentError("--data-dir: empty path");
  if (!vfs.empty() && sqlite3_vfs_find(vfs.c_str()) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("no SQLite VFS named '", vfs, "' is registered"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "--data-dir '", dir, "': cannot create directory: ", ec.message()));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::UnavailableError(
        absl::StrCat("--data-dir '", dir, "': not a directory"));
  }
  const std::string lock_path = absl::StrCat(dir, "/LOCK");
  const int lock_fd =
      ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return IoError("cannot open", lock_path, errno);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("--data-dir '", dir, "' is in use by another ckad (",
                       lock_path, " is locked)"));
    }
    return IoError("cannot lock", lock_path, err);
  }

  const std::string path = absl::StrCat(dir, "/", kFileName);
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      vfs.empty() ? nullptr : vfs.c_str());
  if (rc != SQLITE_OK) {
    const std::string error =
        db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    ::close(lock_fd);
    return absl::UnavailableError(
        absl::StrCat("cannot open '", path, "': ", error));
  }
  // From here on the store owns `db` and `lock_fd`.
  std::unique_ptr<SqliteStateStore> store(
      new SqliteStateStore(path, lock_fd, db));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);

  // Identify the file before changing anything in it.
  absl::StatusOr<int64_t> application_id =
      PragmaInt(db, "PRAGMA application_id", path);
  if (!application_id.ok()) return application_id.status();
  absl::StatusOr<int64_t> user_version =
      PragmaInt(db, "PRAGMA user_version", path);
  if (!user_version.ok()) return user_version.status();
  absl::StatusOr<int64_t> objects =
      PragmaInt(db, "SELECT count(*) FROM sqlite_schema", path);
  if (!objects.ok()) return objects.status();
  const bool fresh =
      *application_id == 0 && *user_version == 0 && *objects == 0;
  if (!fresh) {
    if (*application_id != kApplicationId) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "'%s' is an SQLite database of another application (application_id "
          "0x%08x, ckad's is 0x%08x); ckad does not start over it",
          path, static_cast<uint32_t>(*application_id),
          static_cast<uint32_t>(kApplicationId)));
    }
    if (*user_version != kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "'%s' has schema version %d, this ckad reads version %d only", path,
          *user_version, kSchemaVersion));
    }
    Statement check(db, "PRAGMA quick_check");
    rc = check.prepare_rc();
    std::string problems;
    int lines = 0;
    while (NextRow(check, &rc)) {
      const std::string line = check.ColumnBytes(0);
      if (line == "ok") continue;
      if (lines++ < 3)
        absl::StrAppend(&problems, problems.empty() ? "" : "; ", line);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK) {
      if (IsDamage(rc)) {
        return absl::DataLossError(absl::StrCat(
            "database '", path, "' is damaged: ", sqlite3_errmsg(db)));
      }
      return store->SqlError(rc, "PRAGMA quick_check");
    }
    if (lines > 0) {
      return absl::DataLossError(absl::StrCat(
          "database '", path, "' is damaged (quick_check: ", problems, ")"));
    }
  }

  if (absl::Status s = store->Exec("PRAGMA journal_mode=WAL"); !s.ok())
    return s;
  if (absl::Status s = store->Exec("PRAGMA synchronous=FULL"); !s.ok())
    return s;
  if (fresh) {
    const std::string create = absl::StrCat(
        "BEGIN IMMEDIATE;", kSchema, "PRAGMA application_id=", kApplicationId,
        ";PRAGMA user_version=", kSchemaVersion, ";COMMIT;");
    if (absl::Status s = store->Exec(create.c_str()); !s.ok()) return s;
  }
  return store;
}

SqliteStateStore::~SqliteStateStore() {
  sqlite3_close_v2(db_);
  ::close(lock_fd_);
}

absl::Status SqliteStateStore::SqlError(int rc, const char* what) const {
  const std::string message =
      absl::StrCat(what, " on '", path_, "': ", DescribeError(db_, rc));
  if (IsDamage(rc)) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

absl::Status SqliteStateStore::Exec(const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc == SQLITE_OK) return absl::OkStatus();
  const std::string message =
      absl::StrCat("'", path_, "': ", DescribeError(db_, rc, error));
  sqlite3_free(error);
  if (IsDamage(rc)) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

absl::StatusOr<SqliteStateStore::Pragmas> SqliteStateStore::ReadPragmas()
    const {
  absl::MutexLock lock(&mu_);
  Pragmas pragmas;
  {
    Statement journal(db_, "PRAGMA journal_mode");
    int rc = journal.prepare_rc();
    if (rc == SQLITE_OK) rc = sqlite3_step(journal.get());
    if (rc != SQLITE_ROW) return SqlError(rc, "reading PRAGMA journal_mode");
    pragmas.journal_mode = journal.ColumnBytes(0);
  }
  absl::StatusOr<int64_t> synchronous =
      PragmaInt(db_, "PRAGMA synchronous", path_);
  if (!synchronous.ok()) return synchronous.status();
  pragmas.synchronous = static_cast<int>(*synchronous);
  return pragmas;
}

absl::StatusOr<std::map<std::string, SessionRecords>>
SqliteStateStore::LoadAll() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, SessionRecords> sessions;
  {
    Statement ids(db_, "SELECT session_id FROM sessions");
    int rc = ids.prepare_rc();
    while (NextRow(ids, &rc)) {
      sessions[ids.ColumnBytes(0)];
    }
    if (rc != SQLITE_DONE) return SqlError(rc, "reading the sessions");
  }
  Statement records(db_, "SELECT session_id, key, value FROM records");
  int rc = records.prepare_rc();
  while (NextRow(records, &rc)) {
    sessions[records.ColumnBytes(0)][records.ColumnBytes(1)] =
        records.ColumnBytes(2);
  }
  if (rc != SQLITE_DONE) return SqlError(rc, "reading the records");
  return sessions;
}

absl::StatusOr<SessionRecords> SqliteStateStore::Load(
    const std::string& session_id) const {
  absl::MutexLock lock(&mu_);
  {
    Statement exists(db_, "SELECT 1 FROM sessions WHERE session_id = ?1");
    int rc = exists.prepare_rc();
    if (rc == SQLITE_OK) {
      exists.BindText(1, session_id);
      rc = sqlite3_step(exists.get());
    }
    if (rc == SQLITE_DONE) {
      return absl::NotFoundError(absl::StrCat(
          "session '", session_id, "' is not stored in '", path_, "'"));
    }
    if (rc != SQLITE_ROW) return SqlError(rc, "reading the sessions");
  }
  SessionRecords out;
  Statement records(db_,
                    "SELECT key, value FROM records WHERE session_id = ?1");
  int rc = records.prepare_rc();
  if (rc == SQLITE_OK) records.BindText(1, session_id);
  while (NextRow(records, &rc)) {
    out[records.ColumnBytes(0)] = records.ColumnBytes(1);
  }
  if (rc != SQLITE_DONE) return SqlError(rc, "reading the records");
  return out;
}

absl::Status SqliteStateStore::Write(const StateWrite& write) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status status = WriteLocked(write);
  if (status.ok()) status = Exec("COMMIT");
  if (!status.ok()) {
    // After a failed COMMIT SQLite may already have rolled back; the error of
    // a second rollback says nothing new.
    Exec("ROLLBACK").IgnoreError();
  }
  return status;
}

absl::Status SqliteStateStore::WriteLocked(const StateWrite& write) {
  Statement delete_records(db_, "DELETE FROM records WHERE session_id = ?1");
  Statement delete_session(db_, "DELETE FROM sessions WHERE session_id = ?1");
  Statement insert_session(
      db_, "INSERT OR IGNORE INTO sessions(session_id) VALUES (?1)");
  Statement upsert(db_,
                   "INSERT OR REPLACE INTO records(session_id, key, value) "
                   "VALUES (?1, ?2, ?3)");
  Statement delete_record(
      db_, "DELETE FROM records WHERE session_id = ?1 AND key = ?2");
  for (const Statement* s : {&delete_records, &delete_session, &insert_session,
                             &upsert, &delete_record}) {
    if (s->prepare_rc() != SQLITE_OK) {
      return SqlError(s->prepare_rc(), "preparing a write");
    }
  }
  auto check = [this](int rc, const char* what) {
    return rc == SQLITE_DONE ? absl::OkStatus() : SqlError(rc, what);
  };
  for (const std::string& id : write.deleted_sessions) {
    delete_records.BindText(1, id);
    if (absl::Status s = check(delete_records.Run(), "deleting records");
        !s.ok())
      return s;
    delete_session.BindText(1, id);
    if (absl::Status s = check(delete_session.Run(), "deleting a session");
        !s.ok())
      return s;
  }
  for (const StateWrite::Session& session : write.sessions) {
    if (session.replace) {
      delete_records.BindText(1, session.session_id);
      if (absl::Status s = check(delete_records.Run(), "replacing records");
          !s.ok())
        return s;
    }
    insert_session.BindText(1, session.session_id);
    if (absl::Status s = check(insert_session.Run(), "adding a session");
        !s.ok())
      return s;
    for (const core::StateRecord& record : session.records) {
      Statement& stmt = record.deleted ? delete_record : upsert;
      stmt.BindText(1, session.session_id);
      stmt.BindText(2, record.key);
      if (!record.deleted) stmt.BindBlob(3, record.value);
      if (absl::Status s = check(stmt.Run(), "writing a record"); !s.ok())
        return s;
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteStateStore::Delete(const std::string& session_id) {
  StateWrite write;
  write.deleted_sessions.push_back(session_id);
  return Write(write);
}

}  // namespace cka::server
