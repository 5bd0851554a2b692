// Invariants of the context memory (docs/qllm-algorithm.md, "Invariants the tests hold") and its
// error handling, on a tiny random model.
#include "worker/context_memory.h"

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
using ::testing::HasSubstr;

// Counts what the memory reads and writes; can fail on demand.
class CountingStorage final : public BlockStorage {
 public:
  absl::Status Put(const BlockId& id, std::span<const float> k, std::span<const float> v) override {
    ++puts;
    if (fail) return absl::UnavailableError("store offline");
    return inner.Put(id, k, v);
  }
  absl::Status MultiGet(std::span<const BlockId> ids, size_t floats, float* k, float* v) override {
    blocks_read += ids.size();
    return inner.MultiGet(ids, floats, k, v);
  }
  absl::Status DeleteSession(uint64_t s) override { return inner.DeleteSession(s); }

  InMemoryBlockStorage inner;
  int puts = 0;
  size_t blocks_read = 0;
  bool fail = false;
};

class ContextMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    qllm::testing::WriteTinyModel(dir_, qllm::testing::TinyModelSpec{});
    auto shard = ModelShard::Load(dir_);
    ASSERT_OK(shard.status());
    shard_ = std::move(shard).value();
    auto pipeline = coordinator::LocalPipeline::Create({shard_.get()});
    ASSERT_OK(pipeline.status());
    pipeline_ = std::move(pipeline).value();
    for (int i = 0; i < 600; ++i) tokens_.push_back((i * 7919 + 13) % 64);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static MemoryConfig Small(AttentionMode mode) {
    MemoryConfig c;
    c.mode = mode;
    c.n_init = 8;
    c.n_local = 32;
    c.block_size = 8;
    c.topk = 3;
    c.repr_topk = 2;
    c.exc_block_size = 16;
    c.chunk_size = 64;
    c.question_weight = 4.0f;
    return c;
  }

  // Logits of every position, prefilled in calls of `call` tokens.
  absl::StatusOr<std::vector<float>> Run(const SessionOptions& options, size_t n, size_t call,
                                         std::vector<ChunkSelection>* selections = nullptr) {
    auto session = pipeline_->NewSession(options);
    if (!session.ok()) return session.status();
    std::vector<float> all, logits;
    for (size_t pos = 0; pos < n; pos += call) {
      std::span<const int32_t> part(tokens_.data() + pos, std::min(call, n - pos));
      absl::Status s = pipeline_->Prefill(session->get(), part, options.memory.chunk_size,
                                          /*all_logits=*/true, &logits);
      if (!s.ok()) return s;
      all.insert(all.end(), logits.begin(), logits.end());
    }
    if (selections != nullptr) *selections = (*session)->Selections();
    return all;
  }

  SessionOptions Options(AttentionMode mode) {
    SessionOptions o;
    o.memory = Small(mode);
    o.question = QuestionSpan{1, 12};
    o.storage = &storage_;
    o.record_selections = true;
    return o;
  }

  std::string dir_;
  std::unique_ptr<ModelShard> shard_;
  std::unique_ptr<coordinator::LocalPipeline> pipeline_;
  std::vector<int32_t> tokens_;
  InMemoryBlockStorage storage_;
};

double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

TEST_F(ContextMemoryTest, WindowCoveringTheSequenceEqualsFullAttention) {
  ASSERT_OK_AND_ASSIGN(auto full, Run(Options(AttentionMode::kFull), 200, 200));
  for (AttentionMode mode :
       {AttentionMode::kStreaming, AttentionMode::kInfLlm, AttentionMode::kQllm}) {
    SessionOptions o = Options(mode);
    o.memory.n_local = 256;
    o.memory.chunk_size = 64;
    ASSERT_OK_AND_ASSIGN(auto got, Run(o, 200, 200));
    EXPECT_LT(MaxDiff(got, full), 1e-4) << AttentionModeName(mode);
  }
}

TEST_F(ContextMemoryTest, InfLlmIgnoresTheQuestion) {
  SessionOptions with = Options(AttentionMode::kInfLlm);
  SessionOptions without = with;
  without.question.reset();
  without.memory.question_weight = 0.0f;
  std::vector<ChunkSelection> a, b;
  ASSERT_OK_AND_ASSIGN(auto la, Run(with, 600, 600, &a));
  ASSERT_OK_AND_ASSIGN(auto lb, Run(without, 600, 600, &b));
  EXPECT_EQ(la, lb);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].blocks, b[i].blocks);
}

TEST_F(ContextMemoryTest, QllmWithZeroWeightEqualsInfLlm) {
  SessionOptions q = Options(AttentionMode::kQllm);
  q.memory.question_weight = 0.0f;
  std::vector<ChunkSelection> a, b;
  ASSERT_OK_AND_ASSIGN(auto lq, Run(q, 600, 600, &a));
  ASSERT_OK_AND_ASSIGN(auto li, Run(Options(AttentionMode::kInfLlm), 600, 600, &b));
  EXPECT_EQ(lq, li);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].blocks, b[i].blocks);
}

TEST_F(ContextMemoryTest, TopkZeroWithoutFarPendingKeysEqualsStreaming) {
  SessionOptions inf = Options(AttentionMode::kInfLlm);
  inf.memory.topk = 0;
  inf.memory.far_pending_global = false;
  ASSERT_OK_AND_ASSIGN(auto li, Run(inf, 600, 600));
  ASSERT_OK_AND_ASSIGN(auto ls, Run(Options(AttentionMode::kStreaming), 600, 600));
  EXPECT_EQ(li, ls);
  // With the far pending keys attended, the outputs differ: the flag matters.
  inf.memory.far_pending_global = true;
  ASSERT_OK_AND_ASSIGN(auto lf, Run(inf, 600, 600));
  EXPECT_GT(MaxDiff(lf, ls), 1e-3);
}

TEST_F(ContextMemoryTest, QuestionChangesSelectionsInQllmMode) {
  std::vector<ChunkSelection> inf, q;
  ASSERT_OK_AND_ASSIGN(auto li, Run(Options(AttentionMode::kInfLlm), 600, 600, &inf));
  ASSERT_OK_AND_ASSIGN(auto lq, Run(Options(AttentionMode::kQllm), 600, 600, &q));
  ASSERT_EQ(inf.size(), q.size());
  int differ = 0;
  for (size_t i = 0; i < q.size(); ++i) differ += inf[i].blocks != q[i].blocks;
  EXPECT_GT(differ, 0);
}

TEST_F(ContextMemoryTest, SelectionsAreDeterministicAndIndependentOfCallSplit) {
  std::vector<ChunkSelection> a, b;
  ASSERT_OK_AND_ASSIGN(auto la, Run(Options(AttentionMode::kQllm), 600, 600, &a));
  // Calls of 64 tokens: a multiple of exc_block_size, so the execution chunks are the same.
  ASSERT_OK_AND_ASSIGN(auto lb, Run(Options(AttentionMode::kQllm), 600, 64, &b));
  EXPECT_LT(MaxDiff(la, lb), 1e-5);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].blocks, b[i].blocks) << i;
    EXPECT_EQ(a[i].chunk_begin, b[i].chunk_begin);
  }
  // Selections name existing blocks, best first, at most topk of them.
  for (const ChunkSelection& s : a) {
    EXPECT_LE(s.blocks.size(), 3u);
    for (size_t j = 0; j < s.blocks.size(); ++j) {
      EXPECT_LT(s.blocks[j], s.candidates);
      if (j > 0) {
        EXPECT_GE(s.scores[j - 1], s.scores[j]);
      }
      EXPECT_EQ(s.block_starts[j], 8 + 8 * s.blocks[j]);
    }
  }
}

TEST_F(ContextMemoryTest, ScoringNeverReadsBlocks) {
  CountingStorage storage;
  SessionOptions o = Options(AttentionMode::kQllm);
  o.storage = &storage;
  std::vector<ChunkSelection> sels;
  ASSERT_OK(Run(o, 600, 600, &sels).status());
  size_t selected = 0;
  for (const auto& s : sels) selected += s.blocks.size();
  // Every block read is one that retrieval selected; blocks are written exactly once.
  EXPECT_EQ(storage.blocks_read, selected);
  EXPECT_GT(selected, 0u);
  EXPECT_EQ(static_cast<size_t>(storage.puts), storage.inner.num_blocks());
  // 600 tokens: 8 sinks, a window of 32 and < 8 pending left; the rest in blocks, per layer.
  EXPECT_EQ(storage.inner.num_blocks(), 3u * ((600 - 8 - 32) / 8));
}

TEST_F(ContextMemoryTest, StreamingRetrievesNothing) {
  std::vector<ChunkSelection> sels;
  CountingStorage storage;
  SessionOptions o = Options(AttentionMode::kStreaming);
  o.storage = &storage;
  ASSERT_OK(Run(o, 300, 300, &sels).status());
  EXPECT_EQ(storage.blocks_read, 0u);
  for (const auto& s : sels) EXPECT_TRUE(s.blocks.empty());
}

TEST_F(ContextMemoryTest, HostMemoryStaysBoundedAsBlocksAccumulate) {
  auto session = pipeline_->NewSession(Options(AttentionMode::kQllm));
  ASSERT_OK(session.status());
  std::vector<float> logits;
  ASSERT_OK(pipeline_->Prefill(session->get(), std::span(tokens_).first(200), 64, false, &logits));
  const int64_t after_200 = (*session)->stages[0]->KvBytes();
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK(pipeline_->Prefill(session->get(), std::span(tokens_).subspan(200, 400), 64, false,
                                 &logits));
  }
  const int64_t after_1800 = (*session)->stages[0]->KvBytes();
  // Only the representative index grows with length (one H*D vector per block).
  const int64_t repr_growth = 3 * ((1800 - 200) / 8) * 32 * 4;
  EXPECT_LE(after_1800 - after_200, 2 * repr_growth + 64 * 1024);
}

TEST_F(ContextMemoryTest, RejectsBadSessions) {
  SessionOptions o = Options(AttentionMode::kQllm);
  o.memory.exc_block_size = 64;  // > n_local 32
  EXPECT_THAT(Run(o, 10, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exc_block_size")));
  o = Options(AttentionMode::kQllm);
  o.memory.topk = -1;
  EXPECT_THAT(Run(o, 10, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("topk")));
  o = Options(AttentionMode::kQllm);
  o.question.reset();
  EXPECT_THAT(Run(o, 10, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("span")));
  o = Options(AttentionMode::kQllm);
  o.question = QuestionSpan{5, 5};
  EXPECT_THAT(Run(o, 10, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  o = Options(AttentionMode::kQllm);
  o.storage = nullptr;
  EXPECT_THAT(Run(o, 10, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("storage")));
  // The question span must lie inside the first prefill call.
  o = Options(AttentionMode::kQllm);
  o.question = QuestionSpan{20, 40};
  EXPECT_THAT(Run(o, 64, 32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("first prefill call")));
  // ... and be processed before the sinks fill (here after token 48).
  o.question = QuestionSpan{20, 60};
  EXPECT_THAT(Run(o, 64, 64), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("before the attention sinks fill")));
}

TEST_F(ContextMemoryTest, StorageFailuresSurface) {
  CountingStorage storage;
  storage.fail = true;
  SessionOptions o = Options(AttentionMode::kQllm);
  o.storage = &storage;
  EXPECT_THAT(Run(o, 200, 200), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("offline")));
}

}  // namespace
}  // namespace qllm::worker
