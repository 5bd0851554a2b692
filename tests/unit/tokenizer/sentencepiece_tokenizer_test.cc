#include "tokenizer/sentencepiece_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tests/unit/tokenizer/tiny_tokenizers.h"
#include "tokenizer/load_tokenizer.h"

namespace qllm::tokenizer {
namespace {

using ::qllm::testing::IsOkAndHolds;
using ::qllm::testing::StatusIs;

class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string error;
    model_ = new std::string(testing::TrainTinySentencePieceModel(&error));
    ASSERT_FALSE(model_->empty()) << error;
  }
  static void TearDownTestSuite() { delete model_; }

  std::unique_ptr<SentencePieceTokenizer> Tiny() {
    auto tok = SentencePieceTokenizer::FromSerializedModel(*model_);
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? std::move(*tok) : nullptr;
  }

  static std::string* model_;
};
std::string* SentencePieceTokenizerTest::model_ = nullptr;

TEST_F(SentencePieceTokenizerTest, ExposesVocabulary) {
  auto tok = Tiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 320u);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->IsSpecial(1));
  EXPECT_THAT(tok->TokenToId("</s>"), IsOkAndHolds(2));
  EXPECT_THAT(tok->IdToToken(0), IsOkAndHolds("<unk>"));
  EXPECT_THAT(tok->TokenToId("no such piece"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SentencePieceTokenizerTest, SplitsSpecialTokensAndRoundTrips) {
  auto tok = Tiny();
  ASSERT_NE(tok, nullptr);
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode("<s>the fox</s>", {}));
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> plain,
                       tok->Encode("<s>the fox</s>", {.parse_special = false}));
  EXPECT_NE(plain.front(), 1);
  for (const std::string text :
       {"", "the quick brown fox", " leading and trailing ", "a<s>b</s> c", "<s></s>",
        "\n\nnew\r\nlines\t", "日本語 😀 e\u0301 ZÜRICH", "<unk> literal"}) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> encoded, tok->Encode(text, {}));
    EXPECT_THAT(tok->Decode(encoded), IsOkAndHolds(text));
  }
}

TEST_F(SentencePieceTokenizerTest, DecodeMatchesLibraryWithoutSpecialTokens) {
  auto tok = Tiny();
  ASSERT_NE(tok, nullptr);
  for (const std::string text : {"the quick brown fox", "  two spaces", "😀 emoji\nnewline"}) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(text, {}));
    ASSERT_OK_AND_ASSIGN(std::string library, tok->DecodeWithLibrary(ids));
    EXPECT_THAT(tok->Decode(ids), IsOkAndHolds(library));
  }
}

TEST_F(SentencePieceTokenizerTest, OffsetsCoverTheText) {
  auto tok = Tiny();
  ASSERT_NE(tok, nullptr);
  const std::string text = "hello<s>world";
  ASSERT_OK_AND_ASSIGN(Encoding enc, tok->EncodeWithOffsets(text, {}));
  ASSERT_EQ(enc.ids.size(), enc.offsets.size());
  int64_t last = 0;
  for (const ByteRange& r : enc.offsets) {
    EXPECT_GE(r.begin, last);
    EXPECT_LE(r.end, static_cast<int64_t>(text.size()));
    last = r.begin;
  }
  const auto special = std::find(enc.ids.begin(), enc.ids.end(), 1) - enc.ids.begin();
  EXPECT_EQ(enc.offsets[special].begin, 5);
  EXPECT_EQ(enc.offsets[special].end, 8);
}

TEST_F(SentencePieceTokenizerTest, RejectsUnknownIds) {
  auto tok = Tiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Decode({5, 320}), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->Decode({-3}), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->IdToToken(999), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(tok->DecodeWithLibrary({999}), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(SentencePieceTokenizerTest, RejectsMalformedModels) {
  EXPECT_THAT(SentencePieceTokenizer::FromSerializedModel("this is not a protobuf"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SentencePieceTokenizer::FromSerializedModel(""),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SentencePieceTokenizer::FromSerializedModel(model_->substr(0, model_->size() / 2)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SentencePieceTokenizer::FromFile("/nonexistent/tokenizer.model"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SentencePieceTokenizerTest, LoadTokenizerPicksTheModelFile) {
  const std::string dir = qllm::testing::MakeScratchDir();
  std::ofstream(dir + "/tokenizer.model", std::ios::binary) << *model_;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, LoadTokenizer(dir));
  EXPECT_EQ(tok->kind(), TokenizerKind::kSentencePiece);
  // A non-byte-level tokenizer.json beside it is skipped in favour of tokenizer.model.
  std::ofstream(dir + "/tokenizer.json")
      << R"({"normalizer": {"type": "Sequence"}, "model": {"type": "BPE", "vocab": {"a": 0},
            "merges": []}})";
  ASSERT_OK_AND_ASSIGN(tok, LoadTokenizer(dir));
  EXPECT_EQ(tok->kind(), TokenizerKind::kSentencePiece);
  std::ofstream(dir + "/tokenizer.model", std::ios::binary) << "garbage";
  EXPECT_THAT(LoadTokenizer(dir), StatusIs(absl::StatusCode::kInvalidArgument));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qllm::tokenizer
