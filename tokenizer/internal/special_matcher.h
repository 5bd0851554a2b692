// Splits text around verbatim occurrences of special tokens, leftmost-longest (the order Hugging
// Face's added-token Aho-Corasick pass uses).
#ifndef QLLM_TOKENIZER_INTERNAL_SPECIAL_MATCHER_H_
#define QLLM_TOKENIZER_INTERNAL_SPECIAL_MATCHER_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace qllm::tokenizer::internal {

class SpecialMatcher {
 public:
  // `tokens` with empty text are ignored. The matcher copies what it needs.
  explicit SpecialMatcher(const std::vector<SpecialToken>& tokens);

  // Calls on_text(text_piece, byte_offset) for every maximal run without special tokens
  // (never empty) and on_special(id, byte_offset, length) for every special token, in order.
  template <typename OnText, typename OnSpecial>
  void Split(std::string_view text, OnText&& on_text, OnSpecial&& on_special) const {
    size_t run_start = 0;
    size_t i = 0;
    const size_t n = text.size();
    while (i < n) {
      const auto b = static_cast<unsigned char>(text[i]);
      if (!first_byte_[b]) {
        ++i;
        continue;
      }
      const Entry* hit = Match(text, i);
      if (hit == nullptr) {
        ++i;
        continue;
      }
      if (i > run_start) on_text(text.substr(run_start, i - run_start), run_start);
      on_special(hit->id, i, hit->text.size());
      i += hit->text.size();
      run_start = i;
    }
    if (n > run_start) on_text(text.substr(run_start), run_start);
  }

  // Encodes `text` for a tokenizer: with `parse_special`, special tokens go straight to `ids`
  // (their byte ranges to `offsets` when non-null) and the runs between them to
  // encode_text(run, byte_offset); without it the whole text is one run.
  template <typename EncodeText>
  void EncodeAround(std::string_view text, bool parse_special, EncodeText&& encode_text,
                    std::vector<int32_t>* ids, std::vector<ByteRange>* offsets) const {
    if (!parse_special || empty()) {
      encode_text(text, 0);
      return;
    }
    Split(text, encode_text, [&](int32_t id, size_t pos, size_t len) {
      ids->push_back(id);
      if (offsets) offsets->push_back({static_cast<int64_t>(pos), static_cast<int64_t>(pos + len)});
    });
  }

  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    std::string text;
    int32_t id;
  };
  // Longest entry matching at text[pos], or nullptr.
  const Entry* Match(std::string_view text, size_t pos) const;

  std::vector<Entry> entries_;  // Sorted by first byte, then length descending.
  std::array<bool, 256> first_byte_{};
  std::array<uint32_t, 257> bucket_{};  // entries_ index range per first byte.
};

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_SPECIAL_MATCHER_H_
