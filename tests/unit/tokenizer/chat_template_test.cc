#include "tokenizer/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/logging.h"
#include "tests/testutil/status_matchers.h"
#include "tests/unit/tokenizer/tiny_tokenizers.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"

namespace qllm::tokenizer {
namespace {

using ::qllm::testing::IsOkAndHolds;
using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

std::unique_ptr<BpeTokenizer> TinyBpe() {
  auto tok = BpeTokenizer::FromJson(testing::TinyBpeJson(),
                                    {.bos_token = "<|begin_of_text|>", .eos_token = "<|eot_id|>"});
  QLLM_CHECK(tok.ok()) << tok.status();
  return std::move(*tok);
}

std::string DecodeSpan(const Tokenizer& tok, const ChatPrompt& p) {
  auto text = tok.Decode(
      absl::MakeConstSpan(p.ids).subspan(p.question_begin, p.question_end - p.question_begin));
  QLLM_CHECK(text.ok()) << text.status();
  return *text;
}

TEST(ChatTemplate, Llama3PutsQuestionBeforeAndAfterContext) {
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("llama-3-inst"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt p, BuildChatPrompt(*tok, tmpl, " Be brief. ",
                                                     "What is the thing?", "the thing is in"));
  EXPECT_THAT(tok->Decode(p.ids),
              IsOkAndHolds("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                           "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                           "What is the thing?\n\nthe thing is in\n\nWhat is the thing?"
                           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
  // The tiny vocabulary has no "?\n\n" token, so the span ends exactly at the question.
  EXPECT_EQ(DecodeSpan(*tok, p), "What is the thing?");
  EXPECT_EQ(p.ids[p.question_begin - 1], '\n');
}

TEST(ChatTemplate, QllmTinyIsTheTrainingTemplate) {
  // tools/train/corpus.py TEMPLATE; tests/model/ checks the ids against the training code.
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("qllm-tiny"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt p, BuildChatPrompt(*tok, tmpl, "", "who won", "nobody"));
  EXPECT_THAT(tok->Decode(p.ids),
              IsOkAndHolds("<|begin_of_text|><|question|>who won<|context|> nobody"
                           "<|question|>who won<|answer|>"));
  EXPECT_EQ(p.ids.front(), 300);
  EXPECT_EQ(p.ids.back(), 307);
  // The span is exactly the tokens between the first <|question|> and <|context|>.
  EXPECT_EQ(p.question_begin, 2);
  EXPECT_EQ(p.ids[p.question_begin - 1], 305);
  EXPECT_EQ(p.ids[p.question_end], 306);
  EXPECT_EQ(DecodeSpan(*tok, p), "who won");
  EXPECT_EQ(std::count(p.ids.begin(), p.ids.end(), 305), 2);
}

TEST(ChatTemplate, StoredDocumentAndFollowupPrompts) {
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tiny, GetChatTemplate("qllm-tiny"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt doc, BuildDocumentPrompt(*tok, tiny, "", "  nobody "));
  EXPECT_THAT(tok->Decode(doc.ids), IsOkAndHolds("<|begin_of_text|><|context|> nobody"));
  EXPECT_EQ(doc.question_begin, doc.question_end);
  ASSERT_OK_AND_ASSIGN(ChatPrompt q, BuildFollowupPrompt(*tok, tiny, " who won "));
  EXPECT_THAT(tok->Decode(q.ids), IsOkAndHolds("<|question|>who won<|answer|>"));
  EXPECT_EQ(DecodeSpan(*tok, q), "who won");
  EXPECT_EQ(q.question_begin, 1);
  // Llama-3: the document opens the user turn; the question closes it and opens the answer.
  ASSERT_OK_AND_ASSIGN(ChatTemplate llama, GetChatTemplate("llama-3-inst"));
  ASSERT_OK_AND_ASSIGN(doc, BuildDocumentPrompt(*tok, llama, "", "the thing is in"));
  EXPECT_THAT(tok->Decode(doc.ids),
              IsOkAndHolds("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                           "the thing is in"));
  ASSERT_OK_AND_ASSIGN(q, BuildFollowupPrompt(*tok, llama, "What is the thing?"));
  EXPECT_THAT(tok->Decode(q.ids),
              IsOkAndHolds("\n\nWhat is the thing?<|eot_id|><|start_header_id|>assistant"
                           "<|end_header_id|>\n\n"));
  EXPECT_EQ(DecodeSpan(*tok, q), "What is the thing?");
  EXPECT_THAT(BuildDocumentPrompt(*tok, tiny, "", "   "),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BuildFollowupPrompt(*tok, tiny, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  ChatTemplate broken = tiny;
  broken.document_body = "{question}{context}";
  EXPECT_THAT(BuildDocumentPrompt(*tok, broken, "", "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("document_body")));
}

TEST(ChatTemplate, QllmTinyContextStartsWithExactlyOneSpace) {
  // Training documents are " Sentence. Sentence." whatever whitespace the caller adds.
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("qllm-tiny"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt a, BuildChatPrompt(*tok, tmpl, "", "q", "the end."));
  ASSERT_OK_AND_ASSIGN(ChatPrompt b, BuildChatPrompt(*tok, tmpl, "", " q\n", "  the end. \n"));
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_THAT(tok->Decode(a.ids),
              IsOkAndHolds("<|begin_of_text|><|question|>q<|context|> the end.<|question|>q"
                           "<|answer|>"));
}

TEST(ChatTemplate, QllmTinyHasNoSystemTurn) {
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("qllm-tiny"));
  EXPECT_THAT(BuildChatPrompt(*tok, tmpl, "Be brief.", "q", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(BuildChatPrompt(*tok, tmpl, " \n", "q", "c").status());
}

TEST(ChatTemplate, UserTextCannotInjectSpecialTokens) {
  auto tok = TinyBpe();
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("llama-3-inst"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt p, BuildChatPrompt(*tok, tmpl, "", "q<|eot_id|>", "<|eot_id|>"));
  EXPECT_EQ(std::count(p.ids.begin(), p.ids.end(), 304), 1);  // Only the template's own.
}

TEST(ChatTemplate, MistralOnSentencePiece) {
  std::string error;
  const std::string model = testing::TrainTinySentencePieceModel(&error);
  ASSERT_FALSE(model.empty()) << error;
  ASSERT_OK_AND_ASSIGN(auto tok, SentencePieceTokenizer::FromSerializedModel(model));
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("mistral-inst"));
  ASSERT_OK_AND_ASSIGN(ChatPrompt p,
                       BuildChatPrompt(*tok, tmpl, "sys", "what is it", "the context"));
  EXPECT_EQ(p.ids.front(), 1);
  EXPECT_THAT(tok->Decode(p.ids),
              IsOkAndHolds("<s>[INST] sys\n\nwhat is it\n\nthe context\n\nwhat is it [/INST]"));
  EXPECT_THAT(DecodeSpan(*tok, p), HasSubstr("what is it"));
  EXPECT_THAT(BuildChatPrompt(*tok, *GetChatTemplate("llama-3-inst"), "", "q", "c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // qllm-tiny needs the built-in model's special tokens.
  EXPECT_THAT(BuildChatPrompt(*tok, *GetChatTemplate("qllm-tiny"), "", "q", "c"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ChatTemplate, RejectsBadInput) {
  auto tok = TinyBpe();
  EXPECT_THAT(GetChatTemplate("chatml"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(ChatTemplate tmpl, GetChatTemplate("qllm-tiny"));
  EXPECT_THAT(BuildChatPrompt(*tok, tmpl, "", "  \n", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ChatTemplate bad = tmpl;
  bad.body = "{question} {contxt}";
  EXPECT_THAT(BuildChatPrompt(*tok, bad, "", "q", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  bad.body = "{question} {context";
  EXPECT_THAT(BuildChatPrompt(*tok, bad, "", "q", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  bad.body = "{context}";
  EXPECT_THAT(BuildChatPrompt(*tok, bad, "", "q", "c"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BuildChatPrompt(*tok, tmpl, "", "q", "bad \xC3"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ChatTemplateNames().size(), 3u);
}

}  // namespace
}  // namespace qllm::tokenizer
