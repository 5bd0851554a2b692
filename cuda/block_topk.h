// Retrieval of the Q-LLM context memory (../shared/docs/qllm-algorithm.md, chunk step 2):
// score every memory block by its representative vector,
//   score_b = R_b . qbar + w * R_b . Q,
// where the question term is omitted while Q is unset (null) or w == 0, and select the
// min(topk, num_blocks) highest-scoring blocks, best first; equal scores go to the lower block
// id. The engine's current CPU path is LayerMemory::Retrieve (worker/context_memory.cc); this op
// is its device counterpart, with BlockTopKRef as the CPU twin.
#ifndef QLLM_CUDA_BLOCK_TOPK_H_
#define QLLM_CUDA_BLOCK_TOPK_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Pointers are host pointers for BlockTopKRef and device pointers for LaunchBlockTopK.
struct BlockTopKParams {
  const float* reprs = nullptr;     // R [num_blocks, q_dim], rows dense; required if num_blocks > 0
  const float* qbar = nullptr;      // [q_dim]: the chunk's mean (rotated) query, required
  const float* question = nullptr;  // Q [q_dim], optional (null: no question term)
  float question_weight = 0.0f;     // w; 0 omits the question term (infllm)
  int64_t num_blocks = 0;           // B >= 0
  int64_t q_dim = 0;                // heads * head_dim, > 0
  int64_t topk = 0;                 // >= 0; min(topk, num_blocks) blocks are selected
  int32_t* ids = nullptr;   // [selected()] out: block ids, best first; required if selected() > 0
  float* scores = nullptr;  // [selected()] out: their scores; required if selected() > 0

  // Number of blocks selected: min(topk, num_blocks).
  int64_t selected() const { return topk < num_blocks ? topk : num_blocks; }

  // INVALID_ARGUMENT for negative sizes, q_dim <= 0, num_blocks > INT32_MAX, or a missing
  // required pointer.
  absl::Status Validate() const;
};

// CPU twin and reference: dot products accumulated in double, rounded to float, then a
// partial sort with the tie rule above (worker/context_memory.cc's TopIndices). NaN scores
// have no defined place.
absl::Status BlockTopKRef(const BlockTopKParams& p);

// Device workspace for LaunchBlockTopK with `num_blocks` candidates (scores, ids and the CUB
// radix-sort scratch). Queries the current device's architecture: UNAVAILABLE without a
// usable device; INVALID_ARGUMENT for a negative or oversized count.
absl::StatusOr<size_t> BlockTopKWorkspaceBytes(int64_t num_blocks);

// CUDA twin: enqueues the scoring kernel, a stable descending radix sort of (score, id) (the
// stable sort puts equal scores in ascending id order; -0 and +0 are equal) and the copies of
// the first selected() entries into p.ids / p.scores (device memory). Does not synchronize
// and allocates nothing: `d_workspace` (owned by the caller, at least
// BlockTopKWorkspaceBytes(p.num_blocks) bytes, 256-byte aligned as cudaMalloc returns) is
// reused per call, so concurrent launches need distinct workspaces.
// Scores are fp32 dot products in a different summation order than the reference; blocks
// whose scores differ by less than the rounding may therefore be ordered differently.
// Errors: INVALID_ARGUMENT (Validate, or a workspace that is too small); UNAVAILABLE on a
// sticky device error (see cuda/device.h); INTERNAL otherwise.
absl::Status LaunchBlockTopK(const BlockTopKParams& p, void* d_workspace, size_t workspace_bytes,
                             Stream stream);

// LaunchBlockTopK, then enqueues copies of the selected ids and scores to the host arrays
// h_ids / h_scores ([selected()] each; pinned memory keeps the copies asynchronous). The host
// arrays hold the result once `stream` has passed the copies (synchronize the stream or an
// event recorded after this call). p.ids / p.scores are device staging arrays as above.
absl::Status LaunchBlockTopKToHost(const BlockTopKParams& p, void* d_workspace,
                                   size_t workspace_bytes, int32_t* h_ids, float* h_scores,
                                   Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_BLOCK_TOPK_H_
