#include "model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::model {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kLlama31[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"})";

constexpr char kMistral02[] = R"({
  "architectures": ["MistralForCausalLM"], "model_type": "mistral",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
  "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})";

TEST(ModelConfig, ParsesLlama31WithRopeScaling) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(kLlama31));
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.kv_dim(), 1024);
  EXPECT_TRUE(c.has_llama3_scaling);
  EXPECT_FLOAT_EQ(c.llama3_scaling.factor, 8.0f);
  EXPECT_EQ(c.llama3_scaling.original_max_position_embeddings, 8192);
  EXPECT_THAT(c.eos_token_ids, ::testing::ElementsAre(128001, 128008, 128009));
  EXPECT_FALSE(c.tie_word_embeddings);
  // Llama-3.1-8B has 8.03B parameters.
  EXPECT_NEAR(static_cast<double>(c.NumParameters()), 8.03e9, 0.01e9);
}

TEST(ModelConfig, ParsesMistralV02) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(kMistral02));
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_FALSE(c.has_llama3_scaling);
  EXPECT_THAT(c.bos_token_ids, ::testing::ElementsAre(1));
}

TEST(ModelConfig, AppliesDefaults) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(R"({"model_type": "llama",
      "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "vocab_size": 100})"));
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(ModelConfig, ExplicitHeadDim) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ParseModelConfig(R"({"model_type": "mistral",
      "hidden_size": 96, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 100})"));
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.q_dim(), 192);
}

struct BadConfig {
  const char* name;
  std::string json;
  absl::StatusCode code;
  const char* message;
};

class ModelConfigErrorTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ModelConfigErrorTest, RejectsWithSpecificError) {
  EXPECT_THAT(ParseModelConfig(GetParam().json),
              StatusIs(GetParam().code, HasSubstr(GetParam().message)));
}

constexpr char kBase[] = R"("model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100)";

INSTANTIATE_TEST_SUITE_P(
    Cases, ModelConfigErrorTest,
    ::testing::Values(
        BadConfig{"NotJson", "{\"hidden_size\": ", absl::StatusCode::kInvalidArgument, "JSON"},
        BadConfig{"NotObject", "[1, 2]", absl::StatusCode::kInvalidArgument, "object"},
        BadConfig{"MissingHidden",
                  R"({"model_type": "llama", "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "vocab_size": 100})",
                  absl::StatusCode::kInvalidArgument, "hidden_size"},
        BadConfig{"StringLayers",
                  R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": "2", "num_attention_heads": 4, "vocab_size": 100})",
                  absl::StatusCode::kInvalidArgument, "num_hidden_layers"},
        BadConfig{"NegativeVocab",
                  R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": -5})",
                  absl::StatusCode::kInvalidArgument, "vocab_size"},
        BadConfig{"KvHeadsNotDivisor", absl::StrCat("{", kBase, R"(, "num_key_value_heads": 3})"),
                  absl::StatusCode::kInvalidArgument, "multiple"},
        BadConfig{"UnknownArchitecture",
                  R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 64})",
                  absl::StatusCode::kUnimplemented, "GPT2LMHeadModel"},
        BadConfig{"YarnScaling",
                  absl::StrCat("{", kBase, R"(, "rope_scaling": {"type": "yarn", "factor": 4}})"),
                  absl::StatusCode::kUnimplemented, "yarn"},
        BadConfig{"Llama3ScalingMissingField",
                  absl::StrCat("{", kBase,
                               R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})"),
                  absl::StatusCode::kInvalidArgument, "low_freq_factor"},
        BadConfig{"SlidingWindow", absl::StrCat("{", kBase, R"(, "sliding_window": 4096})"),
                  absl::StatusCode::kUnimplemented, "sliding_window"},
        BadConfig{"TieNotBool", absl::StrCat("{", kBase, R"(, "tie_word_embeddings": "yes"})"),
                  absl::StatusCode::kInvalidArgument, "tie_word_embeddings"},
        BadConfig{"NegativeEos", absl::StrCat("{", kBase, R"(, "eos_token_id": [2, -1]})"),
                  absl::StatusCode::kInvalidArgument, "eos_token_id"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qllm::model
