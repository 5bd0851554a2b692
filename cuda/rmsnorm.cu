#include "cuda/cuda_check.h"
#include "cuda/rmsnorm.h"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row: a block-wide sum of squares, then the scaled write.
__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ weight,
                              float* __restrict__ y, int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float* yr = y + row * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, offset);
  __shared__ float warp_sums[kThreads / 32];
  __shared__ float inv;
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    inv = rsqrtf(total / static_cast<float>(dim) + eps);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * weight[i];
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p.x, p.weight, p.y, p.dim,
                                                                        p.eps);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
