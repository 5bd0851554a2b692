// Thin wrapper over sentencepiece::SentencePieceProcessor. Its header declares its own
// `absl::string_view`, which clashes with Abseil's, so it is included only by
// sentencepiece_backend.cc, and this interface uses std types only.
#ifndef QLLM_TOKENIZER_INTERNAL_SENTENCEPIECE_BACKEND_H_
#define QLLM_TOKENIZER_INTERNAL_SENTENCEPIECE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qllm::tokenizer::internal {

class SentencePieceBackend {
 public:
  enum class Type { kNormal, kUnknown, kControl, kByte, kUnused };

  // Parses a serialized ModelProto. On failure returns nullptr and sets *error.
  static std::unique_ptr<SentencePieceBackend> Load(std::string_view serialized,
                                                    std::string* error);
  SentencePieceBackend(const SentencePieceBackend&) = delete;
  SentencePieceBackend& operator=(const SentencePieceBackend&) = delete;
  ~SentencePieceBackend();

  int piece_size() const;
  std::string piece(int id) const;
  Type type(int id) const;
  int bos_id() const;  // -1 when undefined.
  int eos_id() const;

  // Encodes one segment. With `offsets` non-null also fills begin/end byte pairs. Returns false
  // and sets *error when the library fails.
  bool Encode(std::string_view text, std::vector<int32_t>* ids, std::vector<uint32_t>* offsets,
              std::string* error) const;
  bool Decode(const std::vector<int32_t>& ids, std::string* text, std::string* error) const;

 private:
  struct Impl;
  explicit SentencePieceBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_SENTENCEPIECE_BACKEND_H_
