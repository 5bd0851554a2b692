// The context memory over the RocksDB memory store gives the same results as over host memory,
// and store failures surface as errors.
#include "worker/memstore_block_storage.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "coordinator/local_pipeline.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/model_shard.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;

class MemstoreBlockStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    std::filesystem::create_directories(dir_ + "/model");
    qllm::testing::WriteTinyModel(dir_ + "/model", qllm::testing::TinyModelSpec{});
    auto shard = ModelShard::Load(dir_ + "/model");
    ASSERT_OK(shard.status());
    shard_ = std::move(shard).value();
    auto pipeline = coordinator::LocalPipeline::Create({shard_.get()});
    ASSERT_OK(pipeline.status());
    pipeline_ = std::move(pipeline).value();
    memstore::BlockStoreOptions o;
    o.path = dir_ + "/db";
    o.model_fingerprint = "tiny";
    o.host_cache_bytes = 64 << 10;  // Small: most reads go to RocksDB.
    auto store = memstore::BlockStore::Open(o);
    ASSERT_OK(store.status());
    store_ = std::move(store).value();
    for (int i = 0; i < 500; ++i) tokens_.push_back((i * 7919 + 13) % 64);
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  SessionOptions Options(BlockStorage* storage) {
    SessionOptions o;
    o.memory.mode = AttentionMode::kQllm;
    o.memory.n_init = 8;
    o.memory.n_local = 32;
    o.memory.block_size = 8;
    o.memory.topk = 3;
    o.memory.repr_topk = 2;
    o.memory.exc_block_size = 16;
    o.memory.chunk_size = 64;
    o.question = QuestionSpan{1, 12};
    o.storage = storage;
    o.session_id = 42;
    o.record_selections = true;
    return o;
  }

  absl::StatusOr<std::vector<float>> Run(BlockStorage* storage, std::vector<ChunkSelection>* sels) {
    auto session = pipeline_->NewSession(Options(storage));
    if (!session.ok()) return session.status();
    std::vector<float> logits;
    absl::Status s = pipeline_->Prefill(session->get(), tokens_, 64, true, &logits);
    if (!s.ok()) return s;
    *sels = (*session)->Selections();
    return logits;
  }

  std::string dir_;
  std::unique_ptr<ModelShard> shard_;
  std::unique_ptr<coordinator::LocalPipeline> pipeline_;
  std::unique_ptr<memstore::BlockStore> store_;
  std::vector<int32_t> tokens_;
};

TEST_F(MemstoreBlockStorageTest, SameResultsAsHostMemory) {
  InMemoryBlockStorage host;
  MemstoreBlockStorage disk(store_.get(), /*tenant=*/1);
  std::vector<ChunkSelection> a, b;
  ASSERT_OK_AND_ASSIGN(auto la, Run(&host, &a));
  ASSERT_OK_AND_ASSIGN(auto lb, Run(&disk, &b));
  EXPECT_EQ(la, lb);  // Blocks come back bit-identical, so everything downstream is too.
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].blocks, b[i].blocks);
  const memstore::StoreStats stats = store_->GetStats();
  EXPECT_GT(stats.disk_reads + stats.host_hits, 0u);
}

TEST_F(MemstoreBlockStorageTest, DeleteSessionRemovesItsBlocks) {
  MemstoreBlockStorage disk(store_.get(), 1);
  std::vector<ChunkSelection> sels;
  ASSERT_OK(Run(&disk, &sels).status());
  std::vector<float> k(8 * 16), v(8 * 16);
  const BlockId first{42, 0, 0};
  ASSERT_OK(disk.MultiGet({&first, 1}, k.size(), k.data(), v.data()));
  ASSERT_OK(disk.DeleteSession(42));
  EXPECT_THAT(disk.MultiGet({&first, 1}, k.size(), k.data(), v.data()),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(MemstoreBlockStorageTest, WrongBlockSizeIsDataLoss) {
  MemstoreBlockStorage disk(store_.get(), 1);
  std::vector<float> k(10, 1.0f), v(10, 2.0f);
  const BlockId id{5, 0, 0};
  ASSERT_OK(disk.Put(id, k, v));
  std::vector<float> out(20);
  EXPECT_THAT(disk.MultiGet({&id, 1}, 20, out.data(), out.data()),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(MemstoreBlockStorageTest, DocumentOwnerIdsAreMemstoreDocuments) {
  MemstoreBlockStorage disk(store_.get(), 1);
  std::vector<float> k(16, 1.0f), v(16, 2.0f), k_out(16), v_out(16);
  const BlockId id{kDocumentOwnerBit | 5, 0, 0};
  // A document block needs a pending document of that id.
  EXPECT_THAT(disk.Put(id, k, v), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(store_->BeginDocument(1, 5));
  ASSERT_OK(disk.Put(id, k, v));
  ASSERT_OK(store_->CommitDocument(1, 5));
  ASSERT_OK_AND_ASSIGN(memstore::BlockRef block,
                       store_->GetBlock({memstore::OwnerId::Document(1, 5), 0, 0}));
  EXPECT_EQ(block->k().size(), k.size() * sizeof(float));
  // DeleteSession never deletes a document; session 5 is another owner.
  ASSERT_OK(disk.DeleteSession(kDocumentOwnerBit | 5));
  ASSERT_OK(disk.DeleteSession(5));
  ASSERT_OK(disk.MultiGet({&id, 1}, k.size(), k_out.data(), v_out.data()));
  EXPECT_EQ(k_out, k);
  EXPECT_EQ(v_out, v);
}

}  // namespace
}  // namespace qllm::worker
