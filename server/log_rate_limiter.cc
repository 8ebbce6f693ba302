#include "server/log_rate_limiter.h"

namespace cka::server {

LogRateLimiter::LogRateLimiter(int per_window, absl::Duration window)
    : per_window_(per_window), window_(window) {}

bool LogRateLimiter::Allow(int64_t* suppressed, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (now - window_start_ >= window_) {
    window_start_ = now;
    allowed_in_window_ = 0;
  }
  if (allowed_in_window_ >= per_window_) {
    ++suppressed_;
    return false;
  }
  ++allowed_in_window_;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

}  // namespace cka::server
