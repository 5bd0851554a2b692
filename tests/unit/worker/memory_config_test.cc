#include "worker/memory_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/status_matchers.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

TEST(MemoryConfig, ReadsTheReferenceQllmConfig) {
  ASSERT_OK_AND_ASSIGN(MemoryConfig c, ParseMemoryConfigYaml(R"(
model:
  type: qllm
  path: meta-llama/Meta-Llama-3-8B-Instruct
  fattn: false
  n_init: 128
  n_local: 512
  block_size: 64
  topk: 8
  repr_topk: 4
  max_cached_block: 32
  exc_block_size: 512
  base: 500000
  distance_scale: 1.0
  question_weight: 4

max_len: 2147483647
chunk_size: 8192
conv_type: llama-3-inst
truncation: suffix
)"));
  EXPECT_EQ(c.mode, AttentionMode::kQllm);
  EXPECT_EQ(c.n_init, 128);
  EXPECT_EQ(c.n_local, 512);
  EXPECT_EQ(c.block_size, 64);
  EXPECT_EQ(c.topk, 8);
  EXPECT_EQ(c.repr_topk, 4);
  EXPECT_EQ(c.max_cached_block, 32);
  EXPECT_EQ(c.exc_block_size, 512);
  EXPECT_FLOAT_EQ(c.question_weight, 4.0f);
  EXPECT_EQ(c.chunk_size, 8192);
  EXPECT_EQ(c.conv_type, "llama-3-inst");
  EXPECT_EQ(c.max_len, 2147483647);
  ASSERT_TRUE(c.rope_base.has_value());
  EXPECT_OK(c.ValidateForModel(500000.0));
  EXPECT_THAT(c.ValidateForModel(10000.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_theta")));
}

TEST(MemoryConfig, ReadsInfLlmAndStreamingTypes) {
  ASSERT_OK_AND_ASSIGN(
      MemoryConfig inf,
      ParseMemoryConfigYaml(
          "model: {type: inf-llm, n_init: 128, n_local: 4096, block_size: 128, topk: 16, "
          "repr_topk: 4, max_cached_block: 32, exc_block_size: 512}\nchunk_size: 8192\n"));
  EXPECT_EQ(inf.mode, AttentionMode::kInfLlm);
  EXPECT_FLOAT_EQ(inf.effective_question_weight(), 0.0f);
  ASSERT_OK_AND_ASSIGN(
      MemoryConfig st,
      ParseMemoryConfigYaml(
          "model: {type: stream-llm, n_init: 4, n_local: 1024, exc_block_size: 512}\n"));
  EXPECT_EQ(st.mode, AttentionMode::kStreaming);
  ASSERT_OK_AND_ASSIGN(MemoryConfig full, ParseMemoryConfigYaml("model: {type: origin}\n"));
  EXPECT_FALSE(full.uses_memory());
}

struct BadYaml {
  const char* name;
  const char* yaml;
  absl::StatusCode code;
  const char* message;
};

class MemoryConfigErrorTest : public ::testing::TestWithParam<BadYaml> {};

TEST_P(MemoryConfigErrorTest, Rejects) {
  EXPECT_THAT(ParseMemoryConfigYaml(GetParam().yaml),
              StatusIs(GetParam().code, HasSubstr(GetParam().message)));
}

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
INSTANTIATE_TEST_SUITE_P(
    Cases, MemoryConfigErrorTest,
    ::testing::Values(
        BadYaml{"NotYaml", "model: {type: qllm", kInvalid, "YAML"},
        BadYaml{"NotAMap", "- a\n- b\n", kInvalid, "map"},
        BadYaml{"NoModel", "chunk_size: 512\n", kInvalid, "model"},
        BadYaml{"UnknownTopKey", "model: {type: qllm}\nbogus: 1\n", kInvalid, "bogus"},
        BadYaml{"UnknownModelKey", "model: {type: qllm, n_inits: 4}\n", kInvalid, "n_inits"},
        BadYaml{"UnknownType", "model: {type: magic}\n", kInvalid, "magic"},
        BadYaml{"StringNumber", "model: {type: qllm, topk: many}\n", kInvalid, "topk"},
        BadYaml{"ExcBiggerThanLocal",
                "model: {type: infllm, n_local: 256, exc_block_size: 512}\nchunk_size: 512\n",
                kInvalid, "exc_block_size (512) must be <= n_local (256)"},
        BadYaml{"NegativeTopk", "model: {type: infllm, topk: -1}\n", kInvalid, "topk"},
        BadYaml{"ZeroBlockSize", "model: {type: infllm, block_size: 0}\n", kInvalid, "block_size"},
        BadYaml{"ReprTopkAboveBlock", "model: {type: infllm, block_size: 4, repr_topk: 8}\n",
                kInvalid, "repr_topk"},
        BadYaml{"NegativeWeight", "model: {type: qllm, question_weight: -1}\n", kInvalid,
                "question_weight"},
        BadYaml{"QllmNoSinks", "model: {type: qllm, n_init: 0}\n", kInvalid, "n_init"},
        BadYaml{"ChunkNotMultiple", "model: {type: qllm}\nchunk_size: 1000\n", kInvalid,
                "multiple"},
        BadYaml{"BadTruncation", "model: {type: qllm}\ntruncation: sideways\n", kInvalid,
                "sideways"},
        BadYaml{"DistanceScale", "model: {type: qllm, distance_scale: 2.0}\n",
                absl::StatusCode::kUnimplemented, "distance_scale"},
        BadYaml{"PerHead", "model: {type: qllm, perhead: true}\n", absl::StatusCode::kUnimplemented,
                "perhead"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qllm::worker
