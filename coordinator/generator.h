// The generation loop: prefill a prompt in chunks, then sample tokens one at a time until a
// stop token, the token budget, or the caller's callback says stop.
#ifndef QLLM_COORDINATOR_GENERATOR_H_
#define QLLM_COORDINATOR_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/local_pipeline.h"
#include "model/sampler.h"

namespace qllm::coordinator {

struct GenerateOptions {
  // Upper bound on generated tokens, >= 1. Default: 64.
  int32_t max_new_tokens = 64;
  // Tokens per forward call during prefill (bounds activation memory). Default: 512.
  int64_t chunk_size = 512;
  model::SamplingOptions sampling;
  // Generation stops after emitting any of these (the stop token is included in the output).
  // Default: none; callers usually pass the model's eos ids.
  std::vector<int32_t> stop_tokens;
  // Attention mode, Q-LLM parameters, question span and block storage. Default: full.
  worker::SessionOptions session;

  absl::Status Validate(int32_t vocab_size) const;
};

enum class StopReason { kStopToken, kMaxTokens, kCallback };

struct GenerateResult {
  std::vector<int32_t> tokens;
  StopReason stop_reason = StopReason::kMaxTokens;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  // Retrieval evidence: the blocks each layer selected in each execution chunk (when
  // session.record_selections is set).
  std::vector<worker::ChunkSelection> selections;
};

// Called with each generated token; returning false stops generation.
using TokenCallback = std::function<bool(int32_t token)>;

// Errors: INVALID_ARGUMENT (empty prompt, bad options, token ids outside the vocabulary),
// and the errors of the pipeline.
absl::StatusOr<GenerateResult> Generate(const LocalPipeline& pipeline,
                                        std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const TokenCallback& on_token = nullptr);

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_GENERATOR_H_
