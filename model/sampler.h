// Token sampling from logits: greedy, or seeded temperature / top-k / top-p (nucleus).
#ifndef QLLM_MODEL_SAMPLER_H_
#define QLLM_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace qllm::model {

struct SamplingOptions {
  // 0 selects greedy decoding (argmax, ties to the lower id). Range [0, 100]. Default: 0.
  float temperature = 0.0f;
  // Keep only the k most likely tokens; 0 disables. Range [0, vocab]. Default: 0.
  int32_t top_k = 0;
  // Keep the smallest set of most likely tokens whose mass reaches top_p; range (0, 1],
  // 1 disables. Default: 1.
  float top_p = 1.0f;
  // Seed of the generator: equal seeds and logits give equal tokens. Default: 0.
  uint64_t seed = 0;

  // INVALID_ARGUMENT naming the first out-of-range field (NaN and infinities included).
  absl::Status Validate(int32_t vocab_size) const;
};

// Not thread-safe: one sampler per generation stream.
class Sampler {
 public:
  // REQUIRES: options.Validate(vocab) is OK for the vocabularies it will see.
  explicit Sampler(const SamplingOptions& options);

  // Returns the next token for `logits[0..vocab)`.
  int32_t Sample(const float* logits, int32_t vocab);

  // The draw Sample makes for a non-greedy token, in [0, 1): Sample(logits) on a sampler equals
  // the token cuda::SampleRef (cuda/sampling.h) picks with u01 = NextUniform() of a sampler with
  // the same seed and history. For token streams sampled on the device.
  double NextUniform();

 private:
  const SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

// Index of the largest logit, the lowest index among equals.
int32_t Argmax(const float* logits, int32_t vocab);

// The token a non-greedy Sampler picks for `logits` when its generator draws `u01`
// (NextUniform()): the logits divided by the temperature, sorted descending (ties to the lower
// id), cut to top_k, weighted by exp(logit - max), cut to the top_p nucleus, and the first token
// whose cumulative weight exceeds u01 * total. Sampler::Sample and the device sampler's CPU twin
// (cuda/sampling.h) both use it. `scratch` is reused storage.
// REQUIRES: options.Validate(vocab) is OK, options.temperature > 0, 0 <= u01 < 1.
int32_t SampleWithDraw(const float* logits, int32_t vocab, const SamplingOptions& options,
                       double u01, std::vector<std::pair<float, int32_t>>* scratch);

}  // namespace qllm::model

#endif  // QLLM_MODEL_SAMPLER_H_
