// Chat templates that build Q-LLM prompts: the question goes BEFORE the context and is repeated
// AFTER it (docs/qllm-algorithm.md, step 5b), and the prompt comes back as token ids together
// with the token span of the first occurrence of the question.
//
// A template is data: three pattern strings in which
//   {bos} / {eos}                  insert the tokenizer's bos / eos id (nothing if it has none),
//   {system} {question} {context}  insert the caller's text (ASCII whitespace trimmed, as the
//                                  Hugging Face templates' `| trim` does),
//   any string listed in special_tokens is emitted as that special token's id,
//   everything else is literal text.
// Literal text and inserted text between two special tokens form one run that is encoded in one
// piece, exactly as Hugging Face tokenizes a rendered chat template. Inserted text is encoded
// with parse_special=false, so a document containing "<|eot_id|>" cannot inject a control token
// (Hugging Face would turn it into the control token; this is the one deliberate difference).
#ifndef QLLM_TOKENIZER_CHAT_TEMPLATE_H_
#define QLLM_TOKENIZER_CHAT_TEMPLATE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace qllm::tokenizer {

struct ChatTemplate {
  // Registry name, e.g. "llama-3-inst".
  std::string name;
  // Rendered first.
  std::string prefix;
  // Rendered after `prefix` only when the system text is non-empty; may use {system}. Empty
  // means the template has no system turn (BuildChatPrompt rejects system text).
  std::string system_block;
  // Rendered last; must use {question} at least once and {context} once.
  std::string body;
  // Strings in the patterns that must be emitted as special tokens; each must be a special
  // token of the tokenizer.
  std::vector<std::string> special_tokens;
  // Stored documents (ingested without a question, asked later): the document prompt is
  // prefix + system_block + document_body (uses {context}, not {question}); a question about
  // it is followup_body (uses {question}, not {context}) appended after the document's tokens.
  std::string document_body;
  std::string followup_body;
};

// A tokenized prompt. ids[question_begin, question_end) are the tokens that cover the first
// occurrence of the question text (a token straddling the question's edge, such as "?\n\n", is
// included).
struct ChatPrompt {
  std::vector<int32_t> ids;
  int64_t question_begin = 0;
  int64_t question_end = 0;
};

// Built-in templates:
//  - "llama-3-inst": Llama-3 Instruct headers.
//  - "mistral-inst": "<s>[INST] ... [/INST]", system text prepended to the user turn as in
//    Mistral's template.
//  - "qllm-tiny": the prompt the built-in model (models/qllm-tiny) was trained on, exactly
//    tools/train/corpus.py's TEMPLATE:
//      <|begin_of_text|><|question|>{question}<|context|> {context}<|question|>{question}<|answer|>
//    The answer follows <|answer|> and ends with <|eot|> (the model's eos). The space before
//    {context} restores the leading space every training document has (inserted text is
//    trimmed). Needs the special tokens <|begin_of_text|>, <|question|>, <|context|> and
//    <|answer|> (the model's tokenizer has them); it has no system turn.
// Returns kNotFound for any other name.
absl::StatusOr<ChatTemplate> GetChatTemplate(std::string_view name);

// Names accepted by GetChatTemplate.
std::vector<std::string> ChatTemplateNames();

// Builds the prompt of `tmpl` for `tokenizer`.
// Returns kInvalidArgument when the question is empty after trimming, when system text is given
// to a template without a system turn, when a pattern has an unknown {placeholder} or an
// unclosed '{', or when the body lacks {question} or {context};
// kFailedPrecondition when the tokenizer lacks one of tmpl.special_tokens; the tokenizer's
// errors otherwise (kInvalidArgument for text that is not UTF-8).
absl::StatusOr<ChatPrompt> BuildChatPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                           std::string_view system, std::string_view question,
                                           std::string_view context);

// The prompt of a stored document (no question; question_begin == question_end == 0).
// Errors as BuildChatPrompt; kInvalidArgument when document_body lacks {context} or uses
// {question}, or when the context is empty after trimming.
absl::StatusOr<ChatPrompt> BuildDocumentPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                               std::string_view system, std::string_view context);

// The tokens of a question about a stored document, to run after the document's tokens; the
// question span is relative to the returned ids. Errors as BuildChatPrompt; kInvalidArgument
// when followup_body lacks {question} or uses {context}.
absl::StatusOr<ChatPrompt> BuildFollowupPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                               std::string_view question);

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_CHAT_TEMPLATE_H_
