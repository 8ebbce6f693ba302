#include "server/group_committer.h"

#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace cka::server {
namespace {

// How long the writer waits after a failed write before it tries again, so
// that a full disk does not turn into a busy loop of error lines.
constexpr absl::Duration kRetryDelay = absl::Seconds(1);

absl::Status StoppedError() {
  return absl::UnavailableError(
      "ckad is shutting down and no longer writes to its data directory; "
      "resend after it restarts");
}

}  // namespace

GroupCommitter::GroupCommitter(core::Engine* engine, SqliteStateStore* store,
                               absl::Duration interval, RoundObserver on_round)
    : engine_(engine),
      store_(store),
      interval_(interval),
      on_round_(std::move(on_round)),
      thread_([this] { Run(); }) {}

GroupCommitter::~GroupCommitter() { Stop().IgnoreError(); }

void GroupCommitter::AwaitDurable(const std::string& session_id,
                                  std::shared_ptr<core::Session> session,
                                  uint64_t version, Callback done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      core::Session* key = session.get();
      auto [it, inserted] = marked_.try_emplace(key);
      if (inserted) {
        it->second.id = session_id;
        it->second.session = std::move(session);
      }
      waiters_.push_back(Waiter{key, version, std::move(done)});
      return;
    }
  }
  done(StoppedError());
}

void GroupCommitter::DeleteSession(const std::string& id, Callback done) {
  absl::Status status = StoppedError();
  {
    absl::MutexLock lock(&mu_);
    if (!stopped_) {
      // Under mu_, so that no round sees the session in the engine after its
      // deletion is queued (see the class comment).
      status = engine_->DeleteSession(id);
      if (status.ok()) {
        deleted_.push_back(id);
        waiters_.push_back(Waiter{nullptr, 0, std::move(done)});
        return;
      }
    }
  }
  done(std::move(status));
}

absl::Status GroupCommitter::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  return final_status_;
}

void GroupCommitter::Run() {
  absl::Time last_round = absl::InfinitePast();
  while (true) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](GroupCommitter* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
            return c->stopping_ || c->HasWorkLocked();
          },
          this));
      // Group commit: what arrives while the interval runs out joins this
      // round.
      mu_.AwaitWithDeadline(absl::Condition(&stopping_),
                            last_round + interval_);
      last = stopping_;
    }
    last_round = absl::Now();
    absl::Status status = Round();
    if (last) {
      std::vector<Waiter> late;
      {
        absl::MutexLock lock(&mu_);
        final_status_ = status;
        stopped_ = true;
        late.swap(waiters_);
      }
      for (Waiter& w : late) w.done(StoppedError());
      return;
    }
    if (!status.ok()) {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), kRetryDelay);
    }
  }
}

absl::Status GroupCommitter::Round() {
  std::vector<Waiter> waiters;
  std::vector<std::string> deleted;
  std::vector<Marked> to_write;
  {
    absl::MutexLock lock(&mu_);
    waiters.swap(waiters_);
    deleted.swap(deleted_);
    for (auto& [key, marked] : marked_) {
      absl::StatusOr<std::shared_ptr<core::Session>> current =
          engine_->GetSession(marked.id);
      // A session deleted (and maybe created again) since it was marked: its
      // rows go, its changes are not written.
      if (current.ok() && current->get() == key) {
        to_write.push_back(std::move(marked));
      }
    }
    marked_.clear();
  }

  StateWrite write;
  write.deleted_sessions = deleted;
  std::map<core::Session*, uint64_t> versions;
  for (const Marked& m : to_write) {
    core::StateChanges changes = m.session->TakeChanges();
    StateWrite::Session session;
    session.session_id = m.id;
    if (m.rewrite) {
      // After TakeChanges: a commit in between is in both, never in neither.
      changes = m.session->AllRecords();
      session.replace = true;
    }
    versions[m.session.get()] = changes.version;
    if (changes.records.empty() && !session.replace) continue;
    session.records = std::move(changes.records);
    write.sessions.push_back(std::move(session));
  }

  absl::Status status;
  if (!write.sessions.empty() || !write.deleted_sessions.empty()) {
    const absl::Time start = absl::Now();
    status = store_->Write(write);
    if (on_round_) {
      on_round_(absl::Now() - start, static_cast<int64_t>(waiters.size()));
    }
  }
  if (!status.ok()) {
    spdlog::error(
        "cannot write {} sessions and {} deletions to the data directory "
        "(retrying; the batches concerned are answered UNAVAILABLE): {}",
        write.sessions.size(), write.deleted_sessions.size(),
        status.ToString());
    status = absl::UnavailableError(absl::StrCat(
        "applied in memory but not written to the data directory (",
        status.message(), "); retry: the retry is answered once durable"));
    absl::MutexLock lock(&mu_);
    for (Marked& m : to_write) {
      core::Session* key = m.session.get();
      auto [it, inserted] = marked_.try_emplace(key);
      if (inserted) it->second = std::move(m);
      it->second.rewrite = true;
    }
    deleted_.insert(deleted_.begin(), deleted.begin(), deleted.end());
  }
  for (Waiter& w : waiters) {
    if (status.ok() && w.session != nullptr) {
      auto it = versions.find(w.session);
      ABSL_RAW_CHECK(it == versions.end() || w.version <= it->second,
                     "a commit waited for is missing from the changes taken");
    }
    w.done(status);
  }
  return status;
}

}  // namespace cka::server
