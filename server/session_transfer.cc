#include "server/session_transfer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cka/core/config.h"
#include "cka/core/session.h"
#include "server/sqlite_state_store.h"

namespace cka::server {
namespace {

absl::Status IoError(const std::string& what, const std::string& path,
                     int err) {
  return absl::UnavailableError(
      absl::StrCat(what, " '", path, "': ", std::strerror(err)));
}

absl::Status WriteFileDurably(const std::string& path,
                              const std::string& bytes) {
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create", temp, errno);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return IoError("cannot write", temp, err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return IoError("cannot write", temp, err);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return IoError("cannot rename to", path, err);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ExportSession(const std::string& data_dir,
                           const std::string& session_id,
                           const std::string& file) {
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
      SqliteStateStore::Open(data_dir);
  if (!store.ok()) return store.status();
  absl::StatusOr<SessionRecords> records = (*store)->Load(session_id);
  if (!records.ok()) return records.status();
  absl::StatusOr<std::unique_ptr<core::Session>> session =
      core::Session::FromRecords(*records);
  if (!session.ok()) {
    return absl::Status(
        session.status().code(),
        absl::StrCat("session '", session_id, "' in '", (*store)->path(),
                     "': ", session.status().message()));
  }
  return WriteFileDurably(file, (*session)->Serialize());
}

absl::Status ImportSession(const std::string& data_dir, const std::string& file,
                           const std::string& session_id) {
  if (absl::Status s = core::ValidateName("--import-session", session_id);
      !s.ok()) {
    return s;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return IoError("cannot open", file, errno);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return IoError("cannot read", file, errno);
  // Restore checks the whole file (its checksum and every record) before
  // anything is written.
  absl::StatusOr<std::unique_ptr<core::Session>> session =
      core::Session::Restore(bytes.str());
  if (!session.ok()) {
    return absl::Status(
        session.status().code(),
        absl::StrCat("'", file, "' is not a complete ckad session export: ",
                     session.status().message(), "; nothing was imported"));
  }
  absl::StatusOr<std::unique_ptr<SqliteStateStore>> store =
      SqliteStateStore::Open(data_dir);
  if (!store.ok()) return store.status();
  absl::StatusOr<SessionRecords> existing = (*store)->Load(session_id);
  if (existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "session '", session_id, "' is already stored in '", (*store)->path(),
        "'; delete it first or import under another --import-session"));
  }
  if (existing.status().code() != absl::StatusCode::kNotFound) {
    return existing.status();
  }
  StateWrite write;
  StateWrite::Session& s = write.sessions.emplace_back();
  s.session_id = session_id;
  s.replace = true;
  s.records = (*session)->AllRecords().records;
  return (*store)->Write(write);
}

}  // namespace cka::server
