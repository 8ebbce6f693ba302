#include "buffer_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "cka/core/allocator.h"

namespace cka::core {
namespace {

TEST(BufferCacheTest, KeepsWhatItIsGivenUpToItsBoundsAndHandsItBack) {
  BufferCache cache;
  cache.Give(std::vector<double>(1000));
  cache.Give(std::vector<double>(10));
  EXPECT_EQ(cache.kept_bytes(), 1010 * sizeof(double));
  // The smallest kept buffer that fits.
  std::vector<double> taken = cache.Take(500);
  EXPECT_EQ(taken.size(), 500u);
  EXPECT_GE(taken.capacity(), 1000u);
  EXPECT_EQ(cache.kept_bytes(), 10 * sizeof(double));
  // Too large for all it keeps: a new one.
  EXPECT_EQ(cache.Take(2000).size(), 2000u);
  cache.Clear();
  for (size_t i = 0; i < BufferCache::kMaxBuffers + 4; ++i) {
    cache.Give(std::vector<double>(8));
  }
  EXPECT_EQ(cache.kept_bytes(), BufferCache::kMaxBuffers * 8 * sizeof(double));
}

TEST(BufferCacheTest, ClearFreesEverythingKept) {
  BufferCache cache;
  cache.Give(std::vector<double>(1000));
  cache.Give(std::vector<double>(24));
  EXPECT_EQ(cache.Clear(), 1024 * sizeof(double));
  EXPECT_EQ(cache.kept_bytes(), 0u);
  EXPECT_EQ(cache.Clear(), 0u);
  EXPECT_EQ(cache.Take(100).size(), 100u);
}

TEST(BufferCacheTest, ReleaseCachedBuffersEmptiesTheGlobalCache) {
  BufferCache::Global().Give(std::vector<double>(4096));
  EXPECT_GE(ReleaseCachedBuffers(), int64_t{4096 * sizeof(double)});
  EXPECT_EQ(BufferCache::Global().kept_bytes(), 0u);
  EXPECT_EQ(ReleaseCachedBuffers(), 0);
}

}  // namespace
}  // namespace cka::core
