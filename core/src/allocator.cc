#include "cka/core/allocator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "buffer_cache.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cka::core {
namespace {

// GLIBC_TUNABLES as set in the environment ("" when unset).
std::string Tunables() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return tunables == nullptr ? "" : tunables;
}

}  // namespace

void KeepFreedMemoryForReuse() {
#if defined(__GLIBC__)
  // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // Unless the environment sets it: few arenas, since each keeps its own
  // freed memory (glibc's default is 8 per core).
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr &&
      Tunables().find("glibc.malloc.arena_max") == std::string::npos) {
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    mallopt(M_ARENA_MAX, static_cast<int>(std::max(2L, cores)));
  }
#endif
}

int64_t ReleaseCachedBuffers() {
  return static_cast<int64_t>(BufferCache::Global().Clear());
}

void ReexecWithHugePages(char** argv) {
#if defined(__GLIBC__)
  std::string tunables = Tunables();
  if (tunables.find("glibc.malloc.hugetlb") != std::string::npos) return;
  tunables += tunables.empty() ? "" : ":";
  tunables += "glibc.malloc.hugetlb=1";
  if (setenv("GLIBC_TUNABLES", tunables.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  // execv failed: go on with the process as it is.
#else
  (void)argv;
#endif
}

}  // namespace cka::core
