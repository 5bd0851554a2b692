// DeviceBlockCache: uploads through a fake loader, device contents after hits, misses and
// evictions, loads in several staging rounds, loader errors, and ordering: the compute stream
// sees the uploaded data (reads on the compute stream, then only that stream is synchronized),
// and an upload into an evicted slot does not overtake compute work enqueued before Release.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "cuda/device.h"
#include "cuda/device_block_cache.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

constexpr size_t kFloatsPerBlock = 300;  // Not a power of two.

// Value i of the K (sign +) or V (sign -) of a block: unique per (owner, layer, block, i).
float Value(const BlockKey& key, size_t i, float sign) {
  return sign * (static_cast<float>(key.owner % 7) * 1e6f + static_cast<float>(key.layer) * 1e5f +
                 static_cast<float>(key.block) * 1e3f + static_cast<float>(i));
}

class FakeLoader final : public BlockLoader {
 public:
  absl::Status Load(std::span<const BlockKey> keys, size_t floats_per_block, float* h_k,
                    float* h_v) override {
    ++calls;
    for (size_t b = 0; b < keys.size(); ++b) {
      if (keys[b].block == fail_block) return absl::NotFoundError("fake: missing block");
      loaded.push_back(keys[b]);
      for (size_t i = 0; i < floats_per_block; ++i) {
        h_k[b * floats_per_block + i] = Value(keys[b], i, 1.0f);
        h_v[b * floats_per_block + i] = Value(keys[b], i, -1.0f);
      }
    }
    return absl::OkStatus();
  }
  void Prefetch(std::span<const BlockKey> keys) override { prefetched += keys.size(); }

  int calls = 0;
  size_t prefetched = 0;
  int32_t fail_block = -1;
  std::vector<BlockKey> loaded;
};

std::vector<BlockKey> Keys(std::vector<int32_t> blocks, uint64_t owner = 3, int32_t layer = 1) {
  std::vector<BlockKey> keys;
  for (int32_t b : blocks) keys.push_back(BlockKey{owner, layer, b});
  return keys;
}

class DeviceBlockCacheGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    absl::StatusOr<CudaStream> stream = CudaStream::Create();
    ASSERT_TRUE(stream.ok()) << stream.status();
    compute_.emplace(*std::move(stream));
  }

  std::unique_ptr<DeviceBlockCache> MakeCache(int32_t slots, int32_t staging = 0) {
    absl::StatusOr<std::unique_ptr<DeviceBlockCache>> cache = DeviceBlockCache::Create(
        {.num_slots = slots, .floats_per_block = kFloatsPerBlock, .staging_blocks = staging});
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *std::move(cache) : nullptr;
  }

  // Gathers `slots` on the compute stream, synchronizes only the compute stream, and checks
  // that they hold the K and V of `keys`.
  void ExpectContents(const DeviceBlockCache& cache, const std::vector<int32_t>& slots,
                      const std::vector<BlockKey>& keys) {
    ASSERT_EQ(slots.size(), keys.size());
    const size_t n = slots.size() * kFloatsPerBlock;
    ASSERT_OK_AND_ASSIGN(auto d_k, DeviceBuffer<float>::Create(n));
    ASSERT_OK_AND_ASSIGN(auto d_v, DeviceBuffer<float>::Create(n));
    ASSERT_OK(cache.Gather(slots, d_k.data(), d_v.data(), compute()));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> k, d_k.ToHost(compute()));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> v, d_v.ToHost(compute()));
    int mismatches = 0;
    for (size_t b = 0; b < keys.size(); ++b) {
      for (size_t i = 0; i < kFloatsPerBlock; ++i) {
        const size_t at = b * kFloatsPerBlock + i;
        if (k[at] != Value(keys[b], i, 1.0f) || v[at] != Value(keys[b], i, -1.0f)) {
          if (++mismatches <= 5) {
            ADD_FAILURE() << "block " << keys[b].block << " (slot " << slots[b] << ") value " << i
                          << ": k " << k[at] << " v " << v[at] << ", expected "
                          << Value(keys[b], i, 1.0f);
          }
        }
      }
    }
    EXPECT_EQ(mismatches, 0);
  }

  Stream compute() const { return compute_->get(); }

  std::optional<CudaStream> compute_;
};

TEST_F(DeviceBlockCacheGpuTest, MissesUploadAndHitsDoNotCopy) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(4);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  const std::vector<BlockKey> keys = Keys({5, 9, 2});
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> slots, cache->Ensure(keys, &loader, compute()));
  ExpectContents(*cache, slots, keys);
  ASSERT_OK(cache->Release(compute()));
  EXPECT_EQ(cache->stats().misses, 3);
  EXPECT_EQ(cache->stats().hits, 0);
  EXPECT_EQ(cache->stats().bytes_uploaded,
            static_cast<int64_t>(2 * 3 * kFloatsPerBlock * sizeof(float)));

  // Hits: no load, no bytes, same slots and data.
  const std::vector<BlockKey> again = Keys({2, 5});
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> slots2, cache->Ensure(again, &loader, compute()));
  EXPECT_EQ(slots2, (std::vector<int32_t>{slots[2], slots[0]}));
  ExpectContents(*cache, slots2, again);
  ASSERT_OK(cache->Release(compute()));
  EXPECT_EQ(loader.calls, 1);
  EXPECT_EQ(cache->stats().hits, 2);
  EXPECT_EQ(cache->stats().bytes_uploaded,
            static_cast<int64_t>(2 * 3 * kFloatsPerBlock * sizeof(float)));
  for (int32_t s : slots) EXPECT_NE(cache->d_k(s), nullptr);
}

TEST_F(DeviceBlockCacheGpuTest, EvictionsReloadTheRightBlocks) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(3);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  // Keys of two owners and layers share the cache; each request evicts the LRU blocks.
  const std::vector<std::vector<BlockKey>> requests = {
      Keys({0, 1, 2}),
      Keys({1, 7}, /*owner=*/4),
      Keys({2, 3}),
      Keys({0, 1, 2}),
      Keys({1, 2}, /*owner=*/3, /*layer=*/0),
  };
  for (const std::vector<BlockKey>& keys : requests) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> slots, cache->Ensure(keys, &loader, compute()));
    ExpectContents(*cache, slots, keys);
    ASSERT_OK(cache->Release(compute()));
  }
  const DeviceBlockCacheStats& st = cache->stats();
  EXPECT_EQ(st.misses, static_cast<int64_t>(loader.loaded.size()));
  EXPECT_EQ(st.hits + st.misses, 3 + 2 + 2 + 3 + 2);
  EXPECT_GT(st.evictions, 0);
  EXPECT_EQ(st.misses - st.evictions, 3);  // Every miss after the first three evicted.
}

TEST_F(DeviceBlockCacheGpuTest, ManyMissesLoadInStagingRounds) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(16, /*staging=*/3);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  // Scattered slots: fill, then free every other one by evicting through a second request.
  const std::vector<BlockKey> first = Keys({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> slots, cache->Ensure(first, &loader, compute()));
  ASSERT_OK(cache->Release(compute()));
  EXPECT_EQ(loader.calls, 6);  // ceil(16 / 3)
  EXPECT_EQ(loader.prefetched, 16u);
  const std::vector<BlockKey> second = Keys({1, 3, 5, 100, 101, 102, 103, 104, 105, 106, 107});
  ASSERT_OK_AND_ASSIGN(slots, cache->Ensure(second, &loader, compute()));
  ExpectContents(*cache, slots, second);
  ASSERT_OK(cache->Release(compute()));
  EXPECT_EQ(cache->stats().load_rounds, 6 + 3);
}

TEST_F(DeviceBlockCacheGpuTest, UploadIntoAnEvictedSlotWaitsForEarlierComputeWork) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(2);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  const std::vector<BlockKey> a = Keys({10, 11});
  const std::vector<BlockKey> b = Keys({20, 21});
  const size_t n = 2 * kFloatsPerBlock;
  ASSERT_OK_AND_ASSIGN(auto d_k, DeviceBuffer<float>::Create(n));
  ASSERT_OK_AND_ASSIGN(auto d_v, DeviceBuffer<float>::Create(n));
  for (int round = 0; round < 20; ++round) {
    // Reads of `a` enqueued on compute, then (without any host sync) `b` evicts `a`.
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> sa, cache->Ensure(a, &loader, compute()));
    ASSERT_OK(cache->Gather(sa, d_k.data(), d_v.data(), compute()));
    ASSERT_OK(cache->Release(compute()));
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> sb, cache->Ensure(b, &loader, compute()));
    ASSERT_OK(cache->Release(compute()));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> k, d_k.ToHost(compute()));
    for (size_t i = 0; i < kFloatsPerBlock; ++i) {
      ASSERT_EQ(k[i], Value(a[0], i, 1.0f)) << "round " << round << " value " << i;
      ASSERT_EQ(k[kFloatsPerBlock + i], Value(a[1], i, 1.0f)) << "round " << round;
    }
  }
  EXPECT_EQ(cache->stats().misses, 80);
}

TEST_F(DeviceBlockCacheGpuTest, RequestLargerThanTheCacheIsInvalid) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(2);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  EXPECT_THAT(cache->Ensure(Keys({1, 2, 3}), &loader, compute()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(loader.calls, 0);
  EXPECT_THAT(DeviceBlockCache::Create({.num_slots = 0, .floats_per_block = 4}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const std::vector<int32_t> bad = {2};
  ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(kFloatsPerBlock));
  EXPECT_THAT(cache->Gather(bad, d_out.data(), d_out.data(), compute()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(DeviceBlockCacheGpuTest, LoaderErrorDropsTheMissedBlocks) {
  std::unique_ptr<DeviceBlockCache> cache = MakeCache(4);
  ASSERT_NE(cache, nullptr);
  FakeLoader loader;
  ASSERT_OK(cache->Ensure(Keys({1}), &loader, compute()).status());
  ASSERT_OK(cache->Release(compute()));
  loader.fail_block = 3;
  EXPECT_THAT(cache->Ensure(Keys({1, 2, 3}), &loader, compute()),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(cache->Release(compute()));
  EXPECT_NE(cache->Find(BlockKey{3, 1, 1}), -1);  // The hit stays.
  EXPECT_EQ(cache->Find(BlockKey{3, 1, 2}), -1);
  EXPECT_EQ(cache->Find(BlockKey{3, 1, 3}), -1);
  loader.fail_block = -1;
  const std::vector<BlockKey> keys = Keys({1, 2, 3});
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> slots, cache->Ensure(keys, &loader, compute()));
  ExpectContents(*cache, slots, keys);
  ASSERT_OK(cache->Release(compute()));
}

}  // namespace
}  // namespace qllm::cuda
