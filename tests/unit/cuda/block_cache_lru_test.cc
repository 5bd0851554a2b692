// BlockCacheLru (the policy of the device block tier): hits and misses, LRU eviction order,
// requests larger than the cache, and the pins of the current request.
#include "cuda/block_cache_lru.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<BlockKey> Keys(std::vector<int32_t> blocks, uint64_t owner = 1, int32_t layer = 0) {
  std::vector<BlockKey> keys;
  for (int32_t b : blocks) keys.push_back(BlockKey{owner, layer, b});
  return keys;
}

// Acquires `blocks` as one request and releases it; returns the assignment.
BlockCacheLru::Assignment Request(BlockCacheLru& lru, std::vector<int32_t> blocks) {
  absl::StatusOr<BlockCacheLru::Assignment> a = lru.Acquire(Keys(blocks));
  EXPECT_TRUE(a.ok()) << a.status();
  lru.Release();
  return a.ok() ? *a : BlockCacheLru::Assignment{};
}

TEST(BlockCacheLru, MissesFillEmptySlotsThenHitsReuseThem) {
  BlockCacheLru lru(4);
  BlockCacheLru::Assignment a = Request(lru, {10, 11, 12});
  EXPECT_THAT(a.slots, ElementsAre(0, 1, 2));
  EXPECT_THAT(a.misses, ElementsAre(0, 1, 2));
  EXPECT_EQ(a.hits, 0);
  EXPECT_EQ(a.evictions, 0);

  a = Request(lru, {12, 13, 10});
  EXPECT_THAT(a.slots, ElementsAre(2, 3, 0));
  EXPECT_THAT(a.misses, ElementsAre(1));  // Only block 13, at index 1 of the request.
  EXPECT_EQ(a.hits, 2);
  EXPECT_EQ(a.evictions, 0);
  EXPECT_EQ(lru.num_resident(), 4);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 11}), 1);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 99}), -1);
}

TEST(BlockCacheLru, EvictsLeastRecentlyUsed) {
  BlockCacheLru lru(3);
  Request(lru, {1, 2, 3});  // Use order 1 < 2 < 3.
  Request(lru, {1});        // Now 2 < 3 < 1.
  BlockCacheLru::Assignment a = Request(lru, {4});
  EXPECT_EQ(a.evictions, 1);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 2}), -1);
  EXPECT_EQ(a.slots[0], 1);  // Block 2's slot.
  a = Request(lru, {5});     // Evicts 3 (order 3 < 1 < 4).
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 3}), -1);
  EXPECT_EQ(a.slots[0], 2);
  a = Request(lru, {6});  // Evicts 1.
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 1}), -1);
  EXPECT_EQ(a.slots[0], 0);
}

TEST(BlockCacheLru, ReleaseKeepsTheOrderOfLastUseWithinARequest) {
  BlockCacheLru lru(3);
  ASSERT_OK(lru.Acquire(Keys({1, 2, 3})).status());
  ASSERT_OK(lru.Acquire(Keys({1})).status());  // Block 1 named last in the request.
  lru.Release();
  Request(lru, {4});  // Evicts 2, the least recently named.
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 2}), -1);
  EXPECT_NE(lru.Find(BlockKey{1, 0, 1}), -1);
}

TEST(BlockCacheLru, KeysDifferByOwnerAndLayer) {
  BlockCacheLru lru(4);
  const std::vector<BlockKey> keys = {
      {1, 0, 7}, {2, 0, 7}, {1, 1, 7}, {1, 0, 7}};  // The last repeats the first.
  ASSERT_OK_AND_ASSIGN(BlockCacheLru::Assignment a, lru.Acquire(keys));
  EXPECT_THAT(a.slots, ElementsAre(0, 1, 2, 0));
  EXPECT_THAT(a.misses, ElementsAre(0, 1, 2));
  EXPECT_EQ(lru.num_pinned(), 3);
}

TEST(BlockCacheLru, RequestLargerThanTheCacheIsInvalidAndChangesNothing) {
  BlockCacheLru lru(3);
  Request(lru, {1, 2});
  EXPECT_THAT(lru.Acquire(Keys({5, 6, 7, 8})), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(lru.num_pinned(), 0);
  EXPECT_EQ(lru.num_resident(), 2);
  // Duplicates count once: three distinct blocks fit.
  ASSERT_OK_AND_ASSIGN(BlockCacheLru::Assignment a, lru.Acquire(Keys({5, 6, 5, 7, 6})));
  EXPECT_EQ(a.misses.size(), 3u);
  // Across the Acquires of one request: the pins add up.
  EXPECT_THAT(lru.Acquire(Keys({8})), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(a, lru.Acquire(Keys({7, 5})));  // Already pinned: fits.
  EXPECT_EQ(a.hits, 2);
  EXPECT_THAT(a.misses, IsEmpty());
  lru.Release();
  ASSERT_OK(lru.Acquire(Keys({8})).status());
}

TEST(BlockCacheLru, PinnedSlotsOfTheCurrentRequestAreNeverEvicted) {
  BlockCacheLru lru(3);
  Request(lru, {1, 2, 3});  // LRU order 1 < 2 < 3.
  // Block 1 (the LRU) is pinned by this request; the miss must take block 2's slot.
  ASSERT_OK_AND_ASSIGN(BlockCacheLru::Assignment a, lru.Acquire(Keys({1})));
  ASSERT_OK_AND_ASSIGN(a, lru.Acquire(Keys({4})));
  EXPECT_EQ(a.evictions, 1);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 2}), -1);
  EXPECT_NE(lru.Find(BlockKey{1, 0, 1}), -1);
  // A miss listed before a hit on the LRU block does not evict that hit.
  lru.Release();  // Order now 3 < 1 < 4.
  ASSERT_OK_AND_ASSIGN(a, lru.Acquire(Keys({5, 3})));
  EXPECT_EQ(a.hits, 1);
  EXPECT_THAT(a.misses, ElementsAre(0));
  EXPECT_NE(lru.Find(BlockKey{1, 0, 3}), -1);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 1}), -1);
  // Two slots are pinned: two more blocks do not fit until Release.
  EXPECT_THAT(lru.Acquire(Keys({6, 7})), StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<int32_t> resident;
  for (int32_t b : {3, 4, 5}) resident.push_back(lru.Find(BlockKey{1, 0, b}));
  EXPECT_THAT(resident, UnorderedElementsAre(0, 1, 2));
}

TEST(BlockCacheLru, InvalidatedSlotsAreEmptyAndFilledFirst) {
  BlockCacheLru lru(3);
  ASSERT_OK_AND_ASSIGN(BlockCacheLru::Assignment a, lru.Acquire(Keys({1, 2, 3})));
  const std::vector<int32_t> failed = {a.slots[1]};
  lru.Invalidate(failed);
  EXPECT_EQ(lru.num_pinned(), 2);
  EXPECT_EQ(lru.Find(BlockKey{1, 0, 2}), -1);
  lru.Release();
  a = Request(lru, {9});  // Fills the empty slot; evicts nothing.
  EXPECT_EQ(a.slots[0], failed[0]);
  EXPECT_EQ(a.evictions, 0);
  lru.Invalidate(failed);
  lru.Invalidate(failed);  // Already empty: ignored.
  EXPECT_EQ(lru.num_resident(), 2);
}

}  // namespace
}  // namespace qllm::cuda
