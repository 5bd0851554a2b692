// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (Llama-3 family, GPT-2
// style). Reproduces Hugging Face `tokenizers`: added-token split, regex pre-tokenizer (PCRE2
// JIT), byte-to-unicode mapping, merges by rank (leftmost on ties), ignore_merges, and the
// ByteLevel decoder.
#ifndef QLLM_TOKENIZER_BPE_TOKENIZER_H_
#define QLLM_TOKENIZER_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace qllm::tokenizer {

namespace internal {
class RegexSplitter;
class SpecialMatcher;
struct BpeSpec;
}  // namespace internal

// Which tokens serve as bos / eos; empty means "none".
struct BpeOptions {
  // Text of the beginning-of-sequence token. Default: "" (none).
  std::string bos_token;
  // Text of the end-of-sequence token. Default: "" (none).
  std::string eos_token;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Loads tokenizer.json at `path`.
  // Returns kNotFound when the file does not exist, kInvalidArgument when it is malformed
  // (bad JSON, missing fields, merges or byte tokens missing from the vocabulary, duplicate
  // ids, a bos/eos token that is not in the vocabulary), kUnimplemented for configurations
  // this class does not reproduce (normalizers, non-byte-level models, lstrip added tokens).
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromFile(const std::string& path,
                                                                const BpeOptions& options = {});
  // As FromFile, from the file's contents.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(std::string_view json_text,
                                                                const BpeOptions& options = {});

  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;
  ~BpeTokenizer() override;

  TokenizerKind kind() const override { return TokenizerKind::kByteLevelBpe; }
  absl::Status AppendTokenBytes(int32_t id, const DecodeOptions& options, DecodeState* state,
                                std::string* out) const override;
  size_t vocab_size() const override { return id_bytes_.size(); }
  absl::StatusOr<int32_t> TokenToId(std::string_view token) const override;
  absl::StatusOr<std::string> IdToToken(int32_t id) const override;
  const std::vector<SpecialToken>& special_tokens() const override { return added_tokens_; }
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }

 protected:
  absl::Status EncodeInto(std::string_view text, const EncodeOptions& options,
                          std::vector<int32_t>* ids,
                          std::vector<ByteRange>* offsets) const override;

 private:
  enum class IdKind : uint8_t { kUnused, kModel, kAdded, kSpecial };
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  BpeTokenizer();
  absl::Status Init(internal::BpeSpec spec, const BpeOptions& options);
  // Appends the tokens of one pre-token `word` starting at byte `base` of the input.
  void EncodeWord(std::string_view word, size_t base, std::vector<int32_t>* ids,
                  std::vector<ByteRange>* offsets) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;

  std::vector<std::string> id_bytes_;  // Raw bytes (added tokens: their content) per id.
  std::vector<std::string> id_token_;  // Vocabulary string per id.
  std::vector<IdKind> id_kind_;
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;  // Model vocabulary by raw bytes.
  absl::flat_hash_map<std::string, int32_t> token_to_id_;  // By vocabulary string.
  absl::flat_hash_map<uint64_t, Merge> merges_;            // Key: left id << 32 | right id.
  std::array<int32_t, 256> byte_id_{};
  bool ignore_merges_ = false;
  std::vector<SpecialToken> added_tokens_;
  std::unique_ptr<internal::SpecialMatcher> matcher_;
  std::unique_ptr<internal::RegexSplitter> splitter_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_BPE_TOKENIZER_H_
