#include "tokenizer/internal/regex_splitter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/status_matchers.h"

namespace qllm::tokenizer::internal {
namespace {

using ::qllm::testing::IsOkAndHolds;
using ::qllm::testing::StatusIs;
using ::testing::ElementsAre;

constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> Pieces(const RegexSplitter& splitter, std::string_view text) {
  std::vector<std::string> pieces;
  const absl::Status s =
      splitter.Split(text, [&](size_t b, size_t e) { pieces.emplace_back(text.substr(b, e - b)); });
  EXPECT_TRUE(s.ok()) << s;
  return pieces;
}

TEST(TranslateHfPattern, RewritesWhitespaceClasses) {
  EXPECT_THAT(
      TranslateHfPattern(R"(\s+(?!\S)|[^\s\p{L}])"),
      IsOkAndHolds(R"([\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}])|[^\t-\r\x{85}\p{Z}\p{L}])"));
  EXPECT_THAT(TranslateHfPattern(R"(\\s[\]\s])"), IsOkAndHolds(R"(\\s[\]\t-\r\x{85}\p{Z}])"));
  EXPECT_THAT(TranslateHfPattern(R"([\S])"), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(RegexSplitter, SplitsLikeLlama3) {
  ASSERT_OK_AND_ASSIGN(auto splitter, RegexSplitter::Create(kLlama3Pattern));
  EXPECT_THAT(Pieces(*splitter, "Hello world's 12345 ?!\n\n  x   "),
              ElementsAre("Hello", " world", "'s", " ", "123", "45", " ?!\n\n", " ", " x", "   "));
  EXPECT_THAT(Pieces(*splitter, "a\n\n\nb"), ElementsAre("a", "\n\n\n", "b"));
  EXPECT_THAT(Pieces(*splitter, "I'LL"), ElementsAre("I", "'LL"));
}

TEST(RegexSplitter, UsesOnigurumaWhitespace) {
  ASSERT_OK_AND_ASSIGN(auto splitter, RegexSplitter::Create(kLlama3Pattern));
  // U+0085 is White_Space (Oniguruma \s), so it does not join the punctuation run.
  EXPECT_THAT(Pieces(*splitter, "!\u0085"), ElementsAre("!", "\u0085"));
  // U+FEFF is not White_Space (JavaScript's \s would say it is).
  EXPECT_THAT(Pieces(*splitter, "!\uFEFF"), ElementsAre("!\uFEFF"));
  // U+180E is not White_Space either (PCRE2's own \h would say it is).
  EXPECT_THAT(Pieces(*splitter, "!\u180E"), ElementsAre("!\u180E"));
}

TEST(RegexSplitter, HandlesLongRunsAndGaps) {
  ASSERT_OK_AND_ASSIGN(auto splitter, RegexSplitter::Create(kLlama3Pattern));
  const std::string spaces(200000, ' ');
  EXPECT_THAT(Pieces(*splitter, spaces + "x"), ElementsAre(spaces.substr(1), " x"));
  // A pattern that leaves gaps: they become pieces of their own (Isolated).
  ASSERT_OK_AND_ASSIGN(auto digits, RegexSplitter::Create(R"(\p{N}+)"));
  EXPECT_THAT(Pieces(*digits, "ab12cd3"), ElementsAre("ab", "12", "cd", "3"));
  EXPECT_THAT(RegexSplitter::Create("(unclosed"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::tokenizer::internal
