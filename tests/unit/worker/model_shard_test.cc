#include "worker/model_shard.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "coordinator/local_pipeline.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;

class ModelShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    qllm::testing::WriteTinyModel(dir_, spec_);
    for (int i = 0; i < 70; ++i) tokens_.push_back((i * 37 + 11) % spec_.vocab);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Logits of every position when `tokens_` runs through `pipeline` in chunks of `chunk`.
  std::vector<float> AllLogits(const coordinator::LocalPipeline& pipeline, int64_t chunk) {
    auto session = pipeline.NewSession();
    std::vector<float> logits;
    EXPECT_OK(pipeline.Prefill(session.get(), tokens_, chunk, /*all_logits=*/true, &logits));
    return logits;
  }

  qllm::testing::TinyModelSpec spec_;
  std::string dir_;
  std::vector<int32_t> tokens_;
};

void ExpectClose(const std::vector<float>& a, const std::vector<float>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << "at " << i;
}

TEST_F(ModelShardTest, ChunkedPrefillEqualsOneShot) {
  ASSERT_OK_AND_ASSIGN(auto shard, ModelShard::Load(dir_));
  ASSERT_OK_AND_ASSIGN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  const auto whole = AllLogits(*pipeline, 1000);
  ExpectClose(whole, AllLogits(*pipeline, 16), 1e-4);
  ExpectClose(whole, AllLogits(*pipeline, 7), 1e-4);
  ExpectClose(whole, AllLogits(*pipeline, 1), 1e-4);
}

TEST_F(ModelShardTest, LayerShardsChainedEqualTheWholeModel) {
  ASSERT_OK_AND_ASSIGN(auto whole, ModelShard::Load(dir_));
  model::LoadOptions first{.layer_begin = 0, .layer_end = 1, .load_head = false};
  model::LoadOptions middle{
      .layer_begin = 1, .layer_end = 2, .load_embedding = false, .load_head = false};
  model::LoadOptions last{.layer_begin = 2, .layer_end = 3, .load_embedding = false};
  ASSERT_OK_AND_ASSIGN(auto s0, ModelShard::Load(dir_, first));
  ASSERT_OK_AND_ASSIGN(auto s1, ModelShard::Load(dir_, middle));
  ASSERT_OK_AND_ASSIGN(auto s2, ModelShard::Load(dir_, last));
  ASSERT_OK_AND_ASSIGN(auto one, coordinator::LocalPipeline::Create({whole.get()}));
  ASSERT_OK_AND_ASSIGN(auto three,
                       coordinator::LocalPipeline::Create({s0.get(), s1.get(), s2.get()}));
  ExpectClose(AllLogits(*one, 32), AllLogits(*three, 32), 1e-5);
}

TEST_F(ModelShardTest, PipelineRejectsGapsAndMissingEnds) {
  model::LoadOptions first{.layer_begin = 0, .layer_end = 1, .load_head = false};
  model::LoadOptions last{.layer_begin = 2, .layer_end = 3, .load_embedding = false};
  ASSERT_OK_AND_ASSIGN(auto s0, ModelShard::Load(dir_, first));
  ASSERT_OK_AND_ASSIGN(auto s2, ModelShard::Load(dir_, last));
  EXPECT_THAT(coordinator::LocalPipeline::Create({s0.get(), s2.get()}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(coordinator::LocalPipeline::Create({s2.get()}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(coordinator::LocalPipeline::Create({}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ModelShardTest, ShardWithoutEmbeddingOrHeadRefuses) {
  model::LoadOptions middle{
      .layer_begin = 1, .layer_end = 2, .load_embedding = false, .load_head = false};
  ASSERT_OK_AND_ASSIGN(auto s1, ModelShard::Load(dir_, middle));
  std::vector<float> buf(spec_.hidden * 4);
  EXPECT_THAT(s1->Embed(tokens_, buf.data()), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(s1->Logits(buf.data(), 1, buf.data()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ModelShardTest, OutOfVocabularyTokenIsInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(auto shard, ModelShard::Load(dir_));
  ASSERT_OK_AND_ASSIGN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  auto session = pipeline->NewSession();
  const std::vector<int32_t> bad = {1, spec_.vocab};
  EXPECT_THAT(pipeline->RunChunk(session.get(), bad, false, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ModelShardTest, SessionsAreIndependent) {
  ASSERT_OK_AND_ASSIGN(auto shard, ModelShard::Load(dir_));
  ASSERT_OK_AND_ASSIGN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  auto a = pipeline->NewSession();
  std::vector<float> la, lb;
  ASSERT_OK(pipeline->Prefill(a.get(), tokens_, 8, false, &la));
  EXPECT_EQ(a->position(), 70);
  EXPECT_GT(a->stages[0]->KvBytes(), 0);
  auto b = pipeline->NewSession();
  ASSERT_OK(pipeline->Prefill(b.get(), tokens_, 64, false, &lb));
  ExpectClose(la, lb, 1e-4);
}

}  // namespace
}  // namespace qllm::worker
