// The chat template "qllm-tiny" with the model's tokenizer gives exactly the ids and question
// span the model was trained on: prompts built by tools/train (corpus.py + bpe.py) in the
// model_training_prompts fixture (tests/model/training_prompts.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"

namespace qllm {
namespace {

TEST(QllmTinyTemplate, MatchesTheTrainingPrompts) {
  std::ifstream in(testing::BinaryDir() + "/testdata/model/training_prompts.json");
  ASSERT_TRUE(in) << "run the model_training_prompts fixture (ctest -L model)";
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json prompts = nlohmann::json::parse(ss.str());
  ASSERT_GE(prompts.size(), 10u);
  ASSERT_OK_AND_ASSIGN(auto tok,
                       tokenizer::LoadTokenizer(testing::SourceDir() + "/models/qllm-tiny"));
  ASSERT_OK_AND_ASSIGN(tokenizer::ChatTemplate tmpl, tokenizer::GetChatTemplate("qllm-tiny"));
  for (const nlohmann::json& p : prompts) {
    const std::string question = p.at("question").get<std::string>();
    const std::string context = p.at("context").get<std::string>();
    ASSERT_OK_AND_ASSIGN(tokenizer::ChatPrompt prompt,
                         tokenizer::BuildChatPrompt(*tok, tmpl, "", question, context));
    EXPECT_EQ(prompt.ids, p.at("ids").get<std::vector<int32_t>>()) << question;
    EXPECT_EQ(prompt.question_begin, p.at("question_span")[0].get<int64_t>()) << question;
    EXPECT_EQ(prompt.question_end, p.at("question_span")[1].get<int64_t>()) << question;
  }
}

}  // namespace
}  // namespace qllm
