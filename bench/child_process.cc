#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace cka::bench {
namespace {

constexpr absl::Duration kPollPeriod = absl::Milliseconds(20);

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, std::string log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("argv: empty");
  // Everything the child needs is prepared before fork: after it only
  // async-signal-safe calls are allowed.
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    return absl::InternalError(
        absl::StrCat("fork for ", argv[0], ": ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);  // the parent died before prctl
    const int fd = ::open(log_path.c_str(),
                          O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid, BaseName(argv[0]), std::move(log_path)));
}

ChildProcess::~ChildProcess() { Stop().IgnoreError(); }

bool ChildProcess::Reap(bool block) {
  if (exited_) return true;
  int status = 0;
  const pid_t done = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  if (done != pid_) return false;
  exited_ = true;
  wait_status_ = status;
  return true;
}

absl::Status ChildProcess::ExitResult() const {
  if (killed_) {
    return absl::InternalError(absl::StrCat(
        name_, " (pid ", pid_, ") did not exit after SIGTERM; killed"));
  }
  if (WIFEXITED(wait_status_) && WEXITSTATUS(wait_status_) == 0)
    return absl::OkStatus();
  const std::string how =
      WIFEXITED(wait_status_)
          ? absl::StrCat("exit status ", WEXITSTATUS(wait_status_))
          : absl::StrCat("signal ", WTERMSIG(wait_status_));
  return absl::InternalError(absl::StrCat(name_, " (pid ", pid_,
                                          ") ended with ", how, "; log ",
                                          log_path_, ":\n", LogTail()));
}

absl::StatusOr<std::string> ChildProcess::AwaitLogLine(
    const std::string& marker, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::ifstream log(log_path_);
    std::string line;
    while (std::getline(log, line)) {
      const size_t at = line.find(marker);
      if (at != std::string::npos) return line.substr(at + marker.size());
    }
    if (Reap(/*block=*/false)) {
      return absl::UnavailableError(
          absl::StrCat(name_, " exited before logging '", marker, "' (",
                       ExitResult().message(), ")"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, " did not log '", marker, "' within ",
                       absl::FormatDuration(timeout), "; log ", log_path_,
                       ":\n", LogTail()));
    }
    absl::SleepFor(kPollPeriod);
  }
}

absl::Status ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!Reap(/*block=*/false)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          name_, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(kPollPeriod);
  }
  return ExitResult();
}

absl::Status ChildProcess::Stop(absl::Duration grace) {
  if (!exited_) {
    ::kill(pid_, SIGTERM);
    if (!Wait(grace).ok() && !exited_) {
      ::kill(pid_, SIGKILL);
      killed_ = true;
      Reap(/*block=*/true);
    }
  }
  return ExitResult();
}

absl::StatusOr<ProcessMemory> ChildProcess::Memory() const {
  std::ifstream status(absl::StrCat("/proc/", pid_, "/status"));
  if (exited_ || !status) {
    return absl::UnavailableError(
        absl::StrCat(name_, " (pid ", pid_, ") is not running"));
  }
  ProcessMemory memory;
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    int64_t* field = nullptr;
    if (absl::ConsumePrefix(&rest, "VmRSS:")) field = &memory.rss_bytes;
    if (absl::ConsumePrefix(&rest, "VmHWM:")) field = &memory.hwm_bytes;
    if (field == nullptr) continue;
    rest = absl::StripAsciiWhitespace(rest);
    int64_t kib = 0;
    if (!absl::ConsumeSuffix(&rest, " kB") ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) {
      return absl::InternalError(
          absl::StrCat("/proc/", pid_, "/status: cannot read '", line, "'"));
    }
    *field = kib * 1024;
  }
  if (memory.rss_bytes == 0) {  // a zombie has no memory lines
    return absl::UnavailableError(
        absl::StrCat(name_, " (pid ", pid_, ") has exited"));
  }
  return memory;
}

absl::StatusOr<double> ChildProcess::CpuSeconds() const {
  std::ifstream stat(absl::StrCat("/proc/", pid_, "/stat"));
  std::string line;
  if (exited_ || !stat || !std::getline(stat, line)) {
    return absl::UnavailableError(
        absl::StrCat(name_, " (pid ", pid_, ") is not running"));
  }
  // After "pid (comm) " come the fields from the state on; the command name
  // may hold spaces and parentheses, so the fields start after the last ')'.
  // utime and stime are fields 14 and 15 of proc(5), the 12th and 13th here.
  const size_t close = line.rfind(')');
  const std::vector<std::string> fields =
      absl::StrSplit(absl::string_view(line).substr(
                         close == std::string::npos ? 0 : close + 2),
                     ' ');
  int64_t utime = 0, stime = 0;
  if (close == std::string::npos || fields.size() < 13 ||
      !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError(
        absl::StrCat("/proc/", pid_, "/stat: cannot read '", line, "'"));
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

std::string ChildProcess::LogTail(int lines) const {
  std::ifstream log(log_path_);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(log, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  return absl::StrJoin(tail, "\n");
}

}  // namespace cka::bench
