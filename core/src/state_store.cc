#include "cka/core/state_store.h"

#include "absl/strings/str_cat.h"

namespace cka::core {

absl::Status MemoryStateStore::Put(std::string_view session_id,
                                   std::string_view state) {
  absl::MutexLock lock(&mu_);
  states_[std::string(session_id)] = std::string(state);
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryStateStore::Get(
    std::string_view session_id) const {
  absl::MutexLock lock(&mu_);
  auto it = states_.find(session_id);
  if (it == states_.end()) {
    return absl::NotFoundError(absl::StrCat("no stored state for session '",
                                            std::string(session_id), "'"));
  }
  return it->second;
}

absl::Status MemoryStateStore::Delete(std::string_view session_id) {
  absl::MutexLock lock(&mu_);
  auto it = states_.find(session_id);
  if (it != states_.end()) states_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> MemoryStateStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  ids.reserve(states_.size());
  for (const auto& [id, state] : states_) ids.push_back(id);
  return ids;
}

}  // namespace cka::core
