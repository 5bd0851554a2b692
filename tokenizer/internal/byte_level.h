// GPT-2 byte-to-unicode mapping used by byte-level BPE vocabularies.
#ifndef QLLM_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
#define QLLM_TOKENIZER_INTERNAL_BYTE_LEVEL_H_

#include <optional>
#include <string>
#include <string_view>

namespace qllm::tokenizer::internal {

// Maps every byte to its printable stand-in: bytes in '!'..'~', U+00A1..U+00AC and
// U+00AE..U+00FF map to themselves, the remaining 68 to U+0100.. in byte order.
// Returns the UTF-8 encoding of the stand-in for `byte`.
std::string ByteToUnicode(unsigned char byte);

// Inverse over a whole vocabulary string: "Ġthe" -> " the". Returns nullopt when a character
// is not one of the 256 stand-ins or `token` is not valid UTF-8.
std::optional<std::string> UnicodeToBytes(std::string_view token);

}  // namespace qllm::tokenizer::internal

#endif  // QLLM_TOKENIZER_INTERNAL_BYTE_LEVEL_H_
