#include "tokenizer/stream_decoder.h"

#include <gtest/gtest.h>

#include <random>

#include "common/logging.h"
#include "tests/testutil/status_matchers.h"
#include "tests/unit/tokenizer/tiny_tokenizers.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/internal/utf8.h"
#include "tokenizer/sentencepiece_tokenizer.h"

namespace qllm::tokenizer {
namespace {

using ::qllm::testing::StatusIs;

// Streams `ids` and checks, after every id, that the text emitted so far plus a flush equals
// the one-shot decode of that prefix, and that every emitted piece is valid UTF-8.
void ExpectStreamMatchesDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder stream(&tok);
  std::string emitted;
  for (size_t k = 0; k < ids.size(); ++k) {
    ASSERT_OK_AND_ASSIGN(std::string piece, stream.Feed(ids[k]));
    ASSERT_TRUE(internal::IsValidUtf8(piece));
    emitted += piece;
    ASSERT_OK_AND_ASSIGN(std::string expected, tok.Decode(absl::MakeConstSpan(ids.data(), k + 1)));
    // Flushing a copy is not possible; replay the prefix into a fresh decoder instead.
    StreamDecoder replay(&tok);
    std::string replayed;
    for (size_t j = 0; j <= k; ++j) replayed += *replay.Feed(ids[j]);
    ASSERT_EQ(replayed, emitted);
    ASSERT_EQ(replayed + replay.Flush(), expected) << "prefix " << k + 1;
  }
}

std::unique_ptr<BpeTokenizer> TinyBpe() {
  auto tok = BpeTokenizer::FromJson(testing::TinyBpeJson());
  QLLM_CHECK(tok.ok()) << tok.status();
  return std::move(*tok);
}

TEST(StreamDecoder, NeverSplitsCharacters) {
  auto tok = TinyBpe();
  // Byte-level tokens: each multi-byte character spans several ids.
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode("a😀b中", {}));
  StreamDecoder stream(tok.get());
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(*stream.Feed(id));
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "", "", "", "😀", "b", "", "", "中"}));
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamDecoder, MatchesOneShotDecodeForEveryPrefix) {
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids,
                       tok->Encode("the thing <|eot_id|> 日本 😀👍🏽 e\u0301\n", {}));
  ExpectStreamMatchesDecode(*tok, ids);
}

TEST(StreamDecoder, MatchesOneShotDecodeOnInvalidByteSequences) {
  auto tok = TinyBpe();
  std::mt19937 rng(3);
  const int32_t pool[] = {'a',  ' ',  0x80, 0xBF, 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0xF0,
                          0x9F, 0x98, 0x80, 0xED, 0xA0, 0xFF, 256,  300,  304};
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids;
    for (int i = static_cast<int>(rng() % 10); i > 0; --i) ids.push_back(pool[rng() % 19]);
    ExpectStreamMatchesDecode(*tok, ids);
  }
}

TEST(StreamDecoder, SentencePieceDummyPrefixAndByteFallback) {
  std::string error;
  const std::string model = testing::TrainTinySentencePieceModel(&error);
  ASSERT_FALSE(model.empty()) << error;
  ASSERT_OK_AND_ASSIGN(auto tok, SentencePieceTokenizer::FromSerializedModel(model));
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode("the fox<s> jumps 😀中\n</s>end", {}));
  ExpectStreamMatchesDecode(*tok, ids);
}

TEST(StreamDecoder, UnknownIdLeavesStateUnchanged) {
  auto tok = TinyBpe();
  StreamDecoder stream(tok.get());
  EXPECT_EQ(*stream.Feed(0xE4), "");
  EXPECT_THAT(stream.Feed(99999), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(stream.pending_bytes(), 1u);
  EXPECT_EQ(*stream.Feed(0xB8), "");
  EXPECT_EQ(*stream.Feed(0xAD), "中");
  // An unfinished character becomes U+FFFD at the end, as in Decode.
  EXPECT_EQ(*stream.Feed(0xE4), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace qllm::tokenizer
