// Causal grouped-query attention of a chunk of queries over a KV cache (the "full" mode):
// out_i = softmax_j(q_i . k_j * scale) v_j over keys j <= q_offset + i. Query head h reads
// key/value head h / (heads / kv_heads). Queries and keys are already rotated (RoPE).
#ifndef QLLM_CUDA_ATTENTION_H_
#define QLLM_CUDA_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"

namespace qllm::cuda {

struct CausalAttentionParams {
  const float* q = nullptr;  // [n_q, q_stride]: heads * head_dim values per row, required
  const float* k = nullptr;  // [n_kv, kv_stride]: kv_heads * head_dim values per row, required
  const float* v = nullptr;  // [n_kv, kv_stride], required
  float* out = nullptr;      // [n_q, out_stride]: heads * head_dim values per row, required
  int64_t n_q = 0;
  int64_t n_kv = 0;      // Keys available; q_offset + n_q <= n_kv.
  int64_t q_offset = 0;  // Key index of the first query (its own key).
  int64_t heads = 0;
  int64_t kv_heads = 0;  // Divides heads.
  int64_t head_dim = 0;
  int64_t q_stride = 0;
  int64_t kv_stride = 0;
  int64_t out_stride = 0;
  float scale = 1.0f;  // Usually 1 / sqrt(head_dim).

  absl::Status Validate() const;
};

// CPU backend: heads in parallel (OpenMP), scores and outputs through sgemm, softmax in fp32.
absl::Status CausalAttentionRef(const CausalAttentionParams& p);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_ATTENTION_H_
