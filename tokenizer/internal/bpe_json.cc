#include "tokenizer/internal/bpe_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qllm::tokenizer::internal {
namespace {

using nlohmann::json;

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", what));
}

bool IsNullOrFalse(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() || (it->is_boolean() && !it->get<bool>());
}

absl::Status ParsePreTokenizer(const json& pre, BpeSpec* spec) {
  if (!pre.is_object())
    return absl::UnimplementedError("tokenizer.json: no ByteLevel pre_tokenizer");
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    if (!pre.value("use_regex", true)) {
      return absl::UnimplementedError("tokenizer.json: ByteLevel without any split regex");
    }
    if (pre.value("add_prefix_space", false)) {
      return absl::UnimplementedError("tokenizer.json: ByteLevel add_prefix_space");
    }
    spec->split_pattern = std::string(kGpt2SplitPattern);
    return absl::OkStatus();
  }
  if (type != "Sequence") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: pre_tokenizer ", type));
  }
  const json& list = pre.at("pretokenizers");
  if (!list.is_array() || list.size() != 2 || list[0].value("type", "") != "Split" ||
      list[1].value("type", "") != "ByteLevel") {
    return absl::UnimplementedError(
        "tokenizer.json: pre_tokenizer Sequence other than [Split, ByteLevel]");
  }
  const json& split = list[0];
  if (split.value("behavior", "") != "Isolated" || split.value("invert", false)) {
    return absl::UnimplementedError("tokenizer.json: Split behavior other than Isolated");
  }
  const json& pattern = split.at("pattern");
  if (!pattern.contains("Regex") || !pattern["Regex"].is_string()) {
    return absl::UnimplementedError("tokenizer.json: Split pattern is not a Regex");
  }
  if (list[1].value("use_regex", true) || list[1].value("add_prefix_space", false)) {
    return absl::UnimplementedError("tokenizer.json: ByteLevel after Split must not split again");
  }
  spec->split_pattern = pattern["Regex"].get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseModel(const json& model, BpeSpec* spec) {
  if (!model.is_object()) return Invalid("missing model");
  if (model.value("type", "BPE") != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: model type ", model.value("type", "")));
  }
  if (!IsNullOrFalse(model, "byte_fallback") || !IsNullOrFalse(model, "dropout") ||
      !IsNullOrFalse(model, "continuing_subword_prefix") ||
      !IsNullOrFalse(model, "end_of_word_suffix")) {
    return absl::UnimplementedError(
        "tokenizer.json: BPE with byte_fallback, dropout or subword affixes");
  }
  spec->ignore_merges = model.value("ignore_merges", false);
  const json& vocab = model.at("vocab");
  if (!vocab.is_object() || vocab.empty()) return Invalid("model.vocab is not a non-empty object");
  spec->vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return Invalid(absl::StrCat("vocab id of \"", token, "\" is not a non-negative int32"));
    }
    spec->vocab.emplace_back(token, id.get<int32_t>());
  }
  const json& merges = model.at("merges");
  if (!merges.is_array()) return Invalid("model.merges is not an array");
  spec->merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos || space + 1 >= s.size()) {
        return Invalid(absl::StrCat("merge \"", s, "\" is not \"left right\""));
      }
      spec->merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Invalid("merge entry is neither \"a b\" nor [a, b]");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const json& root, BpeSpec* spec) {
  const auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Invalid("added_tokens is not an array");
  for (const json& t : *it) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string()) {
      return Invalid("added_tokens entry needs integer id and string content");
    }
    if (t.value("lstrip", false) || t.value("rstrip", false) || t.value("single_word", false)) {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: added token ",
                                                   t["content"].get<std::string>(),
                                                   " uses lstrip/rstrip/single_word"));
    }
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX) return Invalid("added token id out of int32 range");
    spec->added_tokens.push_back(
        {t["content"].get<std::string>(), static_cast<int32_t>(id), t.value("special", false)});
  }
  return absl::OkStatus();
}

absl::Status ParseRoot(const json& root, BpeSpec* spec) {
  if (!root.is_object()) return Invalid("top level is not an object");
  const auto normalizer = root.find("normalizer");
  if (normalizer != root.end() && !normalizer->is_null()) {
    return absl::UnimplementedError("tokenizer.json: normalizers are not supported");
  }
  RETURN_IF_ERROR(ParseModel(root.at("model"), spec));
  const auto pre = root.find("pre_tokenizer");
  RETURN_IF_ERROR(ParsePreTokenizer(pre == root.end() ? json() : *pre, spec));
  return ParseAddedTokens(root, spec);
}

}  // namespace

absl::StatusOr<BpeSpec> ParseBpeJson(std::string_view json_text) {
  BpeSpec spec;
  // nlohmann::json throws on syntax and type errors; they stop here as kInvalidArgument.
  try {
    const json root = json::parse(json_text.begin(), json_text.end());
    RETURN_IF_ERROR(ParseRoot(root, &spec));
  } catch (const json::exception& e) {
    return Invalid(e.what());
  }
  return spec;
}

}  // namespace qllm::tokenizer::internal
