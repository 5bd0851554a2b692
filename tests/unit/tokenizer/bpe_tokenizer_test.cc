#include "tokenizer/bpe_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/logging.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tests/unit/tokenizer/tiny_tokenizers.h"
#include "tokenizer/load_tokenizer.h"

namespace qllm::tokenizer {
namespace {

using ::qllm::testing::IsOkAndHolds;
using ::qllm::testing::StatusIs;
using ::testing::ElementsAre;

// Ids of the tiny vocabulary (see tiny_tokenizers.h).
constexpr int32_t kGt = 256, kHe = 257, kGthe = 258, kIn = 259, kIng = 260;
constexpr int32_t kBot = 300, kEot = 304;

std::string ReplaceOnce(std::string s, const std::string& from, const std::string& to) {
  const size_t pos = s.find(from);
  QLLM_CHECK(pos != std::string::npos) << from;
  return s.replace(pos, from.size(), to);
}

std::unique_ptr<BpeTokenizer> Tiny(bool ignore_merges = true) {
  BpeOptions options{.bos_token = "<|begin_of_text|>", .eos_token = "<|end_of_text|>"};
  auto tok = BpeTokenizer::FromJson(testing::TinyBpeJson(ignore_merges), options);
  QLLM_CHECK(tok.ok()) << tok.status();
  return std::move(*tok);
}

TEST(BpeTokenizer, AppliesMergesByRank) {
  auto tok = Tiny();
  // "the" is not in the vocabulary: t + (h e); " thing": (Ġ t) h (i n g).
  EXPECT_THAT(tok->Encode("the thing", {}), IsOkAndHolds(ElementsAre('t', kHe, kGt, 'h', kIng)));
  // ignore_merges: " the" is one vocabulary entry.
  EXPECT_THAT(tok->Encode(" the", {}), IsOkAndHolds(ElementsAre(kGthe)));
}

TEST(BpeTokenizer, LongWordsMergeLikeShortOnes) {
  auto tok = Tiny();
  std::string word;
  for (int i = 0; i < 60; ++i) word += "in";  // 120 bytes: the heap path.
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(word, {}));
  EXPECT_EQ(ids, std::vector<int32_t>(60, kIn));
  ASSERT_OK_AND_ASSIGN(ids, tok->Encode("inging" + word + "g", {}));
  EXPECT_EQ(ids.front(), kIng);
  EXPECT_EQ(ids.back(), kIng);
}

TEST(BpeTokenizer, MatchesSpecialTokensOnlyWhenAsked) {
  auto tok = Tiny();
  EXPECT_THAT(tok->Encode("<|begin_of_text|>hi<|eot_id|>", {}),
              IsOkAndHolds(ElementsAre(kBot, 'h', 'i', kEot)));
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids,
                       tok->Encode("<|eot_id|>", {.add_bos = false, .parse_special = false}));
  EXPECT_GT(ids.size(), 1u);
  EXPECT_THAT(tok->Encode("x", {.add_bos = true}), IsOkAndHolds(ElementsAre(kBot, 'x')));
  EXPECT_EQ(tok->bos_id(), kBot);
  EXPECT_TRUE(tok->IsSpecial(kEot));
  EXPECT_FALSE(tok->IsSpecial(kHe));
}

TEST(BpeTokenizer, DecodeInvertsEncode) {
  auto tok = Tiny();
  for (const std::string text : {"", "the thing", "  \n\n\t x", "日本語 😀 e\u0301",
                                 "<|begin_of_text|>a<|eot_id|><|eot_id", "1234567 'll 'S"}) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(text, {}));
    EXPECT_THAT(tok->Decode(ids), IsOkAndHolds(text));
  }
  EXPECT_THAT(tok->Decode({kBot, 'a', kEot}, {.skip_special_tokens = true}), IsOkAndHolds("a"));
}

TEST(BpeTokenizer, ReportsOffsets) {
  auto tok = Tiny();
  ASSERT_OK_AND_ASSIGN(Encoding enc, tok->EncodeWithOffsets("the thing", {.add_bos = true}));
  ASSERT_EQ(enc.ids.size(), 6u);
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 0}, {0, 1}, {1, 3},
                                                             {3, 5}, {5, 6}, {6, 9}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(enc.offsets[i].begin, expected[i].first) << i;
    EXPECT_EQ(enc.offsets[i].end, expected[i].second) << i;
  }
}

TEST(BpeTokenizer, RejectsUnknownIdsAndTokens) {
  auto tok = Tiny();
  EXPECT_THAT(tok->Decode({1, 280}), StatusIs(absl::StatusCode::kOutOfRange));  // Unused id.
  EXPECT_THAT(tok->Decode({-1}), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->Decode({100000}), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->IdToToken(100000), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->TokenToId("Ġthe"), IsOkAndHolds(kGthe));
  EXPECT_THAT(tok->IdToToken(kGthe), IsOkAndHolds("Ġthe"));
  EXPECT_THAT(tok->TokenToId("nope"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(BpeTokenizer, RejectsInvalidUtf8Input) {
  auto tok = Tiny();
  EXPECT_THAT(tok->Encode("ab\xC3", {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BpeTokenizer, RejectsMalformedJson) {
  EXPECT_THAT(BpeTokenizer::FromJson("{not json"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BpeTokenizer::FromJson("[]"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BpeTokenizer::FromJson("{}"), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string json = testing::TinyBpeJson();
  EXPECT_THAT(BpeTokenizer::FromJson(ReplaceOnce(json, "\"Ġ t\"", "\"Ġ @@\"")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BpeTokenizer::FromJson(ReplaceOnce(json, "\"id\":300", "\"id\":\"x\"")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A vocabulary without the token for byte 0x00 ("Ā").
  EXPECT_THAT(BpeTokenizer::FromJson(ReplaceOnce(json, "\"Ā\":0,", "")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BpeTokenizer::FromJson(json, {.bos_token = "<nope>"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BpeTokenizer, RejectsUnsupportedConfigurations) {
  std::string json = testing::TinyBpeJson();
  EXPECT_THAT(BpeTokenizer::FromJson(
                  ReplaceOnce(json, "\"normalizer\":null", "\"normalizer\":{\"type\":\"NFC\"}")),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(BpeTokenizer::FromJson(ReplaceOnce(json, "\"type\":\"BPE\"", "\"type\":\"Unigram\"")),
              StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(BpeTokenizer, FileErrors) {
  const std::string dir = qllm::testing::MakeScratchDir();
  EXPECT_THAT(BpeTokenizer::FromFile(dir + "/missing.json"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(LoadTokenizer(dir), StatusIs(absl::StatusCode::kNotFound));
  std::ofstream(dir + "/tokenizer.json") << testing::TinyBpeJson();
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}})";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(dir));
  EXPECT_EQ(tok->kind(), TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(tok->bos_id(), kBot);
  EXPECT_EQ(tok->eos_id(), kEot);
  std::ofstream(dir + "/tokenizer.json") << "{\"model\": 3";
  EXPECT_THAT(LoadTokenizer(dir), StatusIs(absl::StatusCode::kInvalidArgument));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qllm::tokenizer
