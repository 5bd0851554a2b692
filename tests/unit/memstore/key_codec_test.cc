#include "memstore/internal/key_codec.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/testutil/status_matchers.h"

namespace qllm::memstore::internal {
namespace {

using ::qllm::testing::StatusIs;

TEST(KeyCodec, BlockKeyRoundTripsAndIsFixedWidth) {
  const BlockId id{OwnerId::Document(0x0102030405060708ull, 0xFFFFFFFFFFFFFFFEull), 31, 16383};
  const std::string key = EncodeBlockKey(id);
  ASSERT_EQ(key.size(), kBlockKeySize);
  EXPECT_EQ(static_cast<uint8_t>(key[0]), 0x01);  // Big-endian tenant first.
  BlockId back;
  ASSERT_TRUE(DecodeBlockKey(key, &back));
  EXPECT_EQ(back, id);
  EXPECT_FALSE(DecodeBlockKey(key.substr(1), &back));
}

TEST(KeyCodec, ByteOrderEqualsNumericOrder) {
  const OwnerId owner = OwnerId::Document(1, 2);
  EXPECT_LT(EncodeBlockKey({owner, 0, 255}), EncodeBlockKey({owner, 0, 256}));
  EXPECT_LT(EncodeBlockKey({owner, 1, 0}), EncodeBlockKey({owner, 2, 0}));
  EXPECT_LT(EncodeBlockKey({owner, 0xFFFFFFFF, 0xFFFFFFFF}),
            EncodeBlockKey({OwnerId::Document(1, 3), 0, 0}));
  // Every block of an owner lies in [prefix, successor).
  const std::string prefix = OwnerPrefix(owner);
  const std::string end = PrefixSuccessor(prefix);
  EXPECT_GE(EncodeBlockKey({owner, 0, 0}), prefix);
  EXPECT_LT(EncodeBlockKey({owner, 0xFFFFFFFF, 0xFFFFFFFF}), end);
  EXPECT_GE(EncodeBlockKey({OwnerId::Document(1, 3), 0, 0}), end);
}

TEST(KeyCodec, DocumentsAndSessionsDoNotCollide) {
  EXPECT_NE(EncodeBlockKey({OwnerId::Document(1, 2), 0, 0}),
            EncodeBlockKey({OwnerId::Session(1, 2), 0, 0}));
}

TEST(KeyCodec, MetaKeyRoundTrips) {
  const OwnerId owner = OwnerId::Session(9, 10);
  const std::string key = EncodeMetaKey(MetaType::kMetadata, owner, 3, 4);
  ASSERT_EQ(key.size(), kMetaKeySize);
  MetaType type;
  OwnerId back;
  uint32_t layer = 0;
  uint32_t tag = 0;
  ASSERT_TRUE(DecodeMetaKey(key, &type, &back, &layer, &tag));
  EXPECT_EQ(type, MetaType::kMetadata);
  EXPECT_EQ(back, owner);
  EXPECT_EQ(layer, 3u);
  EXPECT_EQ(tag, 4u);
}

TEST(KeyCodec, FrameDetectsCorruptionAndMisplacedValues) {
  const std::string key = EncodeBlockKey({OwnerId::Document(1, 1), 0, 0});
  const std::string k = "kkkk";
  const std::string v = "vvvvvv";
  const auto header = MakeFrameHeader(key, k, v);
  std::string value(header.data(), header.size());
  value += k + v;
  absl::string_view kv;
  size_t k_size = 0;
  ASSERT_OK(DecodeFrame(key, value, &kv, &k_size));
  EXPECT_EQ(kv, k + v);
  EXPECT_EQ(k_size, k.size());

  std::string flipped = value;
  flipped[kFrameHeaderSize + 2] ^= 1;
  EXPECT_THAT(DecodeFrame(key, flipped, &kv, &k_size), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeFrame(key, value.substr(0, value.size() - 1), &kv, &k_size),
              StatusIs(absl::StatusCode::kDataLoss));
  const std::string other = EncodeBlockKey({OwnerId::Document(1, 1), 0, 1});
  EXPECT_THAT(DecodeFrame(other, value, &kv, &k_size), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(KeyCodec, ManifestRoundTripsAndRejectsDamage) {
  const std::string key = EncodeMetaKey(MetaType::kManifest, OwnerId::Document(1, 2), 0, 0);
  Manifest m;
  m.model_fingerprint = "llama3-8b:abc";
  m.blocks_per_layer = {3, 3, 2};
  m.block_bytes = 12345;
  m.num_metadata = 4;
  m.commit_time_us = 42;
  const std::string value = EncodeManifest(key, m);
  Manifest back;
  ASSERT_OK(DecodeManifest(key, value, &back));
  EXPECT_EQ(back.model_fingerprint, m.model_fingerprint);
  EXPECT_EQ(back.blocks_per_layer, m.blocks_per_layer);
  EXPECT_EQ(back.block_bytes, m.block_bytes);
  EXPECT_EQ(back.num_metadata, m.num_metadata);
  EXPECT_EQ(back.commit_time_us, m.commit_time_us);
  std::string bad = value;
  bad[5] ^= 0x40;
  EXPECT_THAT(DecodeManifest(key, bad, &back), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DecodeManifest(key, value.substr(0, 3), &back),
              StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace qllm::memstore::internal
