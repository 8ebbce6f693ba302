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

}  // namespace

absl::StatusOr<CommandLine> ParseCommandLine(int argc,
                                             const char* const* argv) {
  CommandLine cl;
  ServerOptions& o = cl.options;
  const core::EngineLimits defaults;
  int64_t max_pending_mb = defaults.session.max_pending_bytes / kMiB;
  int64_t max_exact_mb = defaults.session.max_exact_bytes / kMiB;
  double shutdown_grace_s = absl::ToDoubleSeconds(o.shutdown_grace);

  CLI::App app(
      "ckad: running centered kernel alignment (CKA) between the layers of "
      "training "
      "networks, served over gRPC (cka.v1.Similarity).",
      "ckad");
  app.add_option("--listen", o.listen,
                 "host:port to serve on; port 0 picks a free port. The default "
                 "listens on "
                 "loopback only")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir,
                 "directory that keeps one file per session; restored at "
                 "start. Empty: state "
                 "lives in memory only and is lost at exit")
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
  o.shutdown_grace = absl::Seconds(shutdown_grace_s);
  return cl;
}

}  // namespace cka::server
