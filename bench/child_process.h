// A child process for the benchmarks: started with its output in a log file,
// found by a line it logs, measured through /proc, and ended with SIGTERM.
#ifndef CKA_BENCH_CHILD_PROCESS_H_
#define CKA_BENCH_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cka::bench {

// Memory of a process as /proc/<pid>/status reports it, in bytes.
struct ProcessMemory {
  int64_t rss_bytes = 0;  // VmRSS: resident now
  int64_t hwm_bytes = 0;  // VmHWM: the peak of VmRSS
};

// A running child process. Not thread-safe.
class ChildProcess {
 public:
  // Starts `argv` (argv[0] is the path of the executable) with stdout and
  // stderr appended to `log_path`. The child gets SIGTERM if this process
  // dies. Internal when fork fails; a failed exec shows as exit status 127.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, std::string log_path);

  // Stops the child as Stop() does, if it still runs.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Waits until the log holds a line containing `marker` and returns the rest
  // of that line after the marker. Unavailable naming the log's last lines
  // when the child exits first, DeadlineExceeded after `timeout`.
  absl::StatusOr<std::string> AwaitLogLine(const std::string& marker,
                                           absl::Duration timeout);

  // Sends SIGTERM, waits up to `grace` for the exit, then SIGKILLs. Returns OK
  // for exit status 0, Internal naming the status otherwise (or when it had to
  // be killed). Idempotent: later calls return the first result.
  absl::Status Stop(absl::Duration grace = absl::Seconds(30));

  // Waits up to `timeout` for the child to exit by itself; the same results
  // as Stop() (DeadlineExceeded if it is still running).
  absl::Status Wait(absl::Duration timeout);

  // Returns the child's memory; Unavailable once it has exited.
  absl::StatusOr<ProcessMemory> Memory() const;

  // Returns the CPU time (user + system, all threads) the child has used so
  // far, in seconds, from /proc/<pid>/stat; Unavailable once it has exited.
  absl::StatusOr<double> CpuSeconds() const;

  // Returns the last `lines` lines of the log, for error messages.
  std::string LogTail(int lines = 10) const;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

 private:
  ChildProcess(pid_t pid, std::string name, std::string log_path)
      : pid_(pid), name_(std::move(name)), log_path_(std::move(log_path)) {}

  // Reaps the child if it has exited; true when it has.
  bool Reap(bool block);
  absl::Status ExitResult() const;

  pid_t pid_;
  const std::string name_;  // argv[0]'s file name, for messages
  const std::string log_path_;
  bool exited_ = false;
  int wait_status_ = 0;
  bool killed_ = false;  // we had to SIGKILL it
};

}  // namespace cka::bench

#endif  // CKA_BENCH_CHILD_PROCESS_H_
