// ckad's command line.
#ifndef CKA_SERVER_FLAGS_H_
#define CKA_SERVER_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cka/server/server.h"

namespace cka::server {

// What ckad's command line asks for.
struct CommandLine {
  ServerOptions options;
  std::string log_level =
      "info";  // trace, debug, info, warn, error, critical or off
  // MiB of resident memory that malloc may hold without having it in use,
  // while busy, before ckad returns free pages to the kernel
  // (FreedMemoryPolicy::max_retained_bytes); -1 never returns them.
  int64_t max_retained_free_mb = 256;
  // Offline transfer of one session (then exit without serving): export when
  // export_session is set, import when import_file is set; both need
  // options.data_dir.
  std::string export_session;
  std::string export_file;
  std::string import_file;
  std::string import_session;
  // True when the command line asked for --help: print `help` and exit 0
  // without serving.
  bool help_requested = false;
  std::string help;
};

// Parses ckad's flags (argv[0] is the program name). InvalidArgument with a
// message naming the flag for an unknown flag, a malformed or out-of-range
// value, or a stray argument. Thread-safe.
absl::StatusOr<CommandLine> ParseCommandLine(int argc, const char* const* argv);

}  // namespace cka::server

#endif  // CKA_SERVER_FLAGS_H_
