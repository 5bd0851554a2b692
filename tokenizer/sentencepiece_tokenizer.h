// SentencePiece tokenizer (tokenizer.model protobuf; Mistral and Llama-2 family) backed by
// Debian's libsentencepiece. The library is hidden behind a pimpl.
//
// Encoding matches Hugging Face's LlamaTokenizer(Fast) with legacy=true: special tokens
// (control and unknown pieces, e.g. "<s>", "</s>", "<unk>") are matched verbatim first, and every
// remaining text segment is encoded by SentencePiece on its own (so each segment gets the
// dummy-prefix "▁"). Decoding inverts that: the dummy-prefix space of the first piece after the
// start or after a special token is removed.
#ifndef QLLM_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define QLLM_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

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
class SpecialMatcher;
class SentencePieceBackend;
}  // namespace internal

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads tokenizer.model at `path`.
  // Returns kNotFound when the file does not exist, kInvalidArgument when it is not a valid
  // SentencePiece model.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromFile(const std::string& path);
  // As FromFile, from the serialized ModelProto bytes.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromSerializedModel(
      std::string_view serialized);

  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;
  ~SentencePieceTokenizer() override;

  TokenizerKind kind() const override { return TokenizerKind::kSentencePiece; }
  absl::Status AppendTokenBytes(int32_t id, const DecodeOptions& options, DecodeState* state,
                                std::string* out) const override;
  size_t vocab_size() const override { return pieces_.size(); }
  absl::StatusOr<int32_t> TokenToId(std::string_view token) const override;
  absl::StatusOr<std::string> IdToToken(int32_t id) const override;
  const std::vector<SpecialToken>& special_tokens() const override { return special_; }
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }

  // Decodes with libsentencepiece's own DecodeIds (drops control tokens). For conformance tests.
  // Returns kOutOfRange for unknown ids.
  absl::StatusOr<std::string> DecodeWithLibrary(const std::vector<int32_t>& ids) const;

 protected:
  absl::Status EncodeInto(std::string_view text, const EncodeOptions& options,
                          std::vector<int32_t>* ids,
                          std::vector<ByteRange>* offsets) const override;

 private:
  enum class PieceKind : uint8_t { kNormal, kByte, kSpecial };
  struct Piece {
    std::string piece;  // Vocabulary string, e.g. "▁the" or "<0x0A>".
    std::string bytes;  // Decoded bytes ("▁" -> ' ', byte pieces -> the byte).
    PieceKind kind = PieceKind::kNormal;
  };

  explicit SentencePieceTokenizer(std::unique_ptr<internal::SentencePieceBackend> backend);
  absl::Status Init();

  std::unique_ptr<internal::SentencePieceBackend> backend_;
  std::vector<Piece> pieces_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  std::vector<SpecialToken> special_;
  std::unique_ptr<internal::SpecialMatcher> matcher_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
