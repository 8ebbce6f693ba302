#include "server/flags.h"

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace cka::server {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// The flags write 0 for "never".
double SecondsOrZero(absl::Duration d) {
  return d == absl::InfiniteDuration() ? 0.0 : absl::ToDoubleSeconds(d);
}
absl::Duration DurationOrNever(double seconds) {
  return seconds <= 0 ? absl::InfiniteDuration() : absl::Seconds(seconds);
}

}  // namespace

absl::StatusOr<CommandLine> ParseCommandLine(int argc,
                                             const char* const* argv) {
  CommandLine cl;
  ServerOptions& o = cl.options;
  const core::EngineLimits defaults;
  int64_t max_pending_mb = defaults.session.max_pending_bytes / kMiB;
  int64_t max_exact_mb = defaults.session.max_exact_bytes / kMiB;
  int64_t max_state_mb = defaults.session.max_state_bytes / kMiB;
  double shutdown_grace_s = absl::ToDoubleSeconds(o.shutdown_grace);

  CLI::App app(
      "ckad: running centered kernel alignment (CKA) between the layers of "
      "training "
      "networks, served over gRPC (cka.v1.Similarity).",
      "ckad");
  app.add_option("--listen", o.listen,
                 "host:port to serve on; port 0 picks a free port. The default "
                 "listens on "
                 "loopback only; another host needs --auth-tokens and "
                 "--tls-cert/--tls-key, or --allow-insecure")
      ->capture_default_str();
  app.add_option("--http-listen", o.http_listen,
                 "host:port of the HTTP server: the JSON API (/api/v1/...), "
                 "/metrics and /healthz; port 0 picks a free port (logged as "
                 "'http listening on HOST:PORT'). Same tokens, TLS files and "
                 "loopback rule as --listen. Empty: no HTTP")
      ->capture_default_str();
  app.add_option("--http-grpc-target", o.http_grpc_target,
                 "host:port of the gRPC router in front of the replicas: the "
                 "HTTP layer's calls go there with the metadata "
                 "'x-cka-session', so that each reaches its session's replica "
                 "(and the caller's token is checked there). Empty: this "
                 "ckad's own service");
  app.add_option("--http-peers", o.http_peers,
                 "comma-separated host:port of every replica's gRPC address "
                 "(a host may resolve to several, e.g. a headless Service; "
                 "resolved at each request): the JSON ListSessions asks each "
                 "and merges the answers, naming the replicas that did not "
                 "answer. Empty: ListSessions asks --http-grpc-target or this "
                 "ckad");
  app.add_option("--http-grpc-ca", o.http_grpc_ca_file,
                 "PEM CA certificates that --http-grpc-target and --http-peers "
                 "must be signed by (TLS is used towards them whenever ckad "
                 "serves TLS or this is given). Empty: gRPC's default roots");
  app.add_option("--http-grpc-server-name", o.http_grpc_server_name,
                 "the name --http-grpc-target's and --http-peers' "
                 "certificates must carry (as the router checks replicas)")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir,
                 "directory of the SQLite database (ckad.db) that keeps every "
                 "session; restored at start, and an OK ack means the batch "
                 "is committed there. Empty: state lives in memory only and "
                 "is lost at exit")
      ->capture_default_str();
  app.add_option("--threads", o.threads,
                 "worker threads for decoding, Gram work and commits; 0 = one "
                 "per CPU core")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--max-message-mb", o.max_message_mb,
                 "largest gRPC message accepted or sent, in MiB")
      ->capture_default_str()
      ->check(CLI::Range(1, 2047));
  app.add_option("--memory-limit-mb", o.memory_limit_mb,
                 "memory budget of all requests together, in MiB: a batch's "
                 "kernels, sessions' state, queries' matrices and messages in "
                 "flight are priced before they are allocated, and refused "
                 "with RESOURCE_EXHAUSTED when they do not fit; 0 = 3/4 of "
                 "the cgroup limit or physical memory (at most 1/2 of "
                 "ulimit -v)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--max-retained-free-mb", cl.max_retained_free_mb,
                 "MiB of freed memory malloc may keep for reuse while ckad "
                 "is busy (checked every second, trimmed at most every 10 s); "
                 "an idle ckad (no batch for a second) returns all free pages "
                 "(-1 = keep all)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 30));
  app.add_option("--log-level", cl.log_level, "spdlog level")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--max-sessions", o.limits.max_sessions,
                 "most sessions at once; more is RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--max-streams-per-session", o.limits.session.max_streams,
                 "most streams (source/layer) in one session; more is "
                 "RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--max-pending-mb", max_pending_mb,
                 "per session: MiB of batches waiting for their other streams "
                 "(join buffer); "
                 "more is RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--max-state-mb", max_state_mb,
                 "per session: MiB of running sums of all step buckets plus "
                 "duplicate records (a bucket of S streams costs 56·S² bytes "
                 "per measure); a batch that needs more is RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--max-buckets", o.limits.session.max_buckets,
                 "per session and measure: most step buckets; a batch that "
                 "opens one more is RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--max-exact-mb", max_exact_mb,
                 "per session: MiB of feature-space sums the EXACT estimators "
                 "may hold; more is "
                 "RESOURCE_EXHAUSTED at session creation")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--shutdown-grace-s", shutdown_grace_s,
                 "on SIGTERM/SIGINT, seconds to let in-flight batches finish "
                 "and be acked "
                 "before connections are cut")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));

  int64_t max_pending_total_mb = o.max_pending_total_bytes / kMiB;
  double keepalive_time_s = absl::ToDoubleSeconds(o.keepalive_time);
  double keepalive_timeout_s = absl::ToDoubleSeconds(o.keepalive_timeout);
  double min_ping_interval_s =
      absl::ToDoubleSeconds(o.min_client_ping_interval);
  double max_connection_idle_s = SecondsOrZero(o.max_connection_idle);
  double max_connection_age_s = SecondsOrZero(o.max_connection_age);
  double max_connection_age_grace_s = SecondsOrZero(o.max_connection_age_grace);
  app.add_option("--max-pending-total-mb", max_pending_total_mb,
                 "all sessions together: MiB of batches waiting for their "
                 "other streams; more is RESOURCE_EXHAUSTED (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--max-streams-per-client", o.max_streams_per_client,
                 "StreamActivations calls one client (token, or peer address "
                 "without --auth-tokens) may hold open; more is "
                 "RESOURCE_EXHAUSTED (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--keepalive-time-s", keepalive_time_s,
                 "ping a client after this many seconds without traffic")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--keepalive-timeout-s", keepalive_timeout_s,
                 "drop a connection whose ping is not answered within this "
                 "many seconds (its streams end, their resources are freed)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 3600.0));
  app.add_option("--min-ping-interval-s", min_ping_interval_s,
                 "shortest interval between a client's keepalive pings that "
                 "ckad accepts (clients pinging more often are disconnected)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--max-connection-idle-s", max_connection_idle_s,
                 "close a connection without calls after this many seconds "
                 "(0 = never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--max-connection-age-s", max_connection_age_s,
                 "ask every connection to reconnect after this many seconds "
                 "(0 = never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--max-connection-age-grace-s", max_connection_age_grace_s,
                 "after --max-connection-age-s, seconds its calls may take "
                 "to end before the connection is cut (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--auth-tokens", o.auth_tokens_file,
                 "file of 'token role' lines (role: reader, writer or admin); "
                 "every call must then carry 'authorization: Bearer <token>'. "
                 "Empty: no authentication");
  app.add_option("--tls-cert", o.tls_cert_file,
                 "PEM certificate chain of the server: serve TLS (needs "
                 "--tls-key)");
  app.add_option("--tls-key", o.tls_key_file, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", o.tls_client_ca_file,
                 "PEM CA certificates: require client certificates signed by "
                 "them (mutual TLS; needs --tls-cert)");
  app.add_flag("--allow-insecure", o.allow_insecure,
               "serve a --listen host other than loopback without "
               "--auth-tokens or without TLS (with a warning at start); "
               "without this flag ckad refuses to start there. Only for a "
               "private network where anyone who can reach ckad may use it");

  app.add_option("--export-session", cl.export_session,
                 "offline: write session ID of --data-dir to --export-file, "
                 "then exit (not while a ckad serves that directory)");
  app.add_option("--export-file", cl.export_file,
                 "offline: the file --export-session writes");
  app.add_option("--import-file", cl.import_file,
                 "offline: add the session exported to FILE to --data-dir as "
                 "--import-session, then exit");
  app.add_option("--import-session", cl.import_session,
                 "offline: the id --import-file is stored under");

  // CLI11 wants argv in its own order (it consumes from the back), so hand it a
  // copy.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) args.emplace_back(argv[i]);
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    cl.help_requested = true;
    cl.help = app.help();
    return cl;
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  o.limits.session.max_pending_bytes = max_pending_mb * kMiB;
  o.limits.session.max_exact_bytes = max_exact_mb * kMiB;
  o.limits.session.max_state_bytes = max_state_mb * kMiB;
  o.shutdown_grace = absl::Seconds(shutdown_grace_s);
  o.max_pending_total_bytes = max_pending_total_mb * kMiB;
  o.keepalive_time = absl::Seconds(keepalive_time_s);
  o.keepalive_timeout = absl::Seconds(keepalive_timeout_s);
  o.min_client_ping_interval = absl::Seconds(min_ping_interval_s);
  o.max_connection_idle = DurationOrNever(max_connection_idle_s);
  o.max_connection_age = DurationOrNever(max_connection_age_s);
  o.max_connection_age_grace = DurationOrNever(max_connection_age_grace_s);
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both or neither");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca: needs --tls-cert and --tls-key (mutual TLS is TLS)");
  }
  if (o.http_listen.empty() &&
      (!o.http_grpc_target.empty() || !o.http_peers.empty() ||
       !o.http_grpc_ca_file.empty())) {
    return absl::InvalidArgumentError(
        "--http-grpc-target, --http-peers and --http-grpc-ca: need "
        "--http-listen (they configure the HTTP layer)");
  }
  if (cl.export_session.empty() != cl.export_file.empty()) {
    return absl::InvalidArgumentError(
        "--export-session and --export-file: give both or neither");
  }
  if (cl.import_file.empty() != cl.import_session.empty()) {
    return absl::InvalidArgumentError(
        "--import-file and --import-session: give both or neither");
  }
  if (!cl.export_session.empty() && !cl.import_file.empty()) {
    return absl::InvalidArgumentError(
        "--export-session and --import-file: one at a time");
  }
  if ((!cl.export_session.empty() || !cl.import_file.empty()) &&
      o.data_dir.empty()) {
    return absl::InvalidArgumentError(
        "--export-session and --import-file need --data-dir");
  }
  return cl;
}

}  // namespace cka::server
