// Storage faults under the memory store: power loss, disk full, write errors and bit rot.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "memstore/block_store.h"
#include "memstore/fault_injection_fs.h"
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

constexpr uint32_t kLayers = 2;
constexpr uint32_t kBlocks = 4;
constexpr size_t kPartBytes = 16 << 10;

// The parameter is BlockStoreOptions::document_blocks_in_wal: both write modes must keep the
// same guarantees.
class FaultInjectionTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    fs_ = std::make_shared<FaultInjectionFileSystem>(nullptr);
    options_.path = dir_ + "/db";
    options_.model_fingerprint = "test-model";
    options_.file_system = fs_;
    options_.write_buffer_bytes = 256 << 10;  // Flush often so SST and blob files take part.
    options_.host_cache_bytes = 0;            // Every read goes to disk.
    options_.document_blocks_in_wal = GetParam();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    ASSERT_OK_AND_ASSIGN(store_, BlockStore::Open(options_));
  }
  // Simulates a power cut: nothing more reaches the disk, unsynced data is dropped, and the
  // store is opened again.
  void PowerLoss() {
    fs_->SetActive(false);
    store_.reset();
    ASSERT_OK(fs_->DropUnsyncedData());
    fs_->SetActive(true);
    Reopen();
  }
  // The helpers above ASSERT inside void functions; callers stop with ASSERT_NO_FATAL_FAILURE.
  absl::Status WriteDocument(uint64_t doc, bool commit) {
    const OwnerId owner = OwnerId::Document(1, doc);
    if (absl::Status s = store_->BeginDocument(1, doc); !s.ok()) return s;
    for (uint32_t l = 0; l < kLayers; ++l) {
      for (uint32_t b = 0; b < kBlocks; ++b) {
        const BlockId id{owner, l, b};
        absl::Status s =
            store_->PutBlock(id, Bytes(id, 'k', kPartBytes), Bytes(id, 'v', kPartBytes));
        if (!s.ok()) return s;
      }
    }
    if (absl::Status s = store_->PutMetadata(owner, 0, 0, "meta" + std::to_string(doc)); !s.ok()) {
      return s;
    }
    return commit ? store_->CommitDocument(1, doc) : absl::OkStatus();
  }
  // Puts every block and the metadata of a begun document, then commits it.
  absl::Status PutBlocksAndCommit(uint64_t doc) {
    const OwnerId owner = OwnerId::Document(1, doc);
    for (uint32_t l = 0; l < kLayers; ++l) {
      for (uint32_t b = 0; b < kBlocks; ++b) {
        const BlockId id{owner, l, b};
        absl::Status s =
            store_->PutBlock(id, Bytes(id, 'k', kPartBytes), Bytes(id, 'v', kPartBytes));
        if (!s.ok()) return s;
      }
    }
    if (absl::Status s = store_->PutMetadata(owner, 0, 0, "meta" + std::to_string(doc)); !s.ok()) {
      return s;
    }
    return store_->CommitDocument(1, doc);
  }
  // Returns OK if the document reads back complete and byte-identical.
  absl::Status VerifyDocument(uint64_t doc) {
    const OwnerId owner = OwnerId::Document(1, doc);
    std::vector<BlockId> ids;
    for (uint32_t l = 0; l < kLayers; ++l) {
      for (uint32_t b = 0; b < kBlocks; ++b) ids.push_back({owner, l, b});
    }
    auto results = store_->MultiGet(ids);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!results[i].ok()) return results[i].status();
      if ((*results[i])->k() != Bytes(ids[i], 'k', kPartBytes) ||
          (*results[i])->v() != Bytes(ids[i], 'v', kPartBytes)) {
        return absl::InternalError("block content differs");
      }
    }
    auto meta = store_->GetMetadata(owner, 0, 0);
    if (!meta.ok()) return meta.status();
    if (*meta != "meta" + std::to_string(doc)) return absl::InternalError("metadata differs");
    return absl::OkStatus();
  }

  std::string dir_;
  std::shared_ptr<FaultInjectionFileSystem> fs_;
  BlockStoreOptions options_;
  std::unique_ptr<BlockStore> store_;
};

TEST_P(FaultInjectionTest, PowerLossKeepsCommittedDocumentsAndDropsTheRest) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  std::vector<uint64_t> committed;
  uint64_t next = 1;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 3; ++i) {
      ASSERT_OK(WriteDocument(next, /*commit=*/true));
      committed.push_back(next++);
    }
    // In flight at the power cut: a pending document and a session.
    ASSERT_OK(WriteDocument(next++, /*commit=*/false));
    ASSERT_OK(store_->PutBlock({OwnerId::Session(1, 1), 0, 0}, "k", "v"));
    ASSERT_NO_FATAL_FAILURE(PowerLoss());
    for (uint64_t doc : committed) EXPECT_OK(VerifyDocument(doc)) << "document " << doc;
    EXPECT_EQ(store_->ListDocuments(1).size(), committed.size());
    EXPECT_THAT(store_->GetBlock({OwnerId::Session(1, 1), 0, 0}),
                StatusIs(absl::StatusCode::kNotFound));
    ASSERT_OK_AND_ASSIGN(FsckReport report, store_->Fsck());
    EXPECT_TRUE(report.clean()) << "orphans " << report.orphan_blocks << " missing "
                                << report.missing_blocks << " corrupt " << report.corrupt_values;
  }
}

TEST_P(FaultInjectionTest, PowerLossAfterDeleteKeepsTheDeletion) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(WriteDocument(1, true));
  ASSERT_OK(WriteDocument(2, true));
  ASSERT_OK(store_->DeleteDocument(1, 1));
  ASSERT_NO_FATAL_FAILURE(PowerLoss());
  EXPECT_THAT(store_->OpenDocument(1, 1), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(VerifyDocument(2));
}

TEST_P(FaultInjectionTest, DiskFullIsResourceExhaustedAndRecoversWhenSpaceReturns) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(WriteDocument(1, true));
  ASSERT_OK(store_->BeginDocument(1, 2));
  fs_->SetNoSpace(true);
  // The put (blocks in the WAL) or the commit (flush at commit) fails with a clear code.
  EXPECT_THAT(PutBlocksAndCommit(2), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(store_->BeginDocument(1, 3), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(PutBlocksAndCommit(2), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_OK(VerifyDocument(1));
  EXPECT_THAT(store_->OpenDocument(1, 2), qllm::testing::IsOk());  // Still pending.
  EXPECT_GT(fs_->injected_errors(), 0u);
  fs_->SetNoSpace(false);
  if (!GetParam()) {
    // A failed flush of WAL-less data is fatal to RocksDB 7.8: only a reopen recovers, and the
    // pending document is gone with it.
    EXPECT_THAT(PutBlocksAndCommit(2), StatusIs(absl::StatusCode::kResourceExhausted));
    ASSERT_NO_FATAL_FAILURE(Reopen());
    EXPECT_OK(VerifyDocument(1));
    ASSERT_OK(store_->BeginDocument(1, 2));
  }
  // Space is back: writes succeed again without a reopen (the store resumes RocksDB; its
  // recovery may take a moment, during which writes still report RESOURCE_EXHAUSTED).
  absl::Status commit = PutBlocksAndCommit(2);
  for (int i = 0; i < 300 && !commit.ok(); ++i) {
    EXPECT_THAT(commit, StatusIs(absl::StatusCode::kResourceExhausted));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    commit = PutBlocksAndCommit(2);
  }
  ASSERT_OK(commit);
  ASSERT_OK(WriteDocument(3, true));
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_OK(VerifyDocument(1));
  EXPECT_OK(VerifyDocument(2));
  EXPECT_OK(VerifyDocument(3));
}

TEST_P(FaultInjectionTest, WriteErrorIsUnavailableAndReopenRecovers) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  ASSERT_OK(WriteDocument(1, true));
  ASSERT_OK(store_->BeginDocument(1, 2));
  fs_->SetWriteError(true);
  EXPECT_THAT(PutBlocksAndCommit(2), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_OK(VerifyDocument(1));
  fs_->SetWriteError(false);
  // RocksDB treats a failed WAL append or flush as fatal: the store reports UNAVAILABLE until
  // it is reopened; committed documents are intact and the pending one is gone.
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_OK(VerifyDocument(1));
  EXPECT_THAT(store_->OpenDocument(1, 2), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(WriteDocument(2, true));
  EXPECT_OK(VerifyDocument(2));
}

// Returns the paths of the files in `dir` whose name ends with `suffix`.
std::vector<std::string> FilesWithSuffix(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().string();
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(name);
    }
  }
  return out;
}

TEST_P(FaultInjectionTest, FlippedByteIsDataLossForThatDocumentOnly) {
  ASSERT_NO_FATAL_FAILURE(Reopen());
  for (uint64_t doc = 1; doc <= 3; ++doc) ASSERT_OK(WriteDocument(doc, true));
  ASSERT_OK(store_->Flush());
  store_.reset();
  // Find a block payload of document 2 in the blob files and flip one byte in its middle.
  const BlockId victim{OwnerId::Document(1, 2), 1, 2};
  const std::string needle = Bytes(victim, 'v', kPartBytes).substr(4096, 64);
  bool flipped = false;
  for (const std::string& path : FilesWithSuffix(options_.path, ".blob")) {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    const size_t pos = data.find(needle);
    if (pos == std::string::npos) continue;
    file.seekp(static_cast<std::streamoff>(pos + 10));
    const char c = static_cast<char>(data[pos + 10] ^ 0x01);
    file.write(&c, 1);
    flipped = true;
    break;
  }
  ASSERT_TRUE(flipped) << "block payload not found in any blob file";
  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_THAT(store_->GetBlock(victim), StatusIs(absl::StatusCode::kDataLoss));
  // The whole document is quarantined; the others serve normally.
  EXPECT_THAT(store_->OpenDocument(1, 2), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(VerifyDocument(2), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_OK(VerifyDocument(1));
  EXPECT_OK(VerifyDocument(3));
  EXPECT_GT(store_->GetStats().checksum_failures, 0u);
  ASSERT_OK_AND_ASSIGN(FsckReport report, store_->Fsck());
  EXPECT_EQ(report.corrupt_values, 1u);
  EXPECT_THAT(report.damaged_documents, ::testing::ElementsAre(std::make_pair(1ull, 2ull)));
  // New writes still work.
  EXPECT_OK(WriteDocument(4, true));
}

INSTANTIATE_TEST_SUITE_P(WriteModes, FaultInjectionTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "BlocksInWal" : "FlushAtCommit";
                         });

}  // namespace
}  // namespace qllm::memstore
