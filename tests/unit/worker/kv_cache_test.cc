// worker::KvCache's saved form: Save writes AppendBlobHeader's header and then the raw rows (the
// CUDA backend writes and reads the rows itself, so the two must agree byte for byte), and
// ParseBlob / Load accept exactly those blobs.
#include "worker/kv_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/testutil/status_matchers.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;

constexpr int64_t kKvDim = 3;

KvCache Filled(int64_t rows) {
  std::vector<float> k(rows * kKvDim), v(rows * kKvDim);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<float>(i) + 0.5f;
    v[i] = -static_cast<float>(i);
  }
  KvCache c(kKvDim);
  c.Append(k.data(), v.data(), rows, kKvDim);
  return c;
}

TEST(KvCacheBlob, SaveIsTheHeaderThenTheKeysThenTheValues) {
  for (int64_t rows : {0, 1, 5}) {
    const KvCache c = Filled(rows);
    std::string saved;
    ASSERT_OK(c.Save(&saved));
    std::string manual;
    KvCache::AppendBlobHeader(kKvDim, rows, &manual);
    manual.append(reinterpret_cast<const char*>(c.keys()), rows * kKvDim * sizeof(float));
    manual.append(reinterpret_cast<const char*>(c.values()), rows * kKvDim * sizeof(float));
    EXPECT_EQ(saved, manual) << rows << " rows";

    ASSERT_OK_AND_ASSIGN(const KvCache::BlobRows parsed, KvCache::ParseBlob(saved, kKvDim));
    EXPECT_EQ(parsed.size, rows);
    if (rows > 0) {
      EXPECT_EQ(std::memcmp(parsed.keys, c.keys(), rows * kKvDim * sizeof(float)), 0);
      EXPECT_EQ(std::memcmp(parsed.values, c.values(), rows * kKvDim * sizeof(float)), 0);
    }
    KvCache loaded(kKvDim);
    ASSERT_OK(loaded.Load(saved));
    ASSERT_EQ(loaded.size(), rows);
    if (rows > 0) {
      EXPECT_EQ(std::memcmp(loaded.keys(), c.keys(), rows * kKvDim * sizeof(float)), 0);
      EXPECT_EQ(std::memcmp(loaded.values(), c.values(), rows * kKvDim * sizeof(float)), 0);
    }
  }
}

TEST(KvCacheBlob, DamagedBlobsAreRefusedAndLeaveTheCacheAsItWas) {
  std::string good;
  ASSERT_OK(Filled(4).Save(&good));
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_THAT(KvCache::ParseBlob(bad_magic, kKvDim).status(),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("bad magic")));
  EXPECT_THAT(KvCache::ParseBlob(good.substr(0, 10), kKvDim).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(KvCache::ParseBlob(good.substr(0, good.size() - 4), kKvDim).status(),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("4 rows")));
  EXPECT_THAT(KvCache::ParseBlob(good + "x", kKvDim).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(KvCache::ParseBlob(good, kKvDim + 1).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("kv_dim=3")));
  KvCache c = Filled(2);
  EXPECT_THAT(c.Load(bad_magic), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(c.size(), 2);
  EXPECT_EQ(c.keys()[1], 1.5f);
}

}  // namespace
}  // namespace qllm::worker
