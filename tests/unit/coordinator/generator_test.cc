#include "coordinator/generator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::coordinator {
namespace {

using ::qllm::testing::StatusIs;

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    qllm::testing::WriteTinyModel(dir_, qllm::testing::TinyModelSpec{});
    auto shard = worker::ModelShard::Load(dir_);
    ASSERT_OK(shard.status());
    shard_ = std::move(shard).value();
    auto pipeline = LocalPipeline::Create({shard_.get()});
    ASSERT_OK(pipeline.status());
    pipeline_ = std::move(pipeline).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::unique_ptr<worker::ModelShard> shard_;
  std::unique_ptr<LocalPipeline> pipeline_;
  const std::vector<int32_t> prompt_ = {5, 9, 33, 2, 17, 40, 41};
};

TEST_F(GeneratorTest, GreedyIsDeterministicAndIndependentOfChunking) {
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.chunk_size = 3;
  ASSERT_OK_AND_ASSIGN(GenerateResult a, Generate(*pipeline_, prompt_, o));
  o.chunk_size = 512;
  ASSERT_OK_AND_ASSIGN(GenerateResult b, Generate(*pipeline_, prompt_, o));
  EXPECT_EQ(a.tokens.size(), 12u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.stop_reason, StopReason::kMaxTokens);
  EXPECT_EQ(a.prompt_tokens, 7);
}

TEST_F(GeneratorTest, StopsAtStopTokenIncludingIt) {
  GenerateOptions o;
  o.max_new_tokens = 12;
  ASSERT_OK_AND_ASSIGN(GenerateResult free_run, Generate(*pipeline_, prompt_, o));
  o.stop_tokens = {free_run.tokens[3]};
  ASSERT_OK_AND_ASSIGN(GenerateResult r, Generate(*pipeline_, prompt_, o));
  const auto first = std::find(free_run.tokens.begin(), free_run.tokens.end(), o.stop_tokens[0]);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(free_run.tokens.begin(), first + 1));
  EXPECT_EQ(r.stop_reason, StopReason::kStopToken);
}

TEST_F(GeneratorTest, CallbackCanStop) {
  GenerateOptions o;
  o.max_new_tokens = 12;
  int seen = 0;
  ASSERT_OK_AND_ASSIGN(GenerateResult r,
                       Generate(*pipeline_, prompt_, o, [&](int32_t) { return ++seen < 4; }));
  EXPECT_EQ(r.tokens.size(), 4u);
  EXPECT_EQ(r.stop_reason, StopReason::kCallback);
}

TEST_F(GeneratorTest, SeededSamplingRepeats) {
  GenerateOptions o;
  o.max_new_tokens = 16;
  o.sampling.temperature = 1.5f;
  o.sampling.top_k = 20;
  o.sampling.top_p = 0.9f;
  o.sampling.seed = 42;
  ASSERT_OK_AND_ASSIGN(GenerateResult a, Generate(*pipeline_, prompt_, o));
  ASSERT_OK_AND_ASSIGN(GenerateResult b, Generate(*pipeline_, prompt_, o));
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST_F(GeneratorTest, RejectsBadRequests) {
  GenerateOptions o;
  EXPECT_THAT(Generate(*pipeline_, {}, o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.max_new_tokens = 0;
  EXPECT_THAT(Generate(*pipeline_, prompt_, o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.max_new_tokens = 4;
  o.chunk_size = 0;
  EXPECT_THAT(Generate(*pipeline_, prompt_, o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.chunk_size = 8;
  o.stop_tokens = {64};
  EXPECT_THAT(Generate(*pipeline_, prompt_, o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.stop_tokens = {};
  o.sampling.top_p = 0.0f;
  EXPECT_THAT(Generate(*pipeline_, prompt_, o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.sampling.top_p = 1.0f;
  const std::vector<int32_t> bad = {1, -3};
  EXPECT_THAT(Generate(*pipeline_, bad, o), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::coordinator
