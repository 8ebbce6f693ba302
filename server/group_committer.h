// Makes committed batches durable in groups: one writer thread, one SQLite
// transaction per round, for every session that changed.
#ifndef CKA_SERVER_GROUP_COMMITTER_H_
#define CKA_SERVER_GROUP_COMMITTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/core/engine.h"
#include "server/sqlite_state_store.h"

namespace cka::server {

// Keeps `store` in step with `engine`.
//
// Rounds: the writer thread wakes when something is waiting, at most once per
// `interval`, takes every waiting callback, calls Session::TakeChanges on every
// session marked changed, writes all their records in one transaction
// (durable when it commits: synchronous=FULL), then calls the callbacks. A
// callback registered before a round starts is answered by that round, and
// the round's TakeChanges runs after the registration, so it holds every
// commit that returned before the registration: its records are durable when
// the callback gets OK.
//
// When a write fails the callbacks of the round get its Unavailable error and
// the sessions of the round are rewritten whole at the next round (their
// taken changes are lost from memory, not from the session).
//
// Deletion and the engine: DeleteSession removes the session from the engine
// and queues the deletion of its rows under one lock; a round writes a session
// only if the engine still holds that very Session object, and applies the
// deletions it took before its writes. So a pending write never brings a
// deleted session back, and a session created again under the same id keeps
// its new rows.
//
// Thread-safe. Callbacks run on the writer thread (or inline, after Stop);
// they must not block. `engine` and `store` must outlive the committer.
class GroupCommitter {
 public:
  using Callback = absl::AnyInvocable<void(absl::Status)>;
  // Called on the writer thread after each round that wrote, with the time
  // the write took and the number of waiters (acks, creations, deletions)
  // it answered; must not block.
  using RoundObserver = std::function<void(absl::Duration, int64_t)>;

  GroupCommitter(core::Engine* engine, SqliteStateStore* store,
                 absl::Duration interval = absl::Milliseconds(2),
                 RoundObserver on_round = nullptr);
  // Calls Stop().
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Calls `done` once every change `session` (held by the engine as
  // `session_id`) had when this call began is durable: OK, or Unavailable when
  // the write failed. `version` is the IngestResult::version the caller waits
  // for (0: whatever is committed now, e.g. for a duplicate or a new session).
  // After Stop, calls `done` at once with Unavailable.
  void AwaitDurable(const std::string& session_id,
                    std::shared_ptr<core::Session> session, uint64_t version,
                    Callback done);

  // Deletes session `id` from the engine and then its rows from the store;
  // calls `done` with the engine's error (NotFound, at once), or when the rows
  // are gone (OK) or could not be removed (Unavailable; retried at the next
  // round).
  void DeleteSession(const std::string& id, Callback done);

  // Runs a last round over everything marked, then stops the writer thread;
  // returns the error of that round. Idempotent.
  absl::Status Stop();

 private:
  struct Marked {
    std::string id;
    std::shared_ptr<core::Session> session;
    bool rewrite = false;  // write AllRecords, replacing the stored rows
  };
  struct Waiter {
    core::Session* session = nullptr;  // null for a deletion
    uint64_t version = 0;
    Callback done;
  };

  void Run();
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !waiters_.empty() || !marked_.empty() || !deleted_.empty();
  }
  // Runs one round; returns the status of its write.
  absl::Status Round();

  core::Engine* const engine_;
  SqliteStateStore* const store_;
  const absl::Duration interval_;
  const RoundObserver on_round_;

  absl::Mutex mu_;
  std::map<core::Session*, Marked> marked_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> deleted_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_GROUP_COMMITTER_H_
