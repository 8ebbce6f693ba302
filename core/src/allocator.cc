#include "cka/core/allocator.h"

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
  // Unless the environment sets it: one arena (glibc's default is 8 per
  // core). Each arena keeps its own freed memory, and malloc_trim returns the
  // free top of the main arena only: with two arenas an idle ckad kept up to
  // 64 MiB more, varying from run to run.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr &&
      Tunables().find("glibc.malloc.arena_max") == std::string::npos) {
    mallopt(M_ARENA_MAX, 1);
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
