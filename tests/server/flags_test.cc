#include "server/flags.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace cka::server {
namespace {

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ckad");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(FlagsTest, NoFlagsGiveTheDocumentedDefaults) {
  absl::StatusOr<CommandLine> cl = Parse({});
  ASSERT_TRUE(cl.ok()) << cl.status();
  const ServerOptions& o = cl->options;
  const core::EngineLimits limits;
  EXPECT_EQ(o.listen, "127.0.0.1:50051");
  EXPECT_EQ(o.data_dir, "");
  EXPECT_EQ(o.threads, 0);
  EXPECT_EQ(o.max_message_mb, 64);
  EXPECT_EQ(o.shutdown_grace, absl::Seconds(10));
  EXPECT_EQ(o.limits.max_sessions, limits.max_sessions);
  EXPECT_EQ(o.limits.session.max_streams, limits.session.max_streams);
  EXPECT_EQ(o.limits.session.max_pending_bytes,
            limits.session.max_pending_bytes);
  EXPECT_EQ(o.limits.session.max_exact_bytes, limits.session.max_exact_bytes);
  EXPECT_EQ(cl->log_level, "info");
  EXPECT_EQ(cl->max_retained_free_mb, 256);
  EXPECT_FALSE(cl->help_requested);
}

TEST(FlagsTest, EveryFlagReachesItsOption) {
  absl::StatusOr<CommandLine> cl = Parse({"--listen",
                                          "0.0.0.0:7000",
                                          "--data-dir=/var/lib/ckad",
                                          "--threads",
                                          "3",
                                          "--max-message-mb",
                                          "128",
                                          "--log-level",
                                          "debug",
                                          "--max-sessions",
                                          "5",
                                          "--max-streams-per-session",
                                          "6",
                                          "--max-pending-mb",
                                          "7",
                                          "--max-exact-mb",
                                          "8",
                                          "--shutdown-grace-s",
                                          "2.5",
                                          "--max-retained-free-mb",
                                          "-1"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  const ServerOptions& o = cl->options;
  EXPECT_EQ(o.listen, "0.0.0.0:7000");
  EXPECT_EQ(o.data_dir, "/var/lib/ckad");
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.max_message_mb, 128);
  EXPECT_EQ(cl->log_level, "debug");
  EXPECT_EQ(o.limits.max_sessions, 5);
  EXPECT_EQ(o.limits.session.max_streams, 6);
  EXPECT_EQ(o.limits.session.max_pending_bytes, int64_t{7} << 20);
  EXPECT_EQ(o.limits.session.max_exact_bytes, int64_t{8} << 20);
  EXPECT_EQ(o.shutdown_grace, absl::Milliseconds(2500));
  EXPECT_EQ(cl->max_retained_free_mb, -1);
}

TEST(FlagsTest, HelpIsRequestedAndDescribesEveryFlag) {
  absl::StatusOr<CommandLine> cl = Parse({"--help"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_TRUE(cl->help_requested);
  for (const char* flag :
       {"--listen", "--data-dir", "--threads", "--max-message-mb",
        "--log-level", "--max-sessions", "--max-streams-per-session",
        "--max-pending-mb", "--max-exact-mb", "--shutdown-grace-s",
        "--max-retained-free-mb"}) {
    EXPECT_NE(cl->help.find(flag), std::string::npos) << flag;
  }
}

struct BadFlagCase {
  std::vector<std::string> args;
  std::string mentions;  // the message must name the flag or the value
};

TEST(FlagsTest, ExportAndImportNeedTheirPairAndADataDir) {
  absl::StatusOr<CommandLine> cl = Parse(
      {"--data-dir", "/d", "--export-session", "s", "--export-file", "/f"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->export_session, "s");
  EXPECT_EQ(cl->export_file, "/f");
  cl = Parse(
      {"--data-dir", "/d", "--import-file", "/f", "--import-session", "t"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->import_file, "/f");
  EXPECT_EQ(cl->import_session, "t");
  const std::vector<std::vector<std::string>> refused = {
      {"--data-dir", "/d", "--export-session", "s"},
      {"--data-dir", "/d", "--import-file", "/f"},
      {"--export-session", "s", "--export-file", "/f"},
      {"--data-dir", "/d", "--export-session", "s", "--export-file", "/f",
       "--import-file", "/g", "--import-session", "t"}};
  for (const std::vector<std::string>& args : refused) {
    EXPECT_EQ(Parse(args).status().code(), absl::StatusCode::kInvalidArgument)
        << args[2];
  }
}

TEST(FlagsTest, ScaleOutFlagsReachTheirOptionsAndNeedHttpListen) {
  absl::StatusOr<CommandLine> cl =
      Parse({"--http-listen", "127.0.0.1:0", "--http-grpc-target",
             "router:50051", "--http-peers", "a:1,b:2", "--http-grpc-ca",
             "/ca.crt", "--http-grpc-server-name", "replica"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_EQ(cl->options.http_grpc_target, "router:50051");
  EXPECT_EQ(cl->options.http_peers, "a:1,b:2");
  EXPECT_EQ(cl->options.http_grpc_ca_file, "/ca.crt");
  EXPECT_EQ(cl->options.http_grpc_server_name, "replica");
  EXPECT_EQ(Parse({}).value().options.http_grpc_server_name, "ckad");
  for (const char* flag :
       {"--http-grpc-target", "--http-peers", "--http-grpc-ca"}) {
    absl::StatusOr<CommandLine> without = Parse({flag, "x:1"});
    EXPECT_EQ(without.status().code(), absl::StatusCode::kInvalidArgument)
        << flag;
    EXPECT_NE(without.status().message().find("--http-listen"),
              std::string::npos)
        << without.status();
  }
}

TEST(FlagsTest, BadValuesAreInvalidArgumentNamingTheFlag) {
  const BadFlagCase cases[] = {
      {{"--threads", "-1"}, "threads"},
      {{"--threads", "many"}, "threads"},
      {{"--max-message-mb", "0"}, "max-message-mb"},
      {{"--max-message-mb", "4096"}, "max-message-mb"},
      {{"--log-level", "loud"}, "log-level"},
      {{"--max-sessions", "0"}, "max-sessions"},
      {{"--max-pending-mb", "x"}, "max-pending-mb"},
      {{"--shutdown-grace-s", "-3"}, "shutdown-grace-s"},
      {{"--max-retained-free-mb", "-2"}, "max-retained-free-mb"},
      {{"--max-retained-free-mb", "lots"}, "max-retained-free-mb"},
      {{"--no-such-flag"}, "no-such-flag"},
      {{"stray"}, "stray"},
      {{"--listen"}, "listen"},
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

// The hardening flags: limits, keepalive, authentication and TLS.

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
  EXPECT_FALSE(o.allow_insecure);
}

TEST(HardeningFlagsTest, AllowInsecureIsAFlagWithoutValue) {
  absl::StatusOr<CommandLine> cl =
      Parse({"--listen", "0.0.0.0:7000", "--allow-insecure"});
  ASSERT_TRUE(cl.ok()) << cl.status();
  EXPECT_TRUE(cl->options.allow_insecure);
  EXPECT_EQ(cl->options.listen, "0.0.0.0:7000");
  // A flag takes no value: "yes" would be a stray argument.
  cl = Parse({"--allow-insecure", "yes"});
  ASSERT_FALSE(cl.ok());
  EXPECT_EQ(cl.status().code(), absl::StatusCode::kInvalidArgument);
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
        "--tls-key", "--tls-client-ca", "--allow-insecure"}) {
    EXPECT_NE(cl->help.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace cka::server
