// Pass-key accuracy of the built-in model through the C++ engine, in the setting it was
// trained for: 40 generated documents of 150-900 tokens (fixed seed, needle at a random
// depth), the qllm-tiny prompt, qllm mode with the model's memory parameters
// (models/qllm-tiny/memory_config.yaml), greedy decoding until <|eot|>. The bar is 38/40.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/needle/haystack.h"
#include "coordinator/generator.h"
#include "coordinator/local_pipeline.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "worker/block_storage.h"
#include "worker/memory_config.h"
#include "worker/model_shard.h"

namespace qllm {
namespace {

constexpr int kCases = 40;
constexpr int kRequiredCorrect = 38;
constexpr uint64_t kSeed = 20261126;

TEST(QllmTinyPassKey, AnswersAtLeast38Of40) {
  const std::string dir = testing::SourceDir() + "/models/qllm-tiny";
  ASSERT_OK_AND_ASSIGN(auto shard, worker::ModelShard::Load(dir));
  ASSERT_OK_AND_ASSIGN(auto tok, tokenizer::LoadTokenizer(dir));
  ASSERT_OK_AND_ASSIGN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  ASSERT_OK_AND_ASSIGN(worker::MemoryConfig memory,
                       worker::LoadMemoryConfig(dir + "/memory_config.yaml"));
  ASSERT_EQ(memory.mode, worker::AttentionMode::kQllm);
  ASSERT_OK_AND_ASSIGN(tokenizer::ChatTemplate tmpl, tokenizer::GetChatTemplate("qllm-tiny"));

  int correct = 0;
  int64_t tokens = 0;
  double seconds = 0.0;
  for (int i = 0; i < kCases; ++i) {
    needle::HaystackOptions h;
    h.task = needle::NeedleTask::kPassKey;
    h.context_tokens = 150 + static_cast<int64_t>(needle::MixSeed(kSeed, 2 * i) % 751);
    h.depth = static_cast<double>(needle::MixSeed(kSeed, 2 * i + 1) % 1001) / 1000.0;
    h.seed = needle::MixSeed(kSeed, 1000 + i);
    ASSERT_OK_AND_ASSIGN(needle::Haystack hay, needle::MakeHaystack(*tok, h));
    ASSERT_OK_AND_ASSIGN(tokenizer::ChatPrompt prompt,
                         tokenizer::BuildChatPrompt(*tok, tmpl, "", hay.question, hay.context));
    ASSERT_LE(prompt.ids.size(), 1024u) << "longer than the model's training context";

    worker::InMemoryBlockStorage storage;
    coordinator::GenerateOptions g;
    g.max_new_tokens = 8;  // 5 digits and <|eot|>, with room for a wrong longer answer.
    g.chunk_size = memory.chunk_size;
    g.stop_tokens = shard->config().eos_token_ids;
    g.session.memory = memory;
    g.session.storage = &storage;
    g.session.question = worker::QuestionSpan{prompt.question_begin, prompt.question_end};
    ASSERT_EQ(g.sampling.temperature, 0.0f);  // Greedy.
    ASSERT_OK_AND_ASSIGN(coordinator::GenerateResult r,
                         coordinator::Generate(*pipeline, prompt.ids, g));
    std::vector<int32_t> answer_ids = r.tokens;
    if (r.stop_reason == coordinator::StopReason::kStopToken) answer_ids.pop_back();
    ASSERT_OK_AND_ASSIGN(std::string answer, tok->Decode(answer_ids));
    const bool ok = r.stop_reason == coordinator::StopReason::kStopToken && answer == hay.answer;
    correct += ok ? 1 : 0;
    tokens += r.prompt_tokens;
    seconds += r.prefill_seconds + r.decode_seconds;
    std::printf("case %2d: %4ld document tokens, depth %.3f, key %s, answer \"%s\"%s\n", i,
                static_cast<long>(hay.context_tokens), h.depth, hay.answer.c_str(), answer.c_str(),
                ok ? "" : "  WRONG");
  }
  std::printf(
      "qllm-tiny pass-key accuracy (C++ engine, qllm mode): %d/%d = %.1f%% (%ld prompt "
      "tokens in %.2f s)\n",
      correct, kCases, 100.0 * correct / kCases, static_cast<long>(tokens), seconds);
  RecordProperty("correct", correct);
  // A line for the model card: tools/train/export.py --accuracy-md <this file>.
  const std::string dir_out = testing::BinaryDir() + "/testdata/model";
  std::filesystem::create_directories(dir_out);
  std::ofstream(dir_out + "/passkey_accuracy.md")
      << "- C++ engine (`ctest -L model`, passkey_accuracy_test): qllm mode with the parameters "
         "above, "
      << kCases << " pass-key documents of 150-900 tokens at random depths, greedy: **" << correct
      << "/" << kCases << "** (the test's bar is " << kRequiredCorrect << "/" << kCases << ").\n";
  EXPECT_GE(correct, kRequiredCorrect)
      << "the built-in model answers " << correct << "/" << kCases << " pass keys";
}

}  // namespace
}  // namespace qllm
