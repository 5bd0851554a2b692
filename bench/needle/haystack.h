// Needle-in-a-haystack documents in the built-in model's task language: English-like filler
// sentences from the grammar and word lists of tools/train/corpus.py (ported, so the documents
// look like the training corpus) with a needle at a chosen depth.
//
// Tasks:
//   kPassKey  "The pass key is 48213. Remember it. 48213 is the pass key."
//             question "What is the pass key?", answer "48213"
//   kMagic    2-4 needles "The special magic number for falcon is 7305214."; the asked one at
//             the chosen depth, the others at random depths;
//             question "What is the special magic number for falcon?", answer "7305214"
//
// Deterministic: the same options give the same document on every machine (a SplitMix64
// generator and integer arithmetic only; no std:: distributions, whose output is
// implementation-defined).
#ifndef QLLM_BENCH_NEEDLE_HAYSTACK_H_
#define QLLM_BENCH_NEEDLE_HAYSTACK_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace qllm::needle {

enum class NeedleTask { kPassKey, kMagic };

// "passkey", "magic".
const char* NeedleTaskName(NeedleTask task);
// Accepts the names above; INVALID_ARGUMENT otherwise.
absl::StatusOr<NeedleTask> ParseNeedleTask(std::string_view name);

struct HaystackOptions {
  // Default: kPassKey.
  NeedleTask task = NeedleTask::kPassKey;
  // Length of the document (filler and needles) in tokens of the tokenizer; the result is
  // within one sentence (~15 tokens) above it. Must be >= 1. Default: 1024.
  int64_t context_tokens = 1024;
  // Where the (asked) needle goes, in [0, 1]: 0 before the first filler sentence, 1 after the
  // last. Default: 0.5.
  double depth = 0.5;
  // Seed of everything random (filler, key, distractor needles). Default: 0.
  uint64_t seed = 0;
};

struct Haystack {
  // The document. Every sentence is preceded by one space, as in the training corpus, so the
  // text begins with a space.
  std::string context;
  std::string question;
  // The expected answer: a digit string.
  std::string answer;
  // Tokens of `context` (sum of the per-sentence counts, which the split regex makes exact).
  int64_t context_tokens = 0;
  // Token offset of the asked needle's first token inside `context`.
  int64_t needle_token = 0;
};

// Generates a document. Errors: INVALID_ARGUMENT for context_tokens < 1 or a depth outside
// [0, 1]; the tokenizer's errors.
absl::StatusOr<Haystack> MakeHaystack(const tokenizer::Tokenizer& tokenizer,
                                      const HaystackOptions& options);

// A 64-bit hash of its arguments, for deriving per-case seeds (SplitMix64 finalizer).
uint64_t MixSeed(uint64_t a, uint64_t b);

}  // namespace qllm::needle

#endif  // QLLM_BENCH_NEEDLE_HAYSTACK_H_
