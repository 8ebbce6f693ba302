// The durable state of ckad: one SQLite database that holds every session as
// the keyed records of core::Session (see Session::TakeChanges).
#ifndef CKA_SERVER_SQLITE_STATE_STORE_H_
#define CKA_SERVER_SQLITE_STATE_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/session.h"

struct sqlite3;
struct sqlite3_stmt;

namespace cka::server {

// A session's records: key → value.
using SessionRecords = std::map<std::string, std::string>;

// What one transaction writes to the store.
struct StateWrite {
  // The records of one session: upserts, and deletions where
  // StateRecord::deleted. With `replace`, every earlier record of the session
  // is removed first (the records are then all of them).
  struct Session {
    std::string session_id;
    bool replace = false;
    std::vector<core::StateRecord> records;
  };
  // Sessions whose rows are removed; applied before `sessions`, so a session
  // deleted and created again in one write keeps only its new records.
  std::vector<std::string> deleted_sessions;
  std::vector<Session> sessions;
};

// Keeps sessions in `<dir>/ckad.db`: WAL journal, synchronous=FULL (a
// committed transaction survives a crash of the process or the machine),
// tables sessions(session_id) and records(session_id, key, value), marked as
// ckad's by PRAGMA application_id and versioned by PRAGMA user_version.
//
// Thread-safe: calls are serialised by one mutex. One store per directory at a
// time: Open refuses a directory that another store holds (flock on
// `<dir>/LOCK`, held until the store is destroyed).
class SqliteStateStore {
 public:
  // The database file's name inside the data directory.
  static constexpr char kFileName[] = "ckad.db";
  // PRAGMA application_id of a ckad database: "CKAD" in ASCII.
  static constexpr int32_t kApplicationId = 0x434B4144;
  // PRAGMA user_version: the schema this code reads and writes.
  static constexpr int32_t kSchemaVersion = 1;

  // Opens (or creates) the database of `dir`, creating the directory if
  // needed, and checks it with PRAGMA quick_check. `vfs` names the registered
  // SQLite VFS that does the file I/O (empty: SQLite's default; tests pass one
  // that injects disk faults). InvalidArgument for an empty path or an unknown
  // VFS; FailedPrecondition, naming the file, for a file that is not an
  // SQLite database, an SQLite database of another application or of an
  // unknown schema version, or a directory another store holds; DataLoss,
  // naming the file, when the database is damaged; Unavailable on an I/O
  // error. Never changes an existing file it refuses.
  static absl::StatusOr<std::unique_ptr<SqliteStateStore>> Open(
      const std::string& dir, const std::string& vfs = "");

  // Closes the database and releases the directory.
  ~SqliteStateStore();
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  // Returns every stored session: id → records. Unavailable or DataLoss
  // (naming the file) when the database cannot be read.
  absl::StatusOr<std::map<std::string, SessionRecords>> LoadAll() const;
  // Returns the records of `session_id`; NotFound when it is not stored.
  absl::StatusOr<SessionRecords> Load(const std::string& session_id) const;

  // Applies `write` in one transaction and commits it durably: after an OK
  // return all of it survives a crash; on error none of it is applied.
  // Unavailable (naming the file and SQLite's error) on failure.
  absl::Status Write(const StateWrite& write);

  // Removes the rows of `session_id` (a Write with one deleted session); OK
  // when it is not stored.
  absl::Status Delete(const std::string& session_id);

  // What the store's own connection runs with: PRAGMA journal_mode ("wal")
  // and PRAGMA synchronous (2 = FULL). synchronous is a setting of the
  // connection, not of the file, so only the store can answer it.
  struct Pragmas {
    std::string journal_mode;
    int synchronous = -1;
  };
  // Returns the pragmas of the store's connection; Unavailable when SQLite
  // cannot answer.
  absl::StatusOr<Pragmas> ReadPragmas() const;

  // Returns the path of the database file.
  const std::string& path() const { return path_; }

 private:
  SqliteStateStore(std::string path, int lock_fd, sqlite3* db)
      : path_(std::move(path)), lock_fd_(lock_fd), db_(db) {}

  // Returns an error status for SQLite result `rc` while doing `what`.
  absl::Status SqlError(int rc, const char* what) const;
  absl::Status Exec(const char* sql);
  absl::Status WriteLocked(const StateWrite& write)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const int lock_fd_;  // open on <dir>/LOCK and flock'ed
  mutable absl::Mutex mu_;
  sqlite3* const db_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_SQLITE_STATE_STORE_H_
