// A core::StateStore that keeps one file per session in a directory.
#ifndef CKA_SERVER_FILE_STATE_STORE_H_
#define CKA_SERVER_FILE_STATE_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/state_store.h"

namespace cka::server {

// Keeps the state of session `id` in `<dir>/<hex(id)>.session`: a header
// (magic, format version, payload length, FNV-1a 64 checksum) followed by the
// bytes given to Put. Put writes a temporary file, fsyncs it, renames it over
// the old one and fsyncs the directory, so a crash leaves either the old or the
// new state, never a mix. Session ids are hex-encoded so that any id is a safe
// file name.
//
// Thread-safe: calls are serialised by one mutex. One store per directory at a
// time: Open refuses a directory that another store holds.
class FileStateStore : public core::StateStore {
 public:
  // Opens `dir`, creating it (and its parents) if needed, locks it (flock on
  // `<dir>/LOCK`, held until the store is destroyed) and removes temporary
  // files a crash left behind. InvalidArgument for an empty path; Unavailable
  // when the directory cannot be created or written; FailedPrecondition when
  // another store, in this process or another, holds the directory.
  static absl::StatusOr<std::unique_ptr<FileStateStore>> Open(
      const std::string& dir);

  // Releases the directory's lock.
  ~FileStateStore() override;
  FileStateStore(const FileStateStore&) = delete;
  FileStateStore& operator=(const FileStateStore&) = delete;

  // Replaces the stored state of `session_id`. Unavailable on an I/O error (the
  // message names the file and the error).
  absl::Status Put(std::string_view session_id,
                   std::string_view state) override;
  // Returns the state of `session_id`: NotFound when there is no file;
  // DataLoss, naming the file, when its header, length or checksum is wrong.
  absl::StatusOr<std::string> Get(std::string_view session_id) const override;
  // Removes the file of `session_id`; OK when there is none.
  absl::Status Delete(std::string_view session_id) override;
  // Returns the ids of all session files, sorted. DataLoss, naming the file,
  // for a session file whose name is not valid hex.
  absl::StatusOr<std::vector<std::string>> List() const override;

  // Returns the path of the file that holds `session_id`.
  std::string PathFor(std::string_view session_id) const;
  const std::string& dir() const { return dir_; }

 private:
  FileStateStore(std::string dir, int lock_fd)
      : dir_(std::move(dir)), lock_fd_(lock_fd) {}

  const std::string dir_;
  const int lock_fd_;  // open on <dir>/LOCK and flock'ed
  mutable absl::Mutex mu_;
  int64_t temp_counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cka::server

#endif  // CKA_SERVER_FILE_STATE_STORE_H_
