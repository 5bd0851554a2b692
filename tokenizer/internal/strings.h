// Bridges std::string_view (this module's API type) and absl::string_view, which Debian's
// Abseil build keeps as a separate class (ABSL_OPTION_USE_STD_STRING_VIEW == 0).
#ifndef QLLM_TOKENIZER_INTERNAL_STRINGS_H_
#define QLLM_TOKENIZER_INTERNAL_STRINGS_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace qllm::tokenizer::internal {

inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_STRINGS_H_
