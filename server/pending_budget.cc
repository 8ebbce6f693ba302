#include "server/pending_budget.h"

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace cka::server {

PendingBudget::PendingBudget(const core::Engine* engine,
                             int64_t max_total_bytes)
    : engine_(engine), max_total_bytes_(max_total_bytes) {
  absl::MutexLock lock(&mu_);
  for (const std::string& id : engine_->ListSessions()) {
    absl::StatusOr<std::shared_ptr<core::Session>> session =
        engine_->GetSession(id);
    if (!session.ok()) continue;
    const int64_t bytes = (*session)->pending_bytes();
    pending_[id] = bytes;
    total_ += bytes;
  }
}

absl::Status PendingBudget::Reserve(int64_t bytes,
                                    const std::string& batch_id) {
  absl::MutexLock lock(&mu_);
  if (max_total_bytes_ > 0 && total_ + bytes > max_total_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("batch '", batch_id, "': ", bytes,
                     " bytes would take the join buffers of all sessions to ",
                     total_ + bytes, " bytes, over --max-pending-total-mb (",
                     max_total_bytes_,
                     " bytes); send the other streams of the pending "
                     "batches, or raise the limit"));
  }
  total_ += bytes;
  return absl::OkStatus();
}

void PendingBudget::Settle(int64_t reserved, const std::string& session_id,
                           const core::Session* session,
                           int64_t pending_bytes) {
  absl::MutexLock lock(&mu_);
  total_ -= reserved;
  // Checked under mu_: a DeleteSession that removes the session after this
  // check calls Forget after this Settle, and erases what it records.
  absl::StatusOr<std::shared_ptr<core::Session>> live =
      engine_->GetSession(session_id);
  if (!live.ok() || live->get() != session) return;
  int64_t& recorded = pending_[session_id];
  total_ += pending_bytes - recorded;
  recorded = pending_bytes;
}

void PendingBudget::Forget(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(session_id);
  if (it == pending_.end()) return;
  total_ -= it->second;
  pending_.erase(it);
}

int64_t PendingBudget::total() const {
  absl::MutexLock lock(&mu_);
  return total_;
}

}  // namespace cka::server
