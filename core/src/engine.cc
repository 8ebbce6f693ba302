#include "cka/core/engine.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cka::core {

Engine::Engine(EngineLimits limits) : limits_(limits) {}

absl::StatusOr<std::shared_ptr<Session>> Engine::CreateSession(
    const std::string& id, SessionConfig config, bool* created) {
  if (created != nullptr) *created = false;
  if (absl::Status s = ValidateName("session_id", id); !s.ok()) return s;
  config = WithDefaults(std::move(config));
  {
    absl::MutexLock lock(&mu_);
    if (auto it = sessions_.find(id); it != sessions_.end()) {
      if (it->second->config() == config) return it->second;
      return absl::AlreadyExistsError(absl::StrCat(
          "session '", id,
          "' already exists with another config; delete it first or use "
          "another session_id"));
    }
  }
  // Built outside the lock: creation may allocate; the insert below re-checks
  // the id.
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Create(config, limits_.session);
  if (!session.ok()) return session.status();
  absl::MutexLock lock(&mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    if (it->second->config() == config) return it->second;
    return absl::AlreadyExistsError(absl::StrCat(
        "session '", id, "' was just created with another config"));
  }
  if (static_cast<int64_t>(sessions_.size()) >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot create session '%s': the server already holds "
                        "%d sessions, the limit "
                        "(max sessions)",
                        id, sessions_.size()));
  }
  std::shared_ptr<Session> shared = std::move(*session);
  sessions_.emplace(id, shared);
  if (created != nullptr) *created = true;
  return shared;
}

absl::StatusOr<Engine::Ingested> Engine::Ingest(const std::string& session_id,
                                                const BatchInput& batch,
                                                ThreadPool* pool) {
  absl::StatusOr<std::shared_ptr<Session>> session = GetSession(session_id);
  if (!session.ok()) return session.status();
  absl::StatusOr<IngestResult> result = (*session)->Ingest(batch, pool);
  if (!result.ok()) return result.status();
  return Ingested{*result, *std::move(session)};
}

absl::StatusOr<std::shared_ptr<Session>> Engine::GetSession(
    const std::string& id) const {
  // No session has a longer id; refusing it here keeps a crafted megabyte id
  // out of the answer (ValidateName quotes the start of it only).
  if (id.size() > kMaxNameBytes) return ValidateName("session_id", id);
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("session '", id, "' does not exist"));
  }
  return it->second;
}

absl::Status Engine::DeleteSession(const std::string& id) {
  if (id.size() > kMaxNameBytes) return ValidateName("session_id", id);
  absl::MutexLock lock(&mu_);
  if (sessions_.erase(id) == 0) {
    return absl::NotFoundError(
        absl::StrCat("session '", id, "' does not exist"));
  }
  return absl::OkStatus();
}

std::vector<std::string> Engine::ListSessions() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  ids.reserve(sessions_.size());
  for (const auto& [id, session] : sessions_) ids.push_back(id);
  return ids;
}

absl::Status Engine::AddSession(const std::string& id,
                                std::unique_ptr<Session> session) {
  if (absl::Status s = ValidateName("session_id", id); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (static_cast<int64_t>(sessions_.size()) >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot add session '%s': the server already holds %d sessions, the "
        "limit (max sessions)",
        id, sessions_.size()));
  }
  if (!sessions_.emplace(id, std::shared_ptr<Session>(std::move(session)))
           .second) {
    return absl::AlreadyExistsError(
        absl::StrCat("session '", id, "' already exists"));
  }
  return absl::OkStatus();
}

}  // namespace cka::core
