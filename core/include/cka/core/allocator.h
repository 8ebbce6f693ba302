// Process-wide allocator settings for a process that ingests batches.
#ifndef CKA_CORE_ALLOCATOR_H_
#define CKA_CORE_ALLOCATOR_H_

#include <cstdint>

namespace cka::core {

// Makes glibc malloc keep freed memory for reuse instead of returning it to the
// kernel. Every batch allocates and frees multi-megabyte buffers (message
// bytes, Gram scratch, stacked kernels); with glibc's defaults many of those
// come as fresh pages from mmap, and a fresh 4 KiB page costs a page fault —
// on virtual machines ~10 µs, which made a 4 MB buffer cost more than the
// arithmetic done in it. Buffers up to 32 MiB then come from the heap, up to
// 64 MiB of free memory is kept at the heap's top, and all threads share one
// malloc arena (unless MALLOC_ARENA_MAX or GLIBC_TUNABLES sets the count), so
// that malloc_trim can return all of it. ckad also bounds what is kept
// (server/freed_memory_limiter.h). Call once at start-up, before threads
// start; a no-op where mallopt does not exist.
void KeepFreedMemoryForReuse();

// Frees the buffers that core keeps for reuse across batches (per-batch kernel
// blocks, at most 256 MiB) and returns their bytes; later batches allocate them
// again. For a process that has turned idle. Thread-safe.
int64_t ReleaseCachedBuffers();

// Restarts the program (execv of /proc/self/exe with `argv`) with glibc's
// malloc backing its heaps with transparent huge pages
// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), unless GLIBC_TUNABLES already sets
// glibc.malloc.hugetlb (set it to 0 to opt out). With 4 KiB pages, every
// fresh page of a received message costs a fault: on the virtual machines
// measured, gRPC moved 16 MB messages at ~150 MB/s with 4 KiB pages and
// ~2 GB/s with huge pages. Call first thing in main(), before any thread
// starts; returns normally when nothing is to be done or execv fails.
void ReexecWithHugePages(char** argv);

}  // namespace cka::core

#endif  // CKA_CORE_ALLOCATOR_H_
