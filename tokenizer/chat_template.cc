#include "tokenizer/chat_template.h"

#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/special_matcher.h"
#include "tokenizer/internal/strings.h"

namespace qllm::tokenizer {
namespace {

// Strips ASCII whitespace at both ends (the templates' `| trim`).
std::string_view Trim(std::string_view s) {
  const absl::string_view t = absl::StripAsciiWhitespace(internal::ToAbsl(s));
  return std::string_view(t.data(), t.size());
}

// One text run being assembled between special tokens.
struct Run {
  std::string text;
  // Byte range of the first {question} inside `text`, when it lies in this run.
  std::optional<std::pair<size_t, size_t>> question;
};

struct Builder {
  const Tokenizer& tokenizer;
  std::string_view system;
  std::string_view question;
  std::string_view context;
  ChatPrompt prompt;
  Run run;
  bool question_seen = false;
  bool has_question_placeholder = false;
  bool has_context_placeholder = false;

  // Encodes the pending run and appends it.
  absl::Status FlushRun() {
    if (run.text.empty()) return absl::OkStatus();
    EncodeOptions options;
    options.parse_special = false;
    ASSIGN_OR_RETURN(Encoding enc, tokenizer.EncodeWithOffsets(run.text, options));
    const int64_t base = static_cast<int64_t>(prompt.ids.size());
    if (run.question.has_value()) {
      const auto [qb, qe] = *run.question;
      int64_t first = -1;
      int64_t last = -1;
      for (size_t i = 0; i < enc.ids.size(); ++i) {
        const ByteRange& r = enc.offsets[i];
        if (r.end > static_cast<int64_t>(qb) && r.begin < static_cast<int64_t>(qe)) {
          if (first < 0) first = static_cast<int64_t>(i);
          last = static_cast<int64_t>(i);
        }
      }
      if (first < 0) return absl::InternalError("question tokens not found in the prompt");
      prompt.question_begin = base + first;
      prompt.question_end = base + last + 1;
    }
    prompt.ids.insert(prompt.ids.end(), enc.ids.begin(), enc.ids.end());
    run = Run();
    return absl::OkStatus();
  }

  absl::Status AddSpecial(int32_t id) {
    RETURN_IF_ERROR(FlushRun());
    prompt.ids.push_back(id);
    return absl::OkStatus();
  }

  absl::Status AddPlaceholder(std::string_view name) {
    if (name == "bos" || name == "eos") {
      const std::optional<int32_t> id = name == "bos" ? tokenizer.bos_id() : tokenizer.eos_id();
      return id.has_value() ? AddSpecial(*id) : absl::OkStatus();
    }
    if (name == "system") {
      run.text.append(system);
    } else if (name == "context") {
      has_context_placeholder = true;
      run.text.append(context);
    } else if (name == "question") {
      has_question_placeholder = true;
      if (!question_seen) {
        run.question = std::pair{run.text.size(), run.text.size() + question.size()};
        question_seen = true;
      }
      run.text.append(question);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown placeholder {", internal::ToAbsl(name), "}"));
    }
    return absl::OkStatus();
  }

  // Renders one pattern: placeholders, special tokens via `matcher`, literal text.
  absl::Status AddPattern(std::string_view pattern, const internal::SpecialMatcher& matcher) {
    absl::Status status;
    auto add_literal = [&](std::string_view literal, size_t) {
      if (status.ok()) run.text.append(literal);
    };
    auto add_special = [&](int32_t id, size_t, size_t) {
      if (status.ok()) status = AddSpecial(id);
    };
    size_t i = 0;
    while (i < pattern.size() && status.ok()) {
      const size_t open = pattern.find('{', i);
      matcher.Split(pattern.substr(i, open == std::string_view::npos ? open : open - i),
                    add_literal, add_special);
      if (open == std::string_view::npos) break;
      const size_t close = pattern.find('}', open);
      if (close == std::string_view::npos) {
        return absl::InvalidArgumentError("unclosed '{' in chat template pattern");
      }
      if (status.ok()) status = AddPlaceholder(pattern.substr(open + 1, close - open - 1));
      i = close + 1;
    }
    return status;
  }
};

}  // namespace

std::vector<std::string> ChatTemplateNames() {
  return {"llama-3-inst", "mistral-inst", "qllm-tiny"};
}

absl::StatusOr<ChatTemplate> GetChatTemplate(std::string_view name) {
  if (name == "llama-3-inst") {
    return ChatTemplate{
        .name = "llama-3-inst",
        .prefix = "{bos}",
        .system_block = "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        .body =
            "<|start_header_id|>user<|end_header_id|>\n\n{question}\n\n{context}\n\n"
            "{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        .special_tokens = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
        .document_body = "<|start_header_id|>user<|end_header_id|>\n\n{context}",
        .followup_body =
            "\n\n{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    };
  }
  if (name == "mistral-inst") {
    return ChatTemplate{
        .name = "mistral-inst",
        .prefix = "{bos}[INST] ",
        .system_block = "{system}\n\n",
        .body = "{question}\n\n{context}\n\n{question} [/INST]",
        .special_tokens = {},
        .document_body = "{context}",
        .followup_body = "\n\n{question} [/INST]",
    };
  }
  if (name == "qllm-tiny") {
    // tools/train/corpus.py TEMPLATE, which the model was trained on. Training documents begin
    // with a space (every filler sentence is " Sentence."), so the trimmed context gets one back.
    return ChatTemplate{
        .name = "qllm-tiny",
        .prefix = "<|begin_of_text|>",
        .system_block = "",
        .body = "<|question|>{question}<|context|> {context}<|question|>{question}<|answer|>",
        .special_tokens = {"<|begin_of_text|>", "<|question|>", "<|context|>", "<|answer|>"},
        .document_body = "<|context|> {context}",
        .followup_body = "<|question|>{question}<|answer|>",
    };
  }
  return absl::NotFoundError(absl::StrCat("unknown chat template ", internal::ToAbsl(name)));
}

namespace {

absl::StatusOr<internal::SpecialMatcher> MakeMatcher(const Tokenizer& tokenizer,
                                                     const ChatTemplate& tmpl) {
  std::vector<SpecialToken> specials;
  for (const std::string& text : tmpl.special_tokens) {
    absl::StatusOr<int32_t> id = FindSpecialToken(tokenizer, text);
    if (!id.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("chat template ", tmpl.name, " needs special token ", text));
    }
    specials.push_back({text, *id});
  }
  return internal::SpecialMatcher(specials);
}

}  // namespace

absl::StatusOr<ChatPrompt> BuildChatPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                           std::string_view system, std::string_view question,
                                           std::string_view context) {
  ASSIGN_OR_RETURN(const internal::SpecialMatcher matcher, MakeMatcher(tokenizer, tmpl));
  Builder b{.tokenizer = tokenizer,
            .system = Trim(system),
            .question = Trim(question),
            .context = Trim(context)};
  if (b.question.empty()) return absl::InvalidArgumentError("empty question");
  if (!b.system.empty() && tmpl.system_block.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ", tmpl.name, " has no system turn"));
  }
  RETURN_IF_ERROR(b.AddPattern(tmpl.prefix, matcher));
  if (!b.system.empty()) RETURN_IF_ERROR(b.AddPattern(tmpl.system_block, matcher));
  RETURN_IF_ERROR(b.AddPattern(tmpl.body, matcher));
  RETURN_IF_ERROR(b.FlushRun());
  if (!b.has_question_placeholder || !b.has_context_placeholder) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ", tmpl.name, " body lacks {question} or {context}"));
  }
  return std::move(b.prompt);
}

absl::StatusOr<ChatPrompt> BuildDocumentPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                               std::string_view system, std::string_view context) {
  ASSIGN_OR_RETURN(const internal::SpecialMatcher matcher, MakeMatcher(tokenizer, tmpl));
  if (tmpl.document_body.find("{question}") != std::string::npos ||
      tmpl.document_body.find("{context}") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template ", tmpl.name, " document_body must use {context} and not {question}"));
  }
  Builder b{
      .tokenizer = tokenizer, .system = Trim(system), .question = {}, .context = Trim(context)};
  if (b.context.empty()) return absl::InvalidArgumentError("empty document");
  if (!b.system.empty() && tmpl.system_block.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ", tmpl.name, " has no system turn"));
  }
  RETURN_IF_ERROR(b.AddPattern(tmpl.prefix, matcher));
  if (!b.system.empty()) RETURN_IF_ERROR(b.AddPattern(tmpl.system_block, matcher));
  RETURN_IF_ERROR(b.AddPattern(tmpl.document_body, matcher));
  RETURN_IF_ERROR(b.FlushRun());
  return std::move(b.prompt);
}

absl::StatusOr<ChatPrompt> BuildFollowupPrompt(const Tokenizer& tokenizer, const ChatTemplate& tmpl,
                                               std::string_view question) {
  ASSIGN_OR_RETURN(const internal::SpecialMatcher matcher, MakeMatcher(tokenizer, tmpl));
  if (tmpl.followup_body.find("{context}") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template ", tmpl.name, " followup_body must use {question} and not {context}"));
  }
  Builder b{.tokenizer = tokenizer, .system = {}, .question = Trim(question), .context = {}};
  if (b.question.empty()) return absl::InvalidArgumentError("empty question");
  RETURN_IF_ERROR(b.AddPattern(tmpl.followup_body, matcher));
  RETURN_IF_ERROR(b.FlushRun());
  if (!b.has_question_placeholder) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ", tmpl.name, " followup_body must use {question}"));
  }
  return std::move(b.prompt);
}

}  // namespace qllm::tokenizer
