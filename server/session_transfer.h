// Offline export and import of one session of a data directory, as the bytes
// of core::Session::Serialize (ckad --export-session / --import-session).
#ifndef CKA_SERVER_SESSION_TRANSFER_H_
#define CKA_SERVER_SESSION_TRANSFER_H_

#include <string>

#include "absl/status/status.h"

namespace cka::server {

// Writes session `session_id` of the database in `data_dir` to `file`
// (written to a temporary file, fsynced, then renamed over `file`). Errors of
// SqliteStateStore::Open (a data directory a running ckad holds is
// FailedPrecondition); NotFound when the session is not stored; DataLoss when
// its records are damaged; Unavailable when `file` cannot be written.
absl::Status ExportSession(const std::string& data_dir,
                           const std::string& session_id,
                           const std::string& file);

// Adds the session exported to `file` to the database in `data_dir` (created
// if needed) as `session_id`, in one transaction. InvalidArgument for a bad
// session id; Unavailable when `file` cannot be read; DataLoss when its bytes
// are not a complete, undamaged export; AlreadyExists when `session_id` is
// stored already; errors of SqliteStateStore::Open. Writes nothing on error.
absl::Status ImportSession(const std::string& data_dir, const std::string& file,
                           const std::string& session_id);

}  // namespace cka::server

#endif  // CKA_SERVER_SESSION_TRANSFER_H_
