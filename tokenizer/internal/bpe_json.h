// Parsing of a Hugging Face tokenizer.json into the parts a byte-level BPE tokenizer needs.
#ifndef QLLM_TOKENIZER_INTERNAL_BPE_JSON_H_
#define QLLM_TOKENIZER_INTERNAL_BPE_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace qllm::tokenizer::internal {

// The GPT-2 split pattern, used by ByteLevel pre-tokenizers with use_regex=true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct BpeSpec {
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool special = false;
  };
  // Model vocabulary: byte-level token string (e.g. "Ġthe") and id.
  std::vector<std::pair<std::string, int32_t>> vocab;
  // Merges in rank order (rank = index), as byte-level token strings.
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<AddedToken> added_tokens;
  // Split regex (Hugging Face syntax) applied before byte-level mapping.
  std::string split_pattern;
  // Model.ignore_merges: a pre-token found whole in the vocabulary is emitted without merging.
  bool ignore_merges = false;
};

// Parses tokenizer.json text. Supported: model BPE without byte_fallback, dropout or subword
// affixes; no normalizer; pre_tokenizer ByteLevel(use_regex) or Sequence[Split(Regex,
// Isolated), ByteLevel(use_regex=false)]; merges as "a b" strings or [a, b] pairs.
// Returns kInvalidArgument for malformed JSON or missing/ill-typed fields, kUnimplemented for
// well-formed configurations outside the supported set.
absl::StatusOr<BpeSpec> ParseBpeJson(std::string_view json_text);

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_BPE_JSON_H_
