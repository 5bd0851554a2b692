// Deterministic multilingual test corpus for tokenizer conformance tests and benchmarks.
// Not part of the serving path.
#ifndef QLLM_TOKENIZER_TESTING_CORPUS_H_
#define QLLM_TOKENIZER_TESTING_CORPUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qllm::tokenizer::testing {

// Returns documents (valid UTF-8, 100 B to 12 KB each) totalling at least `min_bytes`, a pure
// function of (min_bytes, special_tokens, seed). They mix English prose with contractions, code,
// numbers and long digit runs, whitespace runs and Unicode spaces, CR/LF runs, CJK, Hangul, emoji
// (ZWJ, skin tones, flags, keycaps), combining-mark stacks, Indic/Arabic/Hebrew/Thai, private-use
// and noncharacter code points, control characters, and every string of `special_tokens`
// (whole, adjacent, and truncated). U+0085 and U+FEFF are left out: JavaScript's \s disagrees
// with Oniguruma's (the Hugging Face engine) on them, so the JS reference cannot judge them.
std::vector<std::string> MakeCorpus(size_t min_bytes,
                                    const std::vector<std::string>& special_tokens,
                                    uint64_t seed = 20240601);

// Corpus file: u32 document count, then per document u32 byte length and the bytes (little
// endian). Returns kInternal when the file cannot be written.
absl::Status WriteCorpusFile(const std::string& path, const std::vector<std::string>& docs);

// Ids file written by the reference driver: u32 document count, then per document u32 token
// count and that many i32 ids. Returns kNotFound / kDataLoss for a missing / truncated file.
absl::StatusOr<std::vector<std::vector<int32_t>>> ReadIdsFile(const std::string& path);

}  // namespace qllm::tokenizer::testing

#endif  // QLLM_TOKENIZER_TESTING_CORPUS_H_
