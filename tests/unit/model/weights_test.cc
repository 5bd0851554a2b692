#include "model/weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "model/checkpoint.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::model {
namespace {

using ::qllm::testing::StatusIs;
using ::qllm::testing::TinyModelSpec;
using ::testing::HasSubstr;

class WeightsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = qllm::testing::MakeScratchDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(WeightsTest, LoadsWholeModelAndFusesProjections) {
  TinyModelSpec spec;
  qllm::testing::WriteTinyModel(dir_, spec);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadWeights(dir_));
  EXPECT_EQ(w.layers.size(), 3u);
  const int64_t q = 32, kv = 16;
  EXPECT_EQ(w.layers[0].wqkv.size(), static_cast<size_t>((q + 2 * kv) * 32));
  EXPECT_EQ(w.layers[0].w13.size(), static_cast<size_t>(2 * 48 * 32));
  EXPECT_TRUE(w.has_embedding());
  EXPECT_TRUE(w.has_head());
  EXPECT_NE(w.head_matrix(), w.embedding.data());
  // The k rows follow the q rows inside wqkv.
  auto tensors = qllm::testing::TinyModelTensors(spec);
  const auto& k = tensors["model.layers.0.self_attn.k_proj.weight"].bytes;
  EXPECT_EQ(std::memcmp(w.layers[0].wqkv.data() + q * 32, k.data(), k.size()), 0);
}

TEST_F(WeightsTest, LoadsLayerRangeOnly) {
  qllm::testing::WriteTinyModel(dir_, TinyModelSpec{});
  LoadOptions options;
  options.layer_begin = 1;
  options.layer_end = 2;
  options.load_embedding = false;
  options.load_head = false;
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadWeights(dir_, options));
  EXPECT_EQ(w.layers.size(), 1u);
  EXPECT_EQ(w.layer_begin, 1);
  EXPECT_FALSE(w.has_embedding());
  EXPECT_FALSE(w.has_head());
}

TEST_F(WeightsTest, TiedHeadUsesEmbedding) {
  TinyModelSpec spec;
  spec.tied = true;
  qllm::testing::WriteTinyModel(dir_, spec);
  ASSERT_OK_AND_ASSIGN(ModelWeights w, LoadWeights(dir_));
  EXPECT_EQ(w.head_matrix(), w.embedding.data());
  LoadOptions last_stage;
  last_stage.layer_begin = 2;
  last_stage.load_embedding = false;
  ASSERT_OK_AND_ASSIGN(ModelWeights tail, LoadWeights(dir_, last_stage));
  ASSERT_NE(tail.head_matrix(), nullptr);
  EXPECT_EQ(std::vector<float>(tail.head_matrix(), tail.head_matrix() + 64 * 32), w.embedding);
}

TEST_F(WeightsTest, ShardedHalfPrecisionEqualsSingleFile) {
  TinyModelSpec spec;
  spec.dtype = "BF16";
  const std::string single = dir_ + "/single", sharded = dir_ + "/sharded";
  std::filesystem::create_directories(single);
  std::filesystem::create_directories(sharded);
  qllm::testing::WriteTinyModel(single, spec);
  spec.shards = 3;
  qllm::testing::WriteTinyModel(sharded, spec);
  ASSERT_OK_AND_ASSIGN(ModelWeights a, LoadWeights(single));
  ASSERT_OK_AND_ASSIGN(ModelWeights b, LoadWeights(sharded));
  EXPECT_EQ(a.embedding, b.embedding);
  EXPECT_EQ(a.layers[2].w2, b.layers[2].w2);
  EXPECT_EQ(a.lm_head, b.lm_head);
}

TEST_F(WeightsTest, MissingConfigIsNotFound) {
  EXPECT_THAT(LoadWeights(dir_), StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST_F(WeightsTest, MissingWeightsFileIsNotFound) {
  qllm::testing::WriteFile(dir_ + "/config.json", qllm::testing::TinyConfigJson({}));
  EXPECT_THAT(LoadWeights(dir_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
}

TEST_F(WeightsTest, MissingTensorIsNotFound) {
  TinyModelSpec spec;
  qllm::testing::WriteFile(dir_ + "/config.json", qllm::testing::TinyConfigJson(spec));
  auto tensors = qllm::testing::TinyModelTensors(spec);
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  qllm::testing::WriteFile(dir_ + "/model.safetensors",
                           qllm::testing::SerializeSafetensors(tensors));
  EXPECT_THAT(LoadWeights(dir_), StatusIs(absl::StatusCode::kNotFound,
                                          HasSubstr("model.layers.1.mlp.up_proj.weight")));
}

TEST_F(WeightsTest, MismatchedShapeIsInvalidArgument) {
  TinyModelSpec spec;
  qllm::testing::WriteFile(dir_ + "/config.json", qllm::testing::TinyConfigJson(spec));
  auto tensors = qllm::testing::TinyModelTensors(spec);
  tensors["model.layers.0.self_attn.k_proj.weight"] =
      qllm::testing::FloatTensor(std::vector<float>(32 * 32), {32, 32});
  qllm::testing::WriteFile(dir_ + "/model.safetensors",
                           qllm::testing::SerializeSafetensors(tensors));
  EXPECT_THAT(LoadWeights(dir_), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("has shape [32, 32], expected [16, 32]")));
}

TEST_F(WeightsTest, UnsupportedDtypeIsUnimplemented) {
  TinyModelSpec spec;
  qllm::testing::WriteFile(dir_ + "/config.json", qllm::testing::TinyConfigJson(spec));
  auto tensors = qllm::testing::TinyModelTensors(spec);
  tensors["model.norm.weight"] = {"I8", {32}, std::string(32, 1)};
  qllm::testing::WriteFile(dir_ + "/model.safetensors",
                           qllm::testing::SerializeSafetensors(tensors));
  EXPECT_THAT(LoadWeights(dir_), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("I8")));
}

TEST_F(WeightsTest, TruncatedWeightsAreDataLoss) {
  qllm::testing::WriteTinyModel(dir_, TinyModelSpec{});
  const std::string path = dir_ + "/model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  EXPECT_THAT(LoadWeights(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(WeightsTest, MissingShardIsNotFound) {
  TinyModelSpec spec;
  spec.shards = 2;
  qllm::testing::WriteTinyModel(dir_, spec);
  std::filesystem::remove(dir_ + "/model-00002-of-00002.safetensors");
  EXPECT_THAT(LoadWeights(dir_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model-00002-of-00002")));
}

TEST_F(WeightsTest, MalformedIndexIsInvalidArgument) {
  qllm::testing::WriteFile(dir_ + "/config.json", qllm::testing::TinyConfigJson({}));
  qllm::testing::WriteFile(dir_ + "/model.safetensors.index.json", "{\"weight_map\": [1]}");
  EXPECT_THAT(Checkpoint::Open(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight_map")));
  qllm::testing::WriteFile(dir_ + "/model.safetensors.index.json",
                           "{\"weight_map\": {\"a\": \"../../etc/passwd\"}}");
  EXPECT_THAT(Checkpoint::Open(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a file name")));
}

TEST_F(WeightsTest, LayerRangeOutsideModelIsInvalidArgument) {
  qllm::testing::WriteTinyModel(dir_, TinyModelSpec{});
  LoadOptions options;
  options.layer_begin = 2;
  options.layer_end = 5;
  EXPECT_THAT(LoadWeights(dir_, options), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::model
