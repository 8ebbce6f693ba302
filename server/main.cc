// ckad: parses flags, starts the server, and serves until SIGTERM or SIGINT.
#include <csignal>
#include <cstdio>

#include "cka/core/allocator.h"
#include "cka/server/server.h"
#include "google/protobuf/stubs/logging.h"
#include "server/flags.h"
#include "server/freed_memory_limiter.h"
#include "server/log_rate_limiter.h"
#include "server/session_transfer.h"
#include "spdlog/spdlog.h"

namespace {

// libprotobuf logs every message holding a string that is not UTF-8, which
// any client can send (ckad answers it in the batch's ack): a few lines a
// second, through spdlog.
void LogProtobuf(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  static auto* limiter = new cka::server::LogRateLimiter(5);
  int64_t suppressed = 0;
  if (level < google::protobuf::LOGLEVEL_FATAL &&
      !limiter->Allow(&suppressed)) {
    return;
  }
  spdlog::warn(
      "libprotobuf {}:{}: {}{}", file, line, message,
      suppressed > 0 ? fmt::format(" ({} more not logged)", suppressed) : "");
}

}  // namespace

int main(int argc, char** argv) {
  cka::core::ReexecWithHugePages(argv);
  cka::core::KeepFreedMemoryForReuse();
  absl::StatusOr<cka::server::CommandLine> cl =
      cka::server::ParseCommandLine(argc, argv);
  if (!cl.ok()) {
    std::fprintf(stderr, "ckad: %s\nRun 'ckad --help' for the flags.\n",
                 std::string(cl.status().message()).c_str());
    return 2;
  }
  if (cl->help_requested) {
    std::fputs(cl->help.c_str(), stdout);
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(cl->log_level));
  google::protobuf::SetLogHandler(&LogProtobuf);
  if (!cl->export_session.empty() || !cl->import_file.empty()) {
    const absl::Status done =
        cl->import_file.empty()
            ? cka::server::ExportSession(cl->options.data_dir,
                                         cl->export_session, cl->export_file)
            : cka::server::ImportSession(cl->options.data_dir, cl->import_file,
                                         cl->import_session);
    if (!done.ok()) {
      std::fprintf(stderr, "ckad: %s\n", done.ToString().c_str());
      return 1;
    }
    return 0;
  }

  // Blocked before any thread starts, so that every thread inherits the mask
  // and the signals are taken only by sigwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<cka::server::Server>> server =
      cka::server::Server::BuildAndStart(cl->options);
  if (!server.ok()) {
    spdlog::critical("ckad cannot start: {}", server.status().ToString());
    return 1;
  }
  // Stopped before the server, whose counter it reads.
  cka::server::FreedMemoryPolicy memory_policy;
  memory_policy.max_retained_bytes =
      cl->max_retained_free_mb < 0 ? -1 : cl->max_retained_free_mb << 20;
  memory_policy.activity = [s = server->get()] {
    return s->batches_received();
  };
  const cka::server::FreedMemoryLimiter freed_memory_limiter(memory_policy);

  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("received {}", signal == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  return 0;
}
