// The number of StreamActivations calls one client may hold open
// (--max-streams-per-client).
#ifndef CKA_SERVER_STREAM_QUOTA_H_
#define CKA_SERVER_STREAM_QUOTA_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace cka::server {

// Counts open streams per client key (a token id, or the peer's address
// without its port). Thread-safe.
class StreamQuota {
 public:
  // A `max_per_client` of 0 or less means no limit.
  explicit StreamQuota(int max_per_client) : max_per_client_(max_per_client) {}

  // Counts one more stream of `client`. ResourceExhausted naming
  // --max-streams-per-client and `description` (how the client is known in
  // messages; never a token) when it already holds the most. Every OK must be
  // followed by one Release.
  absl::Status Acquire(const std::string& client,
                       const std::string& description);
  void Release(const std::string& client);

  // Returns the open streams of `client`.
  int open(const std::string& client) const;

 private:
  const int max_per_client_;
  mutable absl::Mutex mu_;
  std::map<std::string, int> open_ ABSL_GUARDED_BY(mu_);
};

// Returns the peer address of a gRPC peer string without its port
// ("ipv4:10.0.0.7:51234" → "ipv4:10.0.0.7", "ipv6:[::1]:5" → "ipv6:[::1]");
// other strings unchanged.
std::string PeerHost(const std::string& peer);

}  // namespace cka::server

#endif  // CKA_SERVER_STREAM_QUOTA_H_
