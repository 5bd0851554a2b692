#include "coordinator/generator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/stopwatch.h"

namespace qllm::coordinator {

absl::Status GenerateOptions::Validate(int32_t vocab_size) const {
  if (max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", max_new_tokens));
  }
  if (chunk_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("chunk_size must be >= 1, got ", chunk_size));
  }
  for (int32_t t : stop_tokens) {
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token ", t, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return sampling.Validate(vocab_size);
}

absl::StatusOr<GenerateResult> Generate(const LocalPipeline& pipeline,
                                        std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const TokenCallback& on_token) {
  const int32_t vocab = pipeline.config().vocab_size;
  RETURN_IF_ERROR(options.Validate(vocab));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  ASSIGN_OR_RETURN(auto session, pipeline.NewSession(options.session));
  std::vector<float> logits;
  Stopwatch watch;
  RETURN_IF_ERROR(pipeline.Prefill(session.get(), prompt, options.chunk_size,
                                   /*all_logits=*/false, &logits));
  result.prefill_seconds = watch.Seconds();
  watch.Reset();
  model::Sampler sampler(options.sampling);
  while (true) {
    const int32_t token = sampler.Sample(logits.data(), vocab);
    result.tokens.push_back(token);
    if (on_token && !on_token(token)) {
      result.stop_reason = StopReason::kCallback;
      break;
    }
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) !=
        options.stop_tokens.end()) {
      result.stop_reason = StopReason::kStopToken;
      break;
    }
    if (static_cast<int32_t>(result.tokens.size()) >= options.max_new_tokens) {
      result.stop_reason = StopReason::kMaxTokens;
      break;
    }
    const int32_t input[1] = {token};
    RETURN_IF_ERROR(pipeline.RunChunk(session.get(), input, /*all_logits=*/false, &logits));
  }
  result.decode_seconds = watch.Seconds();
  result.selections = session->Selections();
  return result;
}

}  // namespace qllm::coordinator
