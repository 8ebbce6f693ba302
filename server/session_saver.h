// Writes sessions to a StateStore in the background.
#ifndef CKA_SERVER_SESSION_SAVER_H_
#define CKA_SERVER_SESSION_SAVER_H_

#include <map>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cka/core/engine.h"
#include "cka/core/state_store.h"

namespace cka::server {

// Keeps `store` in step with `engine`: a session marked changed is written
// (Serialize + Put) at most once per `interval`, on a thread of its own, so
// that no RPC waits for disk; a session marked deleted has its stored state
// removed at the next pass. Stop() writes what is pending.
//
// Thread-safe. `engine` and `store` must outlive the saver.
class SessionSaver {
 public:
  SessionSaver(core::Engine* engine, core::StateStore* store,
               absl::Duration interval = absl::Seconds(1));
  // Calls Stop().
  ~SessionSaver();

  // Records that session `id` changed (created, or a batch applied). Never
  // blocks on I/O.
  void MarkChanged(const std::string& id);
  // Records that session `id` was deleted. Never blocks on I/O.
  void MarkDeleted(const std::string& id);

  // Stops the background thread after a last pass over everything pending, and
  // returns the first error of that pass (errors of earlier passes are logged).
  // Idempotent.
  absl::Status Stop();

 private:
  enum class Change { kChanged, kDeleted };

  void Run();
  // Writes or removes every session of `changes`; returns the first error.
  absl::Status Apply(const std::map<std::string, Change>& changes);

  core::Engine* const engine_;
  core::StateStore* const store_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  std::map<std::string, Change> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace cka::server

#endif  // CKA_SERVER_SESSION_SAVER_H_
