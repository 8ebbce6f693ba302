#include "server/log_rate_limiter.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

TEST(LogRateLimiterTest, LetsAFewThroughPerWindowAndCountsTheRest) {
  LogRateLimiter limiter(2, absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  int64_t suppressed = -1;
  EXPECT_TRUE(limiter.Allow(&suppressed, t0));
  EXPECT_EQ(suppressed, 0);
  EXPECT_TRUE(limiter.Allow(&suppressed, t0 + absl::Milliseconds(10)));
  EXPECT_EQ(suppressed, 0);
  for (int i = 0; i < 5; ++i)
    EXPECT_FALSE(limiter.Allow(&suppressed, t0 + absl::Milliseconds(20)));
  // A new window: the first line reports the five held back, the next none.
  EXPECT_TRUE(limiter.Allow(&suppressed, t0 + absl::Seconds(1)));
  EXPECT_EQ(suppressed, 5);
  EXPECT_TRUE(limiter.Allow(&suppressed, t0 + absl::Seconds(1)));
  EXPECT_EQ(suppressed, 0);
  EXPECT_FALSE(limiter.Allow(&suppressed, t0 + absl::Milliseconds(1500)));
}

}  // namespace
}  // namespace cka::server
