#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/block_topk.h"
#include "cuda/cuda_check.h"
#include "cuda/sort_workspace.cuh"

namespace qllm::cuda {
namespace {

constexpr int kWarpsPerCta = 8;
using internal::CarveSortWorkspace;
using internal::SortRegionsBytes;
using internal::SortScratchBytes;
using internal::SortWorkspace;

// One warp per block: both dot products in fp32 over coalesced loads, a butterfly reduction,
// and lane 0 writes the score (with -0 made +0) and the block id for the sort.
__global__ void BlockScoreKernel(const float* __restrict__ reprs, const float* __restrict__ qbar,
                                 const float* __restrict__ question, float w, int64_t num_blocks,
                                 int64_t q_dim, float* __restrict__ keys,
                                 int32_t* __restrict__ ids) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32;
  if (b >= num_blocks) return;
  const int lane = threadIdx.x % 32;
  const float* r = reprs + b * q_dim;
  float dot_qbar = 0.0f, dot_q = 0.0f;
  if (question != nullptr) {
    for (int64_t d = lane; d < q_dim; d += 32) {
      const float x = r[d];
      dot_qbar += x * qbar[d];
      dot_q += x * question[d];
    }
  } else {
    for (int64_t d = lane; d < q_dim; d += 32) dot_qbar += r[d] * qbar[d];
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    dot_qbar += __shfl_xor_sync(0xffffffffu, dot_qbar, offset);
    dot_q += __shfl_xor_sync(0xffffffffu, dot_q, offset);
  }
  if (lane == 0) {
    const float s = question != nullptr ? dot_qbar + w * dot_q : dot_qbar;
    keys[b] = s == 0.0f ? 0.0f : s;
    ids[b] = static_cast<int32_t>(b);
  }
}

}  // namespace

absl::StatusOr<size_t> BlockTopKWorkspaceBytes(int64_t num_blocks) {
  if (num_blocks < 0 || num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("block_topk: bad block count ", num_blocks));
  }
  if (num_blocks == 0) return 0;
  ASSIGN_OR_RETURN(const size_t sort_bytes, SortScratchBytes(num_blocks));
  return SortRegionsBytes(num_blocks) + sort_bytes;
}

absl::Status LaunchBlockTopK(const BlockTopKParams& p, void* d_workspace, size_t workspace_bytes,
                             Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  const int64_t k = p.selected();
  if (k == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const size_t sort_bytes, SortScratchBytes(p.num_blocks));
  const size_t needed = SortRegionsBytes(p.num_blocks) + sort_bytes;
  if (d_workspace == nullptr || workspace_bytes < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_topk: workspace of ", workspace_bytes, " bytes, ", needed, " needed"));
  }
  SortWorkspace ws = CarveSortWorkspace(d_workspace, p.num_blocks, sort_bytes);
  // The question term is dropped on the host side of the contract: null Q or w == 0.
  const float* question = p.question_weight != 0.0f ? p.question : nullptr;
  const int64_t ctas = (p.num_blocks + kWarpsPerCta - 1) / kWarpsPerCta;
  BlockScoreKernel<<<static_cast<unsigned>(ctas), kWarpsPerCta * 32, 0, stream>>>(
      p.reprs, p.qbar, question, p.question_weight, p.num_blocks, p.q_dim, ws.keys_in, ws.ids_in);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  // Stable: equal scores keep the ascending id order of ids_in.
  CUDA_RETURN_IF_ERROR(internal::SortPairsDescending(ws, p.num_blocks, stream));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p.ids, ws.ids_out, k * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p.scores, ws.keys_out, k * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

absl::Status LaunchBlockTopKToHost(const BlockTopKParams& p, void* d_workspace,
                                   size_t workspace_bytes, int32_t* h_ids, float* h_scores,
                                   Stream stream) {
  const int64_t k = p.selected();
  if (k > 0 && (h_ids == nullptr || h_scores == nullptr)) {
    return absl::InvalidArgumentError("block_topk: h_ids and h_scores are required");
  }
  RETURN_IF_ERROR(LaunchBlockTopK(p, d_workspace, workspace_bytes, stream));
  if (k == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(h_ids, p.ids, k * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(h_scores, p.scores, k * sizeof(float), cudaMemcpyDeviceToHost, stream));
  return absl::OkStatus();
}

}  // namespace qllm::cuda
