#include "spawn.h"

#include <fcntl.h>
#include <unistd.h>

namespace cka::testing {

pid_t SpawnWithLog(const std::vector<std::string>& argv,
                   const std::string& log_path, SpawnLimits limits) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (limits.no_core_files) {
    const rlimit none = {0, 0};
    ::setrlimit(RLIMIT_CORE, &none);
  }
  if (limits.address_space.has_value()) {
    const rlimit as = {*limits.address_space, *limits.address_space};
    ::setrlimit(RLIMIT_AS, &as);
  }
  const int fd =
      ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
  }
  ::execv(args[0], args.data());
  ::_exit(127);
}

}  // namespace cka::testing
