// The join-buffer budget of all sessions together (--max-pending-total-mb).
#ifndef CKA_SERVER_PENDING_BUDGET_H_
#define CKA_SERVER_PENDING_BUDGET_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cka/core/engine.h"

namespace cka::server {

// Keeps the pending (join-buffer) bytes of every session as last seen after a
// commit, plus the bytes reserved by commits in flight, and refuses a commit
// whose batch could take the total over the limit. A commit may grow its
// session's join buffer by at most the batch's bytes, so reserving them before
// and settling after keeps the total within the limit even with many sessions
// committing at once. Thread-safe. `engine` must outlive the budget.
class PendingBudget {
 public:
  // Starts from the pending bytes of the sessions `engine` holds now (restored
  // ones). A `max_total_bytes` of 0 or less means no limit.
  PendingBudget(const core::Engine* engine, int64_t max_total_bytes);

  // Reserves `bytes` for one commit. ResourceExhausted naming
  // --max-pending-total-mb, the figures and the limit when the total would go
  // over it. Every OK must be followed by one Settle with the same `bytes`.
  absl::Status Reserve(int64_t bytes, const std::string& batch_id);

  // Releases a reservation of `reserved` bytes and records that session
  // `session_id` (the object `session`) now holds `pending_bytes`. Records
  // nothing when the engine no longer holds that object under that id
  // (deleted meanwhile).
  void Settle(int64_t reserved, const std::string& session_id,
              const core::Session* session, int64_t pending_bytes);

  // Forgets session `session_id`; call after deleting it from the engine.
  void Forget(const std::string& session_id);

  // Returns the recorded pending bytes of all sessions plus the reservations.
  int64_t total() const;

 private:
  const core::Engine* const engine_;
  const int64_t max_total_bytes_;
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> pending_ ABSL_GUARDED_BY(mu_);
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;  // sum of pending_ + reservations
};

}  // namespace cka::server

#endif  // CKA_SERVER_PENDING_BUDGET_H_
