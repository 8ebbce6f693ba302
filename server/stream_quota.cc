#include "server/stream_quota.h"

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cka::server {

absl::Status StreamQuota::Acquire(const std::string& client,
                                  const std::string& description) {
  absl::MutexLock lock(&mu_);
  int& open = open_[client];
  if (max_per_client_ > 0 && open >= max_per_client_) {
    if (open == 0) open_.erase(client);
    return absl::ResourceExhaustedError(absl::StrCat(
        description, " already has ", max_per_client_,
        " StreamActivations calls open, the most --max-streams-per-client "
        "allows; send more layers per batch on fewer streams, or raise the "
        "limit"));
  }
  ++open;
  return absl::OkStatus();
}

void StreamQuota::Release(const std::string& client) {
  absl::MutexLock lock(&mu_);
  auto it = open_.find(client);
  ABSL_RAW_CHECK(it != open_.end() && it->second > 0,
                 "StreamQuota released more often than acquired");
  if (--it->second == 0) open_.erase(it);
}

int StreamQuota::open(const std::string& client) const {
  absl::MutexLock lock(&mu_);
  auto it = open_.find(client);
  return it == open_.end() ? 0 : it->second;
}

std::string PeerHost(const std::string& peer) {
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:"))
    return peer;
  const size_t colon = peer.rfind(':');
  // "ipv4:" itself ends at index 4; a port follows only a later colon.
  if (colon == std::string::npos || colon <= 4) return peer;
  return peer.substr(0, colon);
}

}  // namespace cka::server
