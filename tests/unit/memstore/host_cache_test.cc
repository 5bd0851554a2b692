#include "memstore/internal/host_cache.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace qllm::memstore::internal {
namespace {

BlockId Id(uint32_t block) { return {OwnerId::Document(1, 1), 0, block}; }
BlockRef MakeBlock(size_t bytes) {
  return std::make_shared<const Block>(std::string(bytes / 2, 'k'), std::string(bytes / 2, 'v'));
}

TEST(HostCache, HitsAndMissesAreCounted) {
  HostCache cache(1000, 1);
  EXPECT_EQ(cache.Lookup(Id(0)), nullptr);
  cache.Insert(Id(0), MakeBlock(100));
  ASSERT_NE(cache.Lookup(Id(0)), nullptr);
  EXPECT_EQ(cache.Lookup(Id(0))->k(), std::string(50, 'k'));
  const HostCacheStats stats = cache.GetStats();
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.blocks, 1u);
  EXPECT_EQ(stats.bytes, 100u);
}

TEST(HostCache, EvictsLeastRecentlyUsedWithinByteBudget) {
  HostCache cache(300, 1);
  cache.Insert(Id(0), MakeBlock(100));
  cache.Insert(Id(1), MakeBlock(100));
  cache.Insert(Id(2), MakeBlock(100));
  ASSERT_NE(cache.Lookup(Id(0)), nullptr);  // 0 is now most recent; 1 is the LRU.
  cache.Insert(Id(3), MakeBlock(100));
  EXPECT_EQ(cache.Lookup(Id(1)), nullptr);
  EXPECT_NE(cache.Lookup(Id(0)), nullptr);
  EXPECT_NE(cache.Lookup(Id(2)), nullptr);
  EXPECT_NE(cache.Lookup(Id(3)), nullptr);
  const HostCacheStats stats = cache.GetStats();
  EXPECT_LE(stats.bytes, 300u);
  EXPECT_EQ(stats.evictions, 1u);
}

TEST(HostCache, ReplacingAnEntryKeepsTheChargeExact) {
  HostCache cache(1000, 1);
  cache.Insert(Id(0), MakeBlock(100));
  cache.Insert(Id(0), MakeBlock(200));
  EXPECT_EQ(cache.GetStats().bytes, 200u);
  EXPECT_EQ(cache.GetStats().blocks, 1u);
}

TEST(HostCache, OversizedBlocksAndZeroCapacityAreNotCached) {
  HostCache cache(400, 4);  // 100 bytes per shard.
  cache.Insert(Id(0), MakeBlock(200));
  EXPECT_EQ(cache.Lookup(Id(0)), nullptr);
  HostCache off(0, 1);
  off.Insert(Id(0), MakeBlock(2));
  EXPECT_EQ(off.Lookup(Id(0)), nullptr);
}

TEST(HostCache, EvictedBlockStaysValidForItsReader) {
  HostCache cache(100, 1);
  cache.Insert(Id(0), MakeBlock(100));
  BlockRef held = cache.Lookup(Id(0));
  cache.Insert(Id(1), MakeBlock(100));
  EXPECT_EQ(cache.Lookup(Id(0)), nullptr);
  EXPECT_EQ(held->v(), std::string(50, 'v'));
}

TEST(HostCache, EraseOwnerRemovesOnlyThatOwner) {
  HostCache cache(10000, 4);
  const BlockId other{OwnerId::Session(1, 1), 0, 0};
  for (uint32_t b = 0; b < 10; ++b) cache.Insert(Id(b), MakeBlock(10));
  cache.Insert(other, MakeBlock(10));
  cache.EraseOwner(OwnerId::Document(1, 1));
  EXPECT_EQ(cache.GetStats().blocks, 1u);
  EXPECT_NE(cache.Lookup(other), nullptr);
}

TEST(HostCache, ConcurrentUseKeepsBudget) {
  HostCache cache(5000, 4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (uint32_t i = 0; i < 2000; ++i) {
        const BlockId id{OwnerId::Document(1, static_cast<uint64_t>(t)), 0, i % 97};
        if (i % 3 == 0) {
          cache.Insert(id, MakeBlock(100));
        } else {
          cache.Lookup(id);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(cache.GetStats().bytes, 5000u);
}

}  // namespace
}  // namespace qllm::memstore::internal
