// Incremental detokenizer for generation: token ids go in one at a time, and only complete UTF-8
// text comes out, never part of a multi-byte character.
//
// For any id sequence, the concatenation of every Feed result followed by Flush equals
// Tokenizer::Decode of the whole sequence (same options).
#ifndef QLLM_TOKENIZER_STREAM_DECODER_H_
#define QLLM_TOKENIZER_STREAM_DECODER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/internal/utf8.h"
#include "tokenizer/tokenizer.h"

namespace qllm::tokenizer {

// Not thread-safe: one StreamDecoder per output stream.
class StreamDecoder {
 public:
  // `tokenizer` is not owned and must outlive this object.
  explicit StreamDecoder(const Tokenizer* tokenizer, const DecodeOptions& options = {});

  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;

  // Adds token `id` and returns the text it completes (possibly empty while a character is
  // still split across tokens).
  // Returns kOutOfRange for an id the tokenizer does not know; the decoder is then unchanged.
  absl::StatusOr<std::string> Feed(int32_t id);

  // Ends the stream: returns the held-back bytes of an unfinished character as U+FFFD (empty
  // when nothing is held) and resets the decoder for a new text.
  std::string Flush();

  // Number of bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return repairer_.pending_size(); }

 private:
  const Tokenizer* const tokenizer_;  // Not owned.
  const DecodeOptions options_;
  DecodeState state_;
  internal::Utf8Repairer repairer_;
  std::string scratch_;
};

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_STREAM_DECODER_H_
