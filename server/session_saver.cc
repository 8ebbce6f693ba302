#include "server/session_saver.h"

#include <utility>

#include "spdlog/spdlog.h"

namespace cka::server {

SessionSaver::SessionSaver(core::Engine* engine, core::StateStore* store,
                           absl::Duration interval)
    : engine_(engine),
      store_(store),
      interval_(interval),
      thread_([this] { Run(); }) {}

SessionSaver::~SessionSaver() { Stop().IgnoreError(); }

void SessionSaver::MarkChanged(const std::string& id) {
  absl::MutexLock lock(&mu_);
  pending_[id] = Change::kChanged;
}

void SessionSaver::MarkDeleted(const std::string& id) {
  absl::MutexLock lock(&mu_);
  pending_[id] = Change::kDeleted;
}

absl::Status SessionSaver::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  return final_status_;
}

void SessionSaver::Run() {
  bool last_pass = false;
  while (!last_pass) {
    std::map<std::string, Change> changes;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_);
      last_pass = stopping_;
      changes.swap(pending_);
    }
    // Changes that arrive while this pass writes are picked up by the next one;
    // a session marked deleted during a pass that rewrote it gets its file
    // removed then.
    absl::Status status = Apply(changes);
    if (last_pass) {
      absl::MutexLock lock(&mu_);
      final_status_ = std::move(status);
    }
  }
}

absl::Status SessionSaver::Apply(const std::map<std::string, Change>& changes) {
  absl::Status first_error;
  for (const auto& [id, change] : changes) {
    absl::Status status;
    if (change == Change::kDeleted) {
      status = store_->Delete(id);
    } else {
      absl::StatusOr<std::shared_ptr<core::Session>> session =
          engine_->GetSession(id);
      if (!session.ok())
        continue;  // deleted meanwhile; its kDeleted mark follows
      status = store_->Put(id, (*session)->Serialize());
    }
    if (!status.ok()) {
      spdlog::error("cannot save session '{}': {}", id, status.ToString());
      first_error.Update(status);
      // Retry at the next pass unless something newer was recorded meanwhile.
      absl::MutexLock lock(&mu_);
      pending_.emplace(id, change);
    }
  }
  return first_error;
}

}  // namespace cka::server
