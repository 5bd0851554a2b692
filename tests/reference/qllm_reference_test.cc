// The Q-LLM context memory against the independent PyTorch reference of the specification
// (tools/reference/qllm_ref.py, float64): a 4,000-token sequence prefilled in three calls with
// the question span in the first, then 20 greedy decode steps, in every mode. Logits must agree
// to 1e-4 of the logit scale and the selected block ids must be identical at every layer and
// execution chunk.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "coordinator/local_pipeline.h"
#include "model/safetensors.h"
#include "model/sampler.h"
#include "tests/testutil/pipeline_util.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/model_shard.h"

namespace qllm {
namespace {

constexpr double kRelativeTolerance = 1e-4;

struct Case {
  std::string preset;
  std::string mode;
  std::vector<int32_t> stages;  // Layer boundaries of the pipeline stages.
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.preset << "/" << c.mode << " in " << c.stages.size() - 1 << " stage(s)";
}

class QllmReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(QllmReferenceTest, LogitsAndSelectionsMatchPyTorch) {
  const Case& c = GetParam();
  const std::string dir =
      testing::BinaryDir() + "/testdata/reference/qllm_" + c.preset + "_" + c.mode;
  ASSERT_TRUE(std::filesystem::exists(dir + "/params.json"))
      << dir << " is missing: the reference_fixtures CTest fixture generates it";
  std::ifstream in(dir + "/params.json");
  const nlohmann::json params = nlohmann::json::parse(in);
  ASSERT_OK_AND_ASSIGN(auto expected, model::SafetensorsFile::Open(dir + "/expected.safetensors"));
  auto tensor = [&](const std::string& name) {
    const model::TensorView* v = expected->Find(name);
    EXPECT_NE(v, nullptr) << name;
    return v;
  };
  auto ints = [&](const std::string& name) {
    const model::TensorView* v = tensor(name);
    std::vector<int32_t> out(v->NumElements());
    std::memcpy(out.data(), v->data, v->nbytes);
    return out;
  };
  auto floats = [&](const std::string& name) {
    const model::TensorView* v = tensor(name);
    std::vector<float> out(v->NumElements());
    EXPECT_OK(model::ConvertToFloat(*v, out.data()));
    return out;
  };

  // The pipeline over the preset's checkpoint.
  const std::string ckpt = testing::BinaryDir() + "/testdata/reference/" + c.preset;
  ASSERT_OK_AND_ASSIGN(testing::TestPipeline loaded, testing::LoadPipeline(ckpt, c.stages));
  const coordinator::LocalPipeline* pipeline = loaded.pipeline.get();
  const int32_t vocab = pipeline->config().vocab_size;
  const int num_layers = pipeline->config().num_layers;

  worker::InMemoryBlockStorage storage;
  worker::SessionOptions options;
  ASSERT_OK_AND_ASSIGN(options.memory.mode, worker::ParseAttentionMode(c.mode));
  options.memory.n_init = params["n_init"];
  options.memory.n_local = params["n_local"];
  options.memory.block_size = params["block_size"];
  options.memory.topk = params["topk"];
  options.memory.repr_topk = params["repr_topk"];
  options.memory.exc_block_size = params["exc_block_size"];
  options.memory.question_weight = c.mode == "qllm" ? params["question_weight"].get<float>() : 4.0f;
  options.memory.chunk_size = 512;  // Prefill calls split into forward calls of 512 tokens.
  options.question = worker::QuestionSpan{params["question_span"][0], params["question_span"][1]};
  options.storage = &storage;
  options.session_id = 7;
  options.record_selections = true;
  ASSERT_OK_AND_ASSIGN(auto session, pipeline->NewSession(options));

  const std::vector<int32_t> tokens = ints("tokens");
  const std::vector<float> prompt_logits = floats("prompt_logits");
  const std::vector<int32_t> generated = ints("generated");
  const std::vector<float> decode_logits = floats("decode_logits");
  std::vector<float> logits, all;
  size_t pos = 0;
  for (int64_t len : params["calls"]) {
    std::span<const int32_t> call(tokens.data() + pos, len);
    ASSERT_OK(pipeline->Prefill(session.get(), call, options.memory.chunk_size,
                                /*all_logits=*/true, &logits));
    all.insert(all.end(), logits.begin(), logits.end());
    pos += len;
  }
  ASSERT_EQ(all.size(), prompt_logits.size());
  const double prefill_err = testing::RelativeError(all.data(), prompt_logits.data(), all.size());
  EXPECT_LE(prefill_err, kRelativeTolerance) << "prefill logits";
  std::vector<int32_t> greedy = {model::Argmax(all.data() + all.size() - vocab, vocab)};
  std::vector<float> dec;
  const int steps = params["decode_steps"];
  for (int j = 0; j < steps; ++j) {
    const int32_t input[1] = {generated[j]};
    ASSERT_OK(pipeline->RunChunk(session.get(), input, false, &logits));
    dec.insert(dec.end(), logits.begin(), logits.end());
    greedy.push_back(model::Argmax(logits.data(), vocab));
  }
  const double decode_err = testing::RelativeError(dec.data(), decode_logits.data(), dec.size());
  EXPECT_LE(decode_err, kRelativeTolerance) << "decode logits";
  EXPECT_EQ(greedy, generated);

  // Selected block ids at every layer and chunk.
  std::map<int, std::vector<worker::ChunkSelection>> by_layer;
  for (const auto& sel : session->Selections()) by_layer[sel.layer].push_back(sel);
  const int n_chunks = params["n_chunks"];
  const int topk = params["topk"];
  int mismatches = 0, retrievals = 0;
  for (int l = 0; l < num_layers; ++l) {
    const std::vector<int32_t> want = ints("selected_" + std::to_string(l));
    if (c.mode == "full") {  // Ordinary attention: nothing is ever retrieved.
      EXPECT_THAT(want, ::testing::Each(-1));
      EXPECT_TRUE(by_layer[l].empty());
      continue;
    }
    const auto& sels = by_layer[l];
    ASSERT_EQ(static_cast<int>(sels.size()), n_chunks) << "layer " << l;
    for (int ch = 0; ch < n_chunks; ++ch) {
      std::vector<int32_t> got = sels[ch].blocks;
      got.resize(topk, -1);
      const std::vector<int32_t> exp(want.begin() + ch * topk, want.begin() + (ch + 1) * topk);
      if (got != exp && mismatches++ < 5) {
        ADD_FAILURE() << "layer " << l << " chunk " << ch << " [" << sels[ch].chunk_begin << ", "
                      << sels[ch].chunk_end << "): selected " << ::testing::PrintToString(got)
                      << ", reference " << ::testing::PrintToString(exp);
      }
      retrievals += !sels[ch].blocks.empty();
    }
  }
  EXPECT_EQ(mismatches, 0);
  if (c.mode == "infllm" || c.mode == "qllm") {
    EXPECT_GT(retrievals, 100);
  }
  std::printf("%s/%s: prefill rel err %.3g, decode rel err %.3g, %d retrievals, %zu blocks\n",
              c.preset.c_str(), c.mode.c_str(), prefill_err, decode_err, retrievals,
              storage.num_blocks());
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const char* mode : {"full", "streaming", "infllm", "qllm"}) {
    cases.push_back({"mha_untied", mode, {0, 2}});
    cases.push_back({"gqa2_tied", mode, {0, 2}});
  }
  cases.push_back({"gqa2_tied", "qllm", {0, 1, 2}});  // Two pipeline stages.
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Modes, QllmReferenceTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) {
                           return info.param.preset + "_" + info.param.mode + "_" +
                                  std::to_string(info.param.stages.size() - 1) + "stage";
                         });

}  // namespace
}  // namespace qllm
