#include "tokenizer/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/strings.h"
#include "tokenizer/internal/utf8.h"

namespace qllm::tokenizer {

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  RETURN_IF_ERROR(EncodeInto(text, options, &ids, nullptr));
  return ids;
}

absl::StatusOr<Encoding> Tokenizer::EncodeWithOffsets(std::string_view text,
                                                      const EncodeOptions& options) const {
  Encoding enc;
  RETURN_IF_ERROR(EncodeInto(text, options, &enc.ids, &enc.offsets));
  return enc;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              const DecodeOptions& options) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  DecodeState state;
  for (const int32_t id : ids) RETURN_IF_ERROR(AppendTokenBytes(id, options, &state, &bytes));
  if (internal::IsValidUtf8(bytes)) return bytes;
  std::string text;
  internal::Utf8Repairer repairer;
  repairer.Append(bytes, &text);
  repairer.Finish(&text);
  return text;
}

absl::StatusOr<int32_t> FindSpecialToken(const Tokenizer& tokenizer, std::string_view text) {
  for (const SpecialToken& t : tokenizer.special_tokens()) {
    if (t.text == text) return t.id;
  }
  return absl::NotFoundError(
      absl::StrCat("tokenizer has no special token ", internal::ToAbsl(text)));
}

}  // namespace qllm::tokenizer
