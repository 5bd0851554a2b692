// The built-in model as shipped in models/qllm-tiny: the files match their manifest, and the
// weights, tokenizer and memory parameters load through the loaders real checkpoints use.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "model/config.h"
#include "model/weights.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "worker/memory_config.h"
#include "worker/model_shard.h"

namespace qllm {
namespace {

using ::qllm::testing::IsOkAndHolds;

std::string ModelDir() { return testing::SourceDir() + "/models/qllm-tiny"; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(QllmTinyFiles, MatchTheManifest) {
  const std::string dir = ModelDir();
  std::set<std::string> listed;
  std::istringstream manifest(ReadFile(dir + "/MANIFEST.sha256"));
  std::string line;
  while (std::getline(manifest, line)) {
    ASSERT_GT(line.size(), 66u) << line;
    EXPECT_EQ(line.substr(64, 2), "  ") << line;
    listed.insert(line.substr(66));
  }
  std::set<std::string> present;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename() != "MANIFEST.sha256") present.insert(entry.path().filename());
  }
  EXPECT_EQ(listed, present) << "MANIFEST.sha256 must list every other file of " << dir;
  for (const char* required :
       {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.json", "memory_config.yaml", "MODEL_CARD.md"}) {
    EXPECT_TRUE(present.count(required)) << required;
  }
  EXPECT_EQ(
      testing::RunCommand("cd '" + dir + "' && sha256sum --quiet --strict -c MANIFEST.sha256"), 0);
}

TEST(QllmTinyFiles, WeightsLoadThroughTheCheckpointLoader) {
  ASSERT_OK_AND_ASSIGN(model::ModelWeights w, model::LoadWeights(ModelDir()));
  const model::ModelConfig& c = w.config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(w.layers.size(), 4u);
  EXPECT_THAT(c.eos_token_ids, ::testing::ElementsAre(1019));
  // The same directory as the worker loads it, split into two pipeline stages.
  ASSERT_OK_AND_ASSIGN(auto front,
                       worker::ModelShard::Load(ModelDir(), {.layer_end = 2, .load_head = false}));
  ASSERT_OK_AND_ASSIGN(
      auto back, worker::ModelShard::Load(ModelDir(), {.layer_begin = 2, .load_embedding = false}));
  EXPECT_TRUE(front->has_embedding());
  EXPECT_TRUE(back->has_head());
}

TEST(QllmTinyFiles, TokenizerHasTheTemplateTokens) {
  ASSERT_OK_AND_ASSIGN(auto tok, tokenizer::LoadTokenizer(ModelDir()));
  ASSERT_OK_AND_ASSIGN(model::ModelConfig config, model::LoadModelConfig(ModelDir()));
  EXPECT_EQ(tok->vocab_size(), static_cast<size_t>(config.vocab_size));
  EXPECT_EQ(tok->bos_id(), 1018);
  EXPECT_EQ(tok->eos_id(), 1019);
  EXPECT_THAT(tokenizer::FindSpecialToken(*tok, "<|question|>"), IsOkAndHolds(1020));
  EXPECT_THAT(tokenizer::FindSpecialToken(*tok, "<|context|>"), IsOkAndHolds(1021));
  EXPECT_THAT(tokenizer::FindSpecialToken(*tok, "<|answer|>"), IsOkAndHolds(1022));
  // Every digit is its own token (answers are decoded digit by digit).
  EXPECT_THAT(tok->Encode("48213"), IsOkAndHolds(::testing::SizeIs(5)));
  ASSERT_OK_AND_ASSIGN(tokenizer::ChatTemplate tmpl, tokenizer::GetChatTemplate("qllm-tiny"));
  EXPECT_OK(
      tokenizer::BuildChatPrompt(*tok, tmpl, "", "What is the pass key?", " It is here.").status());
}

TEST(QllmTinyFiles, MemoryConfigIsTheOneItWasTrainedWith) {
  ASSERT_OK_AND_ASSIGN(worker::MemoryConfig m,
                       worker::LoadMemoryConfig(ModelDir() + "/memory_config.yaml"));
  const nlohmann::json ct = nlohmann::json::parse(ReadFile(ModelDir() + "/chat_template.json"));
  const nlohmann::json& p = ct.at("qllm_parameters");
  EXPECT_EQ(m.mode, worker::AttentionMode::kQllm);
  EXPECT_EQ(m.n_init, p.at("n_init").get<int>());
  EXPECT_EQ(m.n_local, p.at("n_local").get<int>());
  EXPECT_EQ(m.block_size, p.at("block_size").get<int>());
  EXPECT_EQ(m.topk, p.at("topk").get<int>());
  EXPECT_EQ(m.repr_topk, p.at("repr_topk").get<int>());
  EXPECT_EQ(m.exc_block_size, p.at("exc_block_size").get<int>());
  EXPECT_FLOAT_EQ(m.question_weight, p.at("question_weight").get<float>());
  EXPECT_EQ(m.conv_type, "qllm-tiny");
  ASSERT_OK_AND_ASSIGN(model::ModelConfig config, model::LoadModelConfig(ModelDir()));
  EXPECT_OK(m.ValidateForModel(config.rope_theta));
  EXPECT_EQ(ct.at("template").get<std::string>(),
            "<|begin_of_text|><|question|>{question}<|context|>{context}<|question|>{question}"
            "<|answer|>");
}

}  // namespace
}  // namespace qllm
