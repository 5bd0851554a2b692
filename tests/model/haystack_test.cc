// The needle benchmark's document generator (bench/needle/haystack.h) with the built-in
// model's tokenizer: deterministic, the requested length, the needle where it was asked for.
#include "bench/needle/haystack.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/logging.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/load_tokenizer.h"

namespace qllm::needle {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class HaystackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = tokenizer::LoadTokenizer(qllm::testing::SourceDir() + "/models/qllm-tiny");
    ASSERT_OK(tok.status());
    tok_ = *std::move(tok);
  }
  int64_t Count(const std::string& text) {
    tokenizer::EncodeOptions o;
    o.parse_special = false;
    auto ids = tok_->Encode(text, o);
    QLLM_CHECK(ids.ok()) << ids.status();
    return static_cast<int64_t>(ids->size());
  }
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

TEST_F(HaystackTest, SameSeedSameDocument) {
  HaystackOptions o{.task = NeedleTask::kMagic, .context_tokens = 500, .depth = 0.3, .seed = 7};
  ASSERT_OK_AND_ASSIGN(Haystack a, MakeHaystack(*tok_, o));
  ASSERT_OK_AND_ASSIGN(Haystack b, MakeHaystack(*tok_, o));
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.answer, b.answer);
  o.seed = 8;
  ASSERT_OK_AND_ASSIGN(Haystack c, MakeHaystack(*tok_, o));
  EXPECT_NE(a.context, c.context);
}

TEST_F(HaystackTest, HasTheRequestedLengthInTokens) {
  for (int64_t n : {1, 100, 1000, 5000}) {
    ASSERT_OK_AND_ASSIGN(Haystack h, MakeHaystack(*tok_, {.context_tokens = n, .seed = 1}));
    EXPECT_GE(h.context_tokens, n);
    EXPECT_LT(h.context_tokens, std::max<int64_t>(n, 30) + 40);
    // The per-sentence counts add up to the count of the whole document.
    EXPECT_EQ(h.context_tokens, Count(h.context)) << n;
    EXPECT_THAT(h.context, StartsWith(" "));
  }
}

TEST_F(HaystackTest, PutsTheNeedleAtTheDepth) {
  for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    ASSERT_OK_AND_ASSIGN(Haystack h, MakeHaystack(*tok_, {.task = NeedleTask::kPassKey,
                                                          .context_tokens = 2000,
                                                          .depth = depth,
                                                          .seed = 3}));
    EXPECT_EQ(h.question, "What is the pass key?");
    EXPECT_THAT(h.answer, ::testing::MatchesRegex("[1-9][0-9]{4}"));
    const std::string needle = " The pass key is " + h.answer + ". Remember it.";
    const size_t at = h.context.find(needle);
    ASSERT_NE(at, std::string::npos);
    // needle_token is the token offset of the needle's first byte.
    EXPECT_EQ(h.needle_token, Count(h.context.substr(0, at)));
    EXPECT_NEAR(static_cast<double>(h.needle_token) / h.context_tokens, depth, 0.03);
  }
}

TEST_F(HaystackTest, MagicNumbersHaveDistractors) {
  ASSERT_OK_AND_ASSIGN(
      Haystack h,
      MakeHaystack(*tok_,
                   {.task = NeedleTask::kMagic, .context_tokens = 800, .depth = 0.5, .seed = 11}));
  const std::string prefix = "What is the special magic number for ";
  ASSERT_THAT(h.question, StartsWith(prefix));
  ASSERT_EQ(h.question.back(), '?');
  const std::string key = h.question.substr(prefix.size(), h.question.size() - prefix.size() - 1);
  EXPECT_THAT(h.context,
              HasSubstr("The special magic number for " + key + " is " + h.answer + "."));
  size_t needles = 0;
  for (size_t p = h.context.find("special magic number"); p != std::string::npos;
       p = h.context.find("special magic number", p + 1)) {
    ++needles;
  }
  EXPECT_GE(needles, 2u);
  EXPECT_LE(needles, 4u);
}

TEST_F(HaystackTest, RejectsBadOptions) {
  EXPECT_THAT(MakeHaystack(*tok_, {.context_tokens = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeHaystack(*tok_, {.depth = 1.5}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseNeedleTask("kv"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseNeedleTask("magic"), ::qllm::testing::IsOkAndHolds(NeedleTask::kMagic));
}

}  // namespace
}  // namespace qllm::needle
