// Starting a server binary as a subprocess of a threaded test, its stdout and
// stderr appended to a log file, for the tests that run the real ckad (hostile,
// crash).
#ifndef CKA_TESTS_E2E_SPAWN_H_
#define CKA_TESTS_E2E_SPAWN_H_

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace cka::testing {

// Limits set in the child before exec.
struct SpawnLimits {
  bool no_core_files = false;
  std::optional<rlim_t> address_space;  // RLIMIT_AS, bytes
};

// Starts `argv` (argv[0] a path) with stdout and stderr appended to
// `log_path`; returns its pid, or -1 when fork fails. The argument vector is
// built before fork, so the child of this threaded process makes only
// async-signal-safe calls (building it after fork once hung a child under
// ASan in malloc, on a lock another thread held at the fork).
pid_t SpawnWithLog(const std::vector<std::string>& argv,
                   const std::string& log_path, SpawnLimits limits = {});

}  // namespace cka::testing

#endif  // CKA_TESTS_E2E_SPAWN_H_
