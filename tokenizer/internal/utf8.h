// UTF-8 validation and lossy repair shared by the encoders and decoders.
#ifndef QLLM_TOKENIZER_INTERNAL_UTF8_H_
#define QLLM_TOKENIZER_INTERNAL_UTF8_H_

#include <string>
#include <string_view>

namespace qllm::tokenizer::internal {

// True when `text` is well-formed UTF-8 (Unicode Table 3-7: no overlongs, no surrogates,
// nothing above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Incremental UTF-8 repair. Bytes go in in arbitrary pieces; well-formed characters come out as
// soon as they are complete, each maximal ill-formed subpart becomes one U+FFFD (the W3C/Unicode
// "substitution of maximal subparts" practice that Rust's from_utf8_lossy follows), and a
// trailing incomplete-but-valid prefix is held back until more bytes arrive or Finish. Feeding
// the bytes in any split gives the same output as feeding them at once.
class Utf8Repairer {
 public:
  // Appends to `out` all text that `bytes` completes.
  void Append(std::string_view bytes, std::string* out);
  // Flushes a held-back incomplete sequence as U+FFFD and resets the state.
  void Finish(std::string* out);
  // Number of bytes held back.
  size_t pending_size() const { return pending_.size(); }

 private:
  std::string pending_;
};

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_UTF8_H_
