#include "memstore/block_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil/block_bytes.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::memstore {
namespace {

using ::qllm::testing::IsOk;
using ::qllm::testing::StatusIs;

std::string Bytes(const BlockId& id, char part, size_t n) {
  return qllm::testing::BlockBytes(id, part, n);
}

class BlockStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    options_.path = dir_ + "/db";
    options_.model_fingerprint = "test-model-v1";
    options_.host_cache_bytes = 64 << 20;
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    ASSERT_OK_AND_ASSIGN(store_, BlockStore::Open(options_));
  }
  // Writes `layers` x `blocks` blocks of `bytes` bytes (K and V each) for `owner`.
  void WriteBlocks(const OwnerId& owner, uint32_t layers, uint32_t blocks, size_t bytes = 1024) {
    for (uint32_t l = 0; l < layers; ++l) {
      for (uint32_t b = 0; b < blocks; ++b) {
        const BlockId id{owner, l, b};
        ASSERT_OK(store_->PutBlock(id, Bytes(id, 'k', bytes), Bytes(id, 'v', bytes)));
      }
    }
  }
  void ExpectBlocks(const OwnerId& owner, uint32_t layers, uint32_t blocks, size_t bytes = 1024) {
    std::vector<BlockId> ids;
    for (uint32_t l = 0; l < layers; ++l) {
      for (uint32_t b = 0; b < blocks; ++b) ids.push_back({owner, l, b});
    }
    auto results = store_->MultiGet(ids);
    ASSERT_EQ(results.size(), ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_TRUE(results[i].ok()) << results[i].status();
      EXPECT_EQ((*results[i])->k(), Bytes(ids[i], 'k', bytes));
      EXPECT_EQ((*results[i])->v(), Bytes(ids[i], 'v', bytes));
    }
  }

  std::string dir_;
  BlockStoreOptions options_;
  std::unique_ptr<BlockStore> store_;
};

TEST_F(BlockStoreTest, OpenRejectsMissingPathOrFingerprint) {
  BlockStoreOptions bad = options_;
  bad.path.clear();
  EXPECT_THAT(BlockStore::Open(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = options_;
  bad.model_fingerprint.clear();
  EXPECT_THAT(BlockStore::Open(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(BlockStoreTest, DocumentLifecycle) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const OwnerId doc = OwnerId::Document(7, 42);
  ASSERT_OK(store_->BeginDocument(7, 42));
  WriteBlocks(doc, 2, 3);
  ASSERT_OK(store_->PutMetadata(doc, 1, 5, "representatives"));
  // Pending documents are readable by their writer.
  ExpectBlocks(doc, 2, 3);
  EXPECT_THAT(store_->GetMetadata(doc, 1, 5), qllm::testing::IsOkAndHolds("representatives"));
  ASSERT_OK_AND_ASSIGN(DocumentInfo pending, store_->GetDocumentInfo(7, 42));
  EXPECT_EQ(pending.state, DocumentState::kPending);

  ASSERT_OK(store_->CommitDocument(7, 42));
  ASSERT_OK_AND_ASSIGN(DocumentInfo info, store_->OpenDocument(7, 42));
  EXPECT_EQ(info.state, DocumentState::kCommitted);
  EXPECT_THAT(info.blocks_per_layer, ::testing::ElementsAre(3, 3));
  EXPECT_EQ(info.num_blocks, 6u);
  EXPECT_EQ(info.block_bytes, 6u * 2048);
  EXPECT_EQ(info.num_metadata, 1u);
  EXPECT_EQ(info.model_fingerprint, "test-model-v1");
  EXPECT_GT(info.commit_time_us, 0);
  ExpectBlocks(doc, 2, 3);
  EXPECT_THAT(store_->GetMetadata(doc, 1, 5), qllm::testing::IsOkAndHolds("representatives"));
  EXPECT_THAT(store_->GetMetadata(doc, 0, 5), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_EQ(store_->ListDocuments(7).size(), 1u);
  EXPECT_TRUE(store_->ListDocuments(8).empty());
}

TEST_F(BlockStoreTest, LifecycleErrorsAreExplicit) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const BlockId id{OwnerId::Document(1, 1), 0, 0};
  EXPECT_THAT(store_->PutBlock(id, "k", "v"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->CommitDocument(1, 1), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(store_->BeginDocument(1, 1));
  EXPECT_THAT(store_->BeginDocument(1, 1), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_OK(store_->PutBlock(id, "k", "v"));
  ASSERT_OK(store_->CommitDocument(1, 1));
  EXPECT_THAT(store_->CommitDocument(1, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->PutBlock(id, "k", "v"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->PutMetadata(id.owner, 0, 0, "m"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->DeleteDocument(1, 2), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BlockStoreTest, CommitRequiresEveryBlockOfEveryLayer) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const OwnerId doc = OwnerId::Document(1, 1);
  ASSERT_OK(store_->BeginDocument(1, 1));
  ASSERT_OK(store_->PutBlock({doc, 0, 0}, "k", "v"));
  ASSERT_OK(store_->PutBlock({doc, 0, 2}, "k", "v"));
  EXPECT_THAT(store_->CommitDocument(1, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("block 1")));
  ASSERT_OK(store_->PutBlock({doc, 0, 1}, "k", "v"));
  EXPECT_OK(store_->CommitDocument(1, 1));
}

TEST_F(BlockStoreTest, CommittedSurvivesReopenAndPendingDoesNot) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(store_->BeginDocument(1, 1));
  WriteBlocks(OwnerId::Document(1, 1), 3, 4);
  ASSERT_OK(store_->PutMetadata(OwnerId::Document(1, 1), 2, 0, "init tokens"));
  ASSERT_OK(store_->CommitDocument(1, 1));
  ASSERT_OK(store_->BeginDocument(1, 2));
  WriteBlocks(OwnerId::Document(1, 2), 3, 4);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ExpectBlocks(OwnerId::Document(1, 1), 3, 4);
  EXPECT_THAT(store_->GetMetadata(OwnerId::Document(1, 1), 2, 0),
              qllm::testing::IsOkAndHolds("init tokens"));
  EXPECT_THAT(store_->OpenDocument(1, 2), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetBlock({OwnerId::Document(1, 2), 0, 0}),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(FsckReport report, store_->Fsck());
  EXPECT_TRUE(report.clean());
  EXPECT_EQ(report.documents, 1u);
  EXPECT_EQ(report.blocks_checked, 12u);
  EXPECT_EQ(report.metadata_checked, 1u);
  // The id of a dropped pending document can be reused.
  EXPECT_OK(store_->BeginDocument(1, 2));
}

TEST_F(BlockStoreTest, SessionsVanishAtCloseAndAtReopen) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const OwnerId s1 = OwnerId::Session(1, 100);
  const OwnerId s2 = OwnerId::Session(1, 101);
  WriteBlocks(s1, 2, 2);
  WriteBlocks(s2, 2, 2);
  ASSERT_OK(store_->PutMetadata(s1, 0, 1, "pending tokens"));
  ExpectBlocks(s1, 2, 2);
  EXPECT_THAT(store_->GetMetadata(s1, 0, 1), qllm::testing::IsOkAndHolds("pending tokens"));
  ASSERT_OK(store_->CloseSession(1, 100));
  EXPECT_THAT(store_->GetBlock({s1, 0, 0}), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetMetadata(s1, 0, 1), StatusIs(absl::StatusCode::kNotFound));
  ExpectBlocks(s2, 2, 2);
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_THAT(store_->GetBlock({s2, 0, 0}), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BlockStoreTest, DocumentOfAnotherModelIsFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(store_->BeginDocument(1, 1));
  WriteBlocks(OwnerId::Document(1, 1), 1, 2);
  ASSERT_OK(store_->PutMetadata(OwnerId::Document(1, 1), 0, 0, "m"));
  ASSERT_OK(store_->CommitDocument(1, 1));
  options_.model_fingerprint = "test-model-v2";
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_THAT(store_->OpenDocument(1, 1), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->GetBlock({OwnerId::Document(1, 1), 0, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->GetMetadata(OwnerId::Document(1, 1), 0, 0),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(DocumentInfo info, store_->GetDocumentInfo(1, 1));
  EXPECT_EQ(info.model_fingerprint, "test-model-v1");
  // The document can still be deleted by an administrator.
  EXPECT_OK(store_->DeleteDocument(1, 1));
}

TEST_F(BlockStoreTest, DeleteRemovesDocumentDurably) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (uint64_t d : {1, 2}) {
    ASSERT_OK(store_->BeginDocument(1, d));
    WriteBlocks(OwnerId::Document(1, d), 2, 2);
    ASSERT_OK(store_->PutMetadata(OwnerId::Document(1, d), 0, 0, "m"));
    ASSERT_OK(store_->CommitDocument(1, d));
  }
  ASSERT_OK(store_->DeleteDocument(1, 1));
  EXPECT_THAT(store_->GetBlock({OwnerId::Document(1, 1), 0, 0}),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_THAT(store_->OpenDocument(1, 1), StatusIs(absl::StatusCode::kNotFound));
  ExpectBlocks(OwnerId::Document(1, 2), 2, 2);
  ASSERT_OK_AND_ASSIGN(FsckReport report, store_->Fsck());
  EXPECT_TRUE(report.clean());
  EXPECT_EQ(report.documents, 1u);
}

TEST_F(BlockStoreTest, TenantsAreIsolated) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(store_->BeginDocument(1, 5));
  WriteBlocks(OwnerId::Document(1, 5), 1, 1);
  ASSERT_OK(store_->CommitDocument(1, 5));
  EXPECT_THAT(store_->OpenDocument(2, 5), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->GetBlock({OwnerId::Document(2, 5), 0, 0}),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->DeleteDocument(2, 5), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(store_->ListDocuments(2).empty());
  ExpectBlocks(OwnerId::Document(1, 5), 1, 1);
}

TEST_F(BlockStoreTest, MultiGetReportsEachBlock) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(store_->BeginDocument(1, 1));
  WriteBlocks(OwnerId::Document(1, 1), 1, 2);
  ASSERT_OK(store_->CommitDocument(1, 1));
  const std::vector<BlockId> ids = {{OwnerId::Document(1, 1), 0, 1},
                                    {OwnerId::Document(1, 1), 0, 9},
                                    {OwnerId::Document(1, 9), 0, 0},
                                    {OwnerId::Session(1, 1), 0, 0}};
  auto results = store_->MultiGet(ids);
  EXPECT_THAT(results[0], IsOk());
  EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(results[2], StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(results[3], StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BlockStoreTest, SmallHostCacheEvictsAndReadsBackFromDisk) {
  options_.host_cache_bytes = 1 << 20;  // Holds 8 blocks of 128 KiB.
  options_.host_cache_shards = 1;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const OwnerId doc = OwnerId::Document(1, 1);
  ASSERT_OK(store_->BeginDocument(1, 1));
  WriteBlocks(doc, 4, 10, 64 << 10);
  ASSERT_OK(store_->CommitDocument(1, 1));
  ExpectBlocks(doc, 4, 10, 64 << 10);
  const StoreStats stats = store_->GetStats();
  EXPECT_LE(stats.host.bytes, options_.host_cache_bytes);
  EXPECT_GT(stats.host_evictions, 0u);
  EXPECT_GT(stats.disk_reads, 0u);
  EXPECT_LT(stats.host_hit_rate, 1.0);
  EXPECT_EQ(stats.disk.blocks, 40u);
  EXPECT_GT(stats.disk.bytes, 40u * (128 << 10));
  EXPECT_EQ(stats.blocks_written, 40u);
  EXPECT_EQ(stats.put_latency.count, 40u);
  EXPECT_EQ(stats.commit_latency.count, 1u);
  EXPECT_EQ(stats.multiget_latency.count, 1u);
}

TEST_F(BlockStoreTest, PrefetchLoadsBlocksIntoTheHostCache) {
  options_.cache_on_put = false;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  const OwnerId doc = OwnerId::Document(1, 1);
  ASSERT_OK(store_->BeginDocument(1, 1));
  WriteBlocks(doc, 2, 5);
  ASSERT_OK(store_->CommitDocument(1, 1));
  std::vector<BlockId> ids;
  for (uint32_t b = 0; b < 5; ++b) ids.push_back({doc, 1, b});
  EXPECT_OK(store_->Prefetch(ids).get());
  EXPECT_EQ(store_->GetStats().prefetched_blocks, 5u);
  ExpectBlocks(doc, 0, 0);
  auto results = store_->MultiGet(ids);
  for (auto& r : results) ASSERT_OK(r.status());
  const StoreStats stats = store_->GetStats();
  EXPECT_EQ(stats.host_hits, 5u);
  EXPECT_EQ(stats.host_misses, 0u);
  // A prefetch of a missing document reports the error.
  EXPECT_THAT(store_->Prefetch({{OwnerId::Document(1, 9), 0, 0}}).get(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(BlockStoreTest, ConcurrentWritersAndReaders) {
  options_.host_cache_bytes = 256 << 10;
  ASSERT_NO_FATAL_FAILURE(Reopen());
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      const OwnerId doc = OwnerId::Document(1, t);
      ASSERT_OK(store_->BeginDocument(1, t));
      WriteBlocks(doc, 2, 8, 8 << 10);
      ASSERT_OK(store_->CommitDocument(1, t));
      for (int round = 0; round < 3; ++round) ExpectBlocks(doc, 2, 8, 8 << 10);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store_->ListDocuments(1).size(), 4u);
  EXPECT_EQ(store_->GetStats().committed_documents, 4u);
}

}  // namespace
}  // namespace qllm::memstore
