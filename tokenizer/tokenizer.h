// Tokenizer interface shared by the byte-level BPE (Hugging Face tokenizer.json, Llama-3 family)
// and SentencePiece (tokenizer.model, Mistral / Llama-2 family) implementations.
//
// Text is UTF-8 throughout. Token ids are int32_t in [0, vocab_size()).
//
// Thread safety: every const method of a Tokenizer may be called concurrently from any number of
// threads; implementations hold no mutable state after construction.
#ifndef QLLM_TOKENIZER_TOKENIZER_H_
#define QLLM_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace qllm::tokenizer {

// Which implementation a Tokenizer is.
enum class TokenizerKind {
  kByteLevelBpe,   // tokenizer.json with a ByteLevel pre-tokenizer (Llama-3, GPT-2 style).
  kSentencePiece,  // tokenizer.model protobuf (Mistral, Llama-2).
};

// Options for Encode. Defaults reproduce Hugging Face `encode(text, add_special_tokens=False)`.
struct EncodeOptions {
  // Prepends bos_id() when the tokenizer has one. Default: false.
  bool add_bos = false;
  // Recognises the text of special/added tokens (e.g. "<|eot_id|>", "<s>") inside `text` and
  // emits their ids, as Hugging Face does. Set to false for untrusted text (document bodies,
  // user questions) so that it cannot inject control tokens. Default: true.
  bool parse_special = true;
};

// Options for Decode and StreamDecoder.
struct DecodeOptions {
  // Drops special tokens (bos, eos, <|eot_id|>, ...) from the output. Default: false (their text
  // is emitted, so Decode(Encode(x)) == x also for text containing special-token strings).
  bool skip_special_tokens = false;
};

// A byte range [begin, end) inside an encoded text.
struct ByteRange {
  int64_t begin = 0;
  int64_t end = 0;
};

// Result of EncodeWithOffsets: ids[i] was produced from text bytes offsets[i]. Ranges are
// non-decreasing; a range may be empty (SentencePiece's dummy-prefix "▁" piece) and several
// tokens may share one range (byte-fallback pieces of one character).
struct Encoding {
  std::vector<int32_t> ids;
  std::vector<ByteRange> offsets;
};

// A token whose text is matched verbatim in the input before the model runs (Hugging Face
// "added tokens"; SentencePiece control and unknown pieces).
struct SpecialToken {
  std::string text;
  int32_t id = 0;
};

// Decoding state carried between successive AppendTokenBytes calls. A fresh state starts a new
// text; StreamDecoder and Decode keep one per output.
struct DecodeState {
  // True at the start of the text and right after a special token: SentencePiece removes the
  // leading dummy-prefix space of the next piece there.
  bool at_segment_start = true;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual TokenizerKind kind() const = 0;

  // Encodes UTF-8 `text` into token ids.
  // Returns kInvalidArgument when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              const EncodeOptions& options = {}) const;

  // As Encode, and also returns the byte range of `text` behind each id (the bos id added by
  // add_bos gets the empty range [0, 0)). Same errors as Encode.
  absl::StatusOr<Encoding> EncodeWithOffsets(std::string_view text,
                                             const EncodeOptions& options = {}) const;

  // Appends the raw bytes that token `id` contributes to decoded text, given the decode state,
  // and updates the state. The bytes of one token may be an incomplete UTF-8 sequence (byte-level
  // BPE and byte-fallback pieces split characters); Decode and StreamDecoder reassemble them.
  // Returns kOutOfRange when `id` is not a token of this tokenizer; `out` is then unchanged.
  virtual absl::Status AppendTokenBytes(int32_t id, const DecodeOptions& options,
                                        DecodeState* state, std::string* out) const = 0;

  // Decodes `ids` into text. Byte sequences that are not valid UTF-8 (only possible for id
  // sequences no Encode produced) are replaced by U+FFFD per maximal ill-formed subpart, as
  // Hugging Face (Rust `from_utf8_lossy`) does.
  // Returns kOutOfRange when an id is not a token of this tokenizer.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     const DecodeOptions& options = {}) const;

  // Number of ids: every valid id is < vocab_size(), special tokens included.
  virtual size_t vocab_size() const = 0;

  // Returns the id of the token whose vocabulary string is `token` (byte-level strings such as
  // "Ġthe" for BPE, pieces such as "▁the" for SentencePiece, or a special token's text).
  // Returns kNotFound when there is no such token.
  virtual absl::StatusOr<int32_t> TokenToId(std::string_view token) const = 0;

  // Inverse of TokenToId. Returns kOutOfRange for an unknown id.
  virtual absl::StatusOr<std::string> IdToToken(int32_t id) const = 0;

  // The tokens that Encode with parse_special=true matches verbatim in text.
  virtual const std::vector<SpecialToken>& special_tokens() const = 0;

  // True when `id` is a special (control) token; false for unknown ids.
  virtual bool IsSpecial(int32_t id) const = 0;

  // Beginning / end of sequence ids, when the tokenizer defines them.
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;

 protected:
  // Implements Encode (offsets == nullptr) and EncodeWithOffsets: appends to `ids` (and
  // `offsets`). Same errors as Encode.
  virtual absl::Status EncodeInto(std::string_view text, const EncodeOptions& options,
                                  std::vector<int32_t>* ids,
                                  std::vector<ByteRange>* offsets) const = 0;
};

// Returns the id of special token `text`, or kNotFound.
absl::StatusOr<int32_t> FindSpecialToken(const Tokenizer& tokenizer, std::string_view text);

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_TOKENIZER_H_
