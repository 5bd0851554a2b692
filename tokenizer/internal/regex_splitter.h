// Pre-tokenizer split on a Hugging Face regex, run by PCRE2 with JIT (pcre2.h stays private).
#ifndef QLLM_TOKENIZER_INTERNAL_REGEX_SPLITTER_H_
#define QLLM_TOKENIZER_INTERNAL_REGEX_SPLITTER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qllm::tokenizer::internal {

// Rewrites a Hugging Face (Oniguruma) pattern into PCRE2 syntax with Oniguruma's Unicode
// meaning of \s (the White_Space property: \t-\r, U+0085, \p{Z}); PCRE2's own \s differs
// (it adds U+180E). Returns kUnimplemented for constructs it cannot rewrite (\S inside a class).
absl::StatusOr<std::string> TranslateHfPattern(std::string_view pattern);

class RegexSplitter {
 public:
  // Compiles `hf_pattern` (Hugging Face syntax) in UTF + UCP mode and JIT-compiles it.
  // Returns kInvalidArgument when PCRE2 rejects the pattern, kUnimplemented as
  // TranslateHfPattern, kInternal when JIT compilation fails.
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(std::string_view hf_pattern);

  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();

  // Splits `text` like Hugging Face `Split(behavior=Isolated)`: every match and every gap
  // between matches becomes one piece, reported as on_piece(begin, end) in order; together the
  // pieces cover `text`. REQUIRES: `text` is valid UTF-8 (not re-checked).
  // Returns kResourceExhausted when the match needs more JIT stack than the 64 MiB limit,
  // kInternal for other PCRE2 match errors. Thread-safe.
  absl::Status Split(std::string_view text,
                     const std::function<void(size_t begin, size_t end)>& on_piece) const;

 private:
  struct Impl;
  explicit RegexSplitter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_REGEX_SPLITTER_H_
