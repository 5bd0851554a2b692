// The two-stage attention of the Q-LLM context memory (../shared/docs/qllm-algorithm.md, chunk
// steps 3 and 4) for one layer and one execution chunk of n queries at positions
// pos_i = start + i, i in [0, n). Each query attends, with ONE softmax, over the union of
//   - local keys j in [0, num_local), at positions pos_j = local_first + j, keys already rotated
//     at their own positions: visible to query i iff pos_i - n_local < pos_j <= pos_i, scored
//     q_local_i . k_j * scale;
//   - global keys g in [0, num_global), unrotated, each with a position p_g: visible to query i
//     iff p_g <= pos_i - n_local (i.e. pos_i - p_g >= n_local), scored
//     q_global_i . K_g * scale. Attention sinks and selected memory blocks take
//     kAlwaysVisible (or global_pos = null makes every global key visible); pending tokens
//     that are older than the window take their real position.
// out_i = sum over visible keys of p_ij v_j, p the joint softmax. GQA: query head h reads
// key/value head h / (heads / kv_heads). A query with no visible key gets out_i = 0.
// Local scores (step 4): local_scores[j, h] += sum_i p_ij[h] for every local key j; the mass
// a query puts on global keys is not recorded.
//
// This is the contract of the engine's CPU path LayerMemory::Attend
// (worker/context_memory.cc), which keeps its pending tokens as the local window (rotated
// keys) and, when far_pending_global is set, also as global keys (unrotated, real positions).
// MemoryAttentionRef is the CPU twin; LaunchMemoryAttention the device op.
#ifndef QLLM_CUDA_MEMORY_ATTENTION_H_
#define QLLM_CUDA_MEMORY_ATTENTION_H_

#include <cstddef>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Position of a global key that every query sees (attention sinks, selected blocks).
inline constexpr int64_t kAlwaysVisible = std::numeric_limits<int64_t>::min();

// Pointers are host pointers for MemoryAttentionRef and device pointers for
// LaunchMemoryAttention. Rows are dense: q_dim = heads * head_dim values per query row,
// kv_dim = kv_heads * head_dim values per key/value row.
struct MemoryAttentionParams {
  const float* q_local = nullptr;   // [n, q_dim]: queries rotated at pos_i; required if n > 0
  const float* q_global = nullptr;  // [n, q_dim]: queries rotated at n_local - 1; required if n > 0
  const float* local_k = nullptr;   // [num_local, kv_dim]: rotated at their own positions;
                                    // required if num_local > 0
  const float* local_v = nullptr;   // [num_local, kv_dim]; required if num_local > 0
  const float* global_k = nullptr;  // [num_global, kv_dim]: unrotated; required if num_global > 0
  const float* global_v = nullptr;  // [num_global, kv_dim]; required if num_global > 0
  // [num_global] positions of the global keys, optional: null means every global key is
  // visible to every query. kAlwaysVisible marks one key so.
  const int64_t* global_pos = nullptr;
  float* out = nullptr;  // [n, q_dim] out; required if n > 0
  // [num_local, heads] in/out, optional: the mass of this chunk is ADDED to it.
  float* local_scores = nullptr;

  int64_t n = 0;            // Queries in the chunk, >= 0.
  int64_t start = 0;        // Position of query 0, >= 0.
  int64_t num_local = 0;    // L >= 0.
  int64_t local_first = 0;  // Position of local key 0, >= 0.
  int64_t num_global = 0;   // Ng >= 0.
  int64_t n_local = 0;      // Local window length in tokens, > 0.
  int64_t heads = 0;        // H > 0.
  int64_t kv_heads = 0;     // Hkv > 0, divides H.
  int64_t head_dim = 0;     // D > 0 (the device op takes D <= kMemoryAttentionMaxHeadDim).
  float scale = 1.0f;       // Usually 1 / sqrt(head_dim).

  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }

  // INVALID_ARGUMENT for a negative size or position, n_local/heads/kv_heads/head_dim <= 0,
  // heads not a multiple of kv_heads, or a missing required pointer.
  absl::Status Validate() const;
};

// CPU twin and the CPU backend: heads in parallel (OpenMP), scores and outputs through sgemm,
// the joint softmax of each row in fp32 (SoftmaxRow), and local scores summed over the
// queries in order, then added; the same arithmetic as LayerMemory::Attend.
// Errors: INVALID_ARGUMENT from Validate.
absl::Status MemoryAttentionRef(const MemoryAttentionParams& p);

// Largest head_dim LaunchMemoryAttention accepts.
inline constexpr int64_t kMemoryAttentionMaxHeadDim = 256;

// Device workspace of LaunchMemoryAttention: each (query, head) row's softmax max and sum,
// 2 * n * heads floats.
[[nodiscard]] inline size_t MemoryAttentionWorkspaceBytes(const MemoryAttentionParams& p) {
  return p.n > 0 && p.heads > 0 ? static_cast<size_t>(2 * p.n * p.heads) * sizeof(float) : 0;
}

// CUDA twin: enqueues the attention kernel (one CTA per (query, head); each warp runs an
// online softmax over a strided share of the visible keys in fp32, and the warps merge) and,
// when local_scores is set, a second kernel that recomputes each local key's probabilities
// from the saved row max and sum and adds their sum over queries (in query order, so the
// result is deterministic: no atomics). `d_workspace` (owned by the caller, at least
// MemoryAttentionWorkspaceBytes(p) bytes, float-aligned) receives the row statistics. Does not
// synchronize and allocates nothing; concurrent launches need distinct workspaces.
// Results differ from MemoryAttentionRef by fp32 rounding (another summation order, expf).
// Errors: INVALID_ARGUMENT (Validate, head_dim > kMemoryAttentionMaxHeadDim, or a missing or
// small workspace); UNAVAILABLE on a sticky device error (see cuda/device.h); INTERNAL
// otherwise.
absl::Status LaunchMemoryAttention(const MemoryAttentionParams& p, void* d_workspace,
                                   size_t workspace_bytes, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_MEMORY_ATTENTION_H_
