// The hardening flags of ckad: limits, keepalive, authentication and TLS.
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/flags.h"

namespace cka::server {
namespace {

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ckad");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(HardeningFlagsTest, DefaultsAreSaneAndSecureByDefault) {
  absl::StatusOr<CommandLine> cl = Parse({});
  ASSERT_TRUE(cl.ok()) << cl.status();
  const ServerOptions& o = cl->options;
  EXPECT_EQ(o.max_pending_total_bytes, int64_t{4096} << 20);
  EXPECT_EQ(o.max_streams_per_client, 128);
  EXPECT_EQ(o.keepalive_time, absl::Seconds(60));
  EXPECT_EQ(o.keepalive_timeout, absl::Seconds(20));
  EXPECT_EQ(o.min_client_ping_interval, absl::Seconds(10));
  EXPECT_EQ(o.max_connection_idle, absl::Minutes(30));
  EXPECT_EQ(o.max_connection_age, absl::InfiniteDuration());
  EXPECT_EQ(o.max_connection_age_grace, absl::Seconds(30));
  EXPECT_EQ(o.auth_tokens_file, "");
  EXPECT_EQ(o.tls_cert_file, "");
  EXPECT_EQ(o.listen.rfind("127.0.0.1:", 0), 0u) << "loopback by default";
}

TEST(HardeningFlagsTest, EveryFlagReachesItsOption) {
  absl::StatusOr<CommandLine> cl = Parse({"--max-pending-total-mb",
                                          "100",
                                          "--max-streams-per-client",
                                          "3",
                                          "--keepalive-time-s",
                                          "7",
                                          "--keepalive-timeout-s",
                                          "2.5",
                                          "--min-ping-interval-s",
                                          "4",
                                          "--max-connection-idle-s",
                                          "0",
                                          "--max-connection-age-s",
                                          "3600",
                                          "--max-connection-age-grace-s",
                                          "15",
                                          "--auth-tokens",
                                          "/etc/ckad/tokens",
                                          "--tls-cert",
                                          "/c.pem",
                                          "--tls-key",
                                          "/k.pem",
                                          "--tls-client-ca",
                                          "/ca.pem"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  const ServerOptions& o = cl->options;
  EXPECT_EQ(o.max_pending_total_bytes, int64_t{100} << 20);
  EXPECT_EQ(o.max_streams_per_client, 3);
  EXPECT_EQ(o.keepalive_time, absl::Seconds(7));
  EXPECT_EQ(o.keepalive_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(o.min_client_ping_interval, absl::Seconds(4));
  EXPECT_EQ(o.max_connection_idle, absl::InfiniteDuration());
  EXPECT_EQ(o.max_connection_age, absl::Hours(1));
  EXPECT_EQ(o.max_connection_age_grace, absl::Seconds(15));
  EXPECT_EQ(o.auth_tokens_file, "/etc/ckad/tokens");
  EXPECT_EQ(o.tls_cert_file, "/c.pem");
  EXPECT_EQ(o.tls_key_file, "/k.pem");
  EXPECT_EQ(o.tls_client_ca_file, "/ca.pem");
}

TEST(HardeningFlagsTest, HelpDescribesEveryNewFlag) {
  absl::StatusOr<CommandLine> cl = Parse({"--help"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  for (const char* flag :
       {"--max-pending-total-mb", "--max-streams-per-client",
        "--keepalive-time-s", "--keepalive-timeout-s", "--min-ping-interval-s",
        "--max-connection-idle-s", "--max-connection-age-s",
        "--max-connection-age-grace-s", "--auth-tokens", "--tls-cert",
        "--tls-key", "--tls-client-ca"}) {
    EXPECT_NE(cl->help.find(flag), std::string::npos) << flag;
  }
}

struct BadFlagCase {
  std::vector<std::string> args;
  std::string mentions;
};

TEST(HardeningFlagsTest, BadValuesAreInvalidArgumentNamingTheFlag) {
  const BadFlagCase cases[] = {
      {{"--max-pending-total-mb", "-1"}, "max-pending-total-mb"},
      {{"--max-streams-per-client", "x"}, "max-streams-per-client"},
      {{"--keepalive-time-s", "0"}, "keepalive-time-s"},
      {{"--keepalive-timeout-s", "-2"}, "keepalive-timeout-s"},
      {{"--min-ping-interval-s", "0.1"}, "min-ping-interval-s"},
      {{"--max-connection-age-s", "-1"}, "max-connection-age-s"},
      {{"--tls-cert", "/c.pem"}, "--tls-key"},
      {{"--tls-key", "/k.pem"}, "--tls-cert"},
      {{"--tls-client-ca", "/ca.pem"}, "--tls-client-ca"},
  };
  for (const BadFlagCase& c : cases) {
    SCOPED_TRACE(c.args.front());
    absl::StatusOr<CommandLine> cl = Parse(c.args);
    ASSERT_FALSE(cl.ok());
    EXPECT_EQ(cl.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(cl.status().message()).find(c.mentions),
              std::string::npos)
        << cl.status();
  }
}

}  // namespace
}  // namespace cka::server
