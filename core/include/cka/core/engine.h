// The engine: every session of a ckad process, by id.
//
// Thread safety: every public method is thread-safe. Sessions are independent:
// ingestion into one never waits for another; the session map's lock is held
// only to find, add or remove.
#ifndef CKA_CORE_ENGINE_H_
#define CKA_CORE_ENGINE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/session.h"

namespace cka::core {

struct EngineLimits {
  int64_t max_sessions = 1024;
  SessionLimits session;
};

class Engine {
 public:
  explicit Engine(EngineLimits limits = {});

  // Creates session `id`. Idempotent: creating an existing id with an equal
  // config (after defaults) returns the existing session with *created = false.
  // AlreadyExists when the id exists with another config; InvalidArgument for a
  // bad id or config; ResourceExhausted at max_sessions or when the exact
  // measures need more than the memory budget.
  absl::StatusOr<std::shared_ptr<Session>> CreateSession(
      const std::string& id, SessionConfig config, bool* created = nullptr);

  // Returns session `id`, or NotFound; InvalidArgument for an id longer than
  // any session's (kMaxNameBytes). The pointer stays valid after
  // DeleteSession.
  absl::StatusOr<std::shared_ptr<Session>> GetSession(
      const std::string& id) const;

  // What Ingest did, and the session it went to (for the caller to wait for
  // its durability).
  struct Ingested {
    IngestResult result;
    std::shared_ptr<Session> session;
  };

  // The one entry point of a batch: finds session `session_id`, validates and
  // prices the batch, computes its kernels (on `pool`, when given) and commits
  // it, drawing every byte from the budgets of limits().session. NotFound for
  // an unknown session, else the codes of Session::Prepare and
  // Session::Commit; on any error the session is unchanged. A session deleted
  // meanwhile takes the batch with it.
  absl::StatusOr<Ingested> Ingest(const std::string& session_id,
                                  const BatchInput& batch,
                                  ThreadPool* pool = nullptr);

  // Removes session `id`; NotFound when there is none, InvalidArgument for an
  // id longer than kMaxNameBytes.
  absl::Status DeleteSession(const std::string& id);

  // Returns the ids of all sessions, sorted.
  std::vector<std::string> ListSessions() const;

  // Adds `session` (e.g. rebuilt by Session::FromRecords) under `id`.
  // AlreadyExists when the id is taken; InvalidArgument for a bad id;
  // ResourceExhausted at max_sessions.
  absl::Status AddSession(const std::string& id,
                          std::unique_ptr<Session> session);

  const EngineLimits& limits() const { return limits_; }

 private:
  const EngineLimits limits_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::core

#endif  // CKA_CORE_ENGINE_H_
