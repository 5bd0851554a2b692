// Token embedding lookup: out[t, :] = table[tokens[t], :].
#ifndef QLLM_CUDA_EMBEDDING_H_
#define QLLM_CUDA_EMBEDDING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

struct EmbeddingParams {
  const int32_t* tokens = nullptr;  // [n], required
  const float* table = nullptr;     // [vocab, dim], required
  float* out = nullptr;             // [n, dim], required
  int64_t n = 0;
  int64_t vocab = 0;
  int64_t dim = 0;

  absl::Status Validate() const;
};

// CPU backend. INVALID_ARGUMENT when a token id is outside [0, vocab).
absl::Status EmbeddingRef(const EmbeddingParams& p);
// CUDA twin. Token ids must have been validated on the host; out-of-range ids write zeros.
absl::Status LaunchEmbedding(const EmbeddingParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_EMBEDDING_H_
