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
  // [2 * n * heads] out, optional (an input of the *LocalScores ops): the softmax statistics of
  // each (query i, head h) row over the keys of this call, the max at [i * heads + h] and the
  // sum of exp(score - max) at [n * heads + i * heads + h]; -inf and 0 for a row that sees no
  // key. See "Split attention" below.
  float* row_stats = nullptr;

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
  // Validate() for the *LocalScores ops: row_stats and local_scores are required too when
  // there are queries and local keys.
  absl::Status ValidateLocalScores() const;
};

// CPU twin and the CPU backend: heads in parallel (OpenMP), scores and outputs through sgemm,
// the joint softmax of each row in fp32 (SoftmaxRow), and local scores summed over the
// queries in order, then added; the same arithmetic as LayerMemory::Attend.
// Errors: INVALID_ARGUMENT from Validate.
absl::Status MemoryAttentionRef(const MemoryAttentionParams& p);

// Largest head_dim LaunchMemoryAttention accepts.
inline constexpr int64_t kMemoryAttentionMaxHeadDim = 256;

// Device workspace of LaunchMemoryAttention: each (query, head) row's softmax max and sum,
// 2 * n * heads floats. Not needed (may be null) when p.row_stats is set: they go there.
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

// Split attention. The tiered context memory learns which blocks a chunk attends only once the
// selection reaches the host and the misses are loaded; meanwhile the device can already attend
// the keys it has. So the keys of one chunk are split into two disjoint parts, A (the local
// window, the sinks, the pending tokens) and B (the selected blocks), each attended by its own
// MemoryAttention call with local_scores null and row_stats set; MergeAttention then combines
// the two into the joint softmax's output and statistics, and *LocalScores adds step 4's local
// scores from the merged statistics. Up to fp32 rounding, the result is that of one call over
// all the keys.

// out = (out * l * e^(m - M) + out_b * l_b * e^(m_b - M)) / L and stats = (M, L), per (query,
// head) row, with (m, l) and (m_b, l_b) the parts' statistics (layout of row_stats),
// M = max(m, m_b) and L = l e^(m - M) + l_b e^(m_b - M); a part whose row saw no key weighs
// nothing, and a row that neither saw gets out = 0 (and stats -inf, 0).
struct MergeAttentionParams {
  float* out = nullptr;            // [n, heads * head_dim] in: part A's output; out: merged
  float* stats = nullptr;          // [2 * n * heads] in: part A's row_stats; out: merged
  const float* out_b = nullptr;    // [n, heads * head_dim]: part B's output
  const float* stats_b = nullptr;  // [2 * n * heads]: part B's row_stats
  int64_t n = 0;                   // >= 0
  int64_t heads = 0;               // > 0
  int64_t head_dim = 0;            // > 0

  // INVALID_ARGUMENT for a bad size or a missing pointer when n > 0.
  absl::Status Validate() const;
};

// CPU twin (host pointers). Errors: INVALID_ARGUMENT from Validate.
absl::Status MergeAttentionRef(const MergeAttentionParams& p);
// CUDA twin (device pointers): one kernel, no synchronization. Errors as the other launches.
absl::Status LaunchMergeAttention(const MergeAttentionParams& p, Stream stream);

// Adds to p.local_scores (required when n > 0 and num_local > 0) the local scores of step 4:
// for every local key j and head h, the sum over the queries that see j, in query order, of
// exp(score - max) / sum, with p.row_stats (required likewise) holding the JOINT softmax's
// statistics (those MergeAttention wrote). Reads q_local, local_k and the window parameters;
// ignores the global keys, q_global and out. CPU twin, then the scalar CUDA twin (the kernel
// LaunchMemoryAttention runs after its forward; the SGEMM path has its own,
// MemoryAttentionGemm::LaunchLocalScores).
absl::Status MemoryAttentionLocalScoresRef(const MemoryAttentionParams& p);
absl::Status LaunchMemoryAttentionLocalScores(const MemoryAttentionParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_MEMORY_ATTENTION_H_
