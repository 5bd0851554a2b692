// CUDA twins of cuda/memory_ops.h.
#include <cfloat>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_check.h"
#include "cuda/memory_ops.h"
#include "cuda/sort_workspace.cuh"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void FillPositionsKernel(int64_t* __restrict__ out, int64_t n, int64_t first,
                                    int64_t step) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = first + i * step;
}

// One thread per column; the rows are summed in order, so the result equals MeanRowsRef's.
__global__ void MeanRowsKernel(const float* __restrict__ x, float* __restrict__ out, int64_t rows,
                               int64_t dim, int64_t stride) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  float sum = 0.0f;
  for (int64_t r = 0; r < rows; ++r) sum += x[r * stride + d];
  out[d] = sum / static_cast<float>(rows);
}

// One CTA per head: the head's scores are staged in shared memory, then k rounds of a
// CTA-wide arg-max pick the rows in rank order, and each thread sums its columns of the picked
// rows in that order (the order TopMeanRef sums in).
__global__ void TopMeanKernel(TopMeanParams p, int k) {
  __shared__ float s_score[kTopMeanMaxRows];
  __shared__ unsigned char s_taken[kTopMeanMaxRows];
  __shared__ int s_pick[kTopMeanMaxRows];
  __shared__ float r_val[kThreads];
  __shared__ int r_idx[kThreads];
  const int h = blockIdx.x;
  const int rows = static_cast<int>(p.rows);
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    s_score[r] = p.scores[static_cast<int64_t>(r) * p.score_stride + h];
    s_taken[r] = 0;
  }
  __syncthreads();
  for (int round = 0; round < k; ++round) {
    float best = 0.0f;
    int best_idx = -1;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      if (!s_taken[r] && internal::RanksBefore(s_score[r], r, best, best_idx)) {
        best = s_score[r];
        best_idx = r;
      }
    }
    const int winner = internal::CtaArgmax(best, best_idx, r_val, r_idx);
    if (threadIdx.x == 0) {
      s_pick[round] = winner;
      s_taken[winner] = 1;
    }
    __syncthreads();
  }
  const int64_t col = (h / p.group) * p.head_dim;
  for (int64_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += p.vectors[s_pick[i] * p.vector_stride + col + d];
    p.out[h * p.head_dim + d] = sum / static_cast<float>(k);
  }
}

// Grid (count, pieces): CTA (i, j) copies a strided share of block ids[i].
__global__ void GatherBlocksKernel(GatherBlocksParams p) {
  const int64_t i = blockIdx.x;
  const int64_t b = p.ids[i];
  const bool valid = b >= 0 && b < p.num_blocks;
  float* k = p.dst_k + i * p.block_elems;
  float* v = p.dst_v + i * p.block_elems;
  const float* sk = p.pool_k + (valid ? b : 0) * p.block_elems;
  const float* sv = p.pool_v + (valid ? b : 0) * p.block_elems;
  for (int64_t e = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; e < p.block_elems;
       e += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    k[e] = valid ? sk[e] : 0.0f;
    v[e] = valid ? sv[e] : 0.0f;
  }
}

}  // namespace

absl::Status LaunchCopyRows(const CopyRowsParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.rows == 0 || p.cols == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(p.dst, p.dst_stride * sizeof(float), p.src,
                                         p.src_stride * sizeof(float), p.cols * sizeof(float),
                                         p.rows, cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

absl::Status LaunchFillPositions(const FillPositionsParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n == 0) return absl::OkStatus();
  FillPositionsKernel<<<BlocksFor(p.n), kThreads, 0, stream>>>(p.out, p.n, p.first, p.step);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchMeanRows(const MeanRowsParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  MeanRowsKernel<<<BlocksFor(p.dim), kThreads, 0, stream>>>(p.x, p.out, p.rows, p.dim, p.stride);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchTopMean(const TopMeanParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.rows > kTopMeanMaxRows || p.heads > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top mean: ", p.rows, " rows (the device op takes at most ", kTopMeanMaxRows, ")"));
  }
  const int k = static_cast<int>(p.k < p.rows ? p.k : p.rows);
  TopMeanKernel<<<static_cast<unsigned>(p.heads), kThreads, 0, stream>>>(p, k);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchGatherBlocks(const GatherBlocksParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.count == 0) return absl::OkStatus();
  if (p.count > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("gather blocks: count ", p.count, " too large"));
  }
  // Enough CTAs per block that a 128-token block of 1024 floats per row is copied by ~32 CTAs.
  const int64_t pieces = (p.block_elems + 4 * kThreads - 1) / (4 * kThreads);
  const dim3 grid(static_cast<unsigned>(p.count),
                  static_cast<unsigned>(pieces < 65535 ? pieces : 65535));
  GatherBlocksKernel<<<grid, kThreads, 0, stream>>>(p);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
