// Rate limiting for log lines that a client can trigger at will (rejected
// batches).
#ifndef CKA_SERVER_LOG_RATE_LIMITER_H_
#define CKA_SERVER_LOG_RATE_LIMITER_H_

#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace cka::server {

// Lets at most `per_window` events per `window` through and counts the ones
// held back. Thread-safe.
class LogRateLimiter {
 public:
  explicit LogRateLimiter(int per_window,
                          absl::Duration window = absl::Seconds(1));

  // Returns true when the event at `now` may be logged; then *suppressed is the
  // number of events held back since the last one let through (to be mentioned
  // in the line), else untouched.
  bool Allow(int64_t* suppressed, absl::Time now = absl::Now());

 private:
  const int per_window_;
  const absl::Duration window_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int allowed_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cka::server

#endif  // CKA_SERVER_LOG_RATE_LIMITER_H_
