#include <cuda_bf16.h>

#include "cuda/cast.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void CastToBf16Kernel(const float* __restrict__ x, uint16_t* __restrict__ y, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < n) y[idx] = __bfloat16_as_ushort(__float2bfloat16_rn(x[idx]));
}

}  // namespace

absl::Status LaunchCastToBf16(const CastToBf16Params& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>((p.n + kThreads - 1) / kThreads);
  CastToBf16Kernel<<<blocks, kThreads, 0, stream>>>(p.x, p.y, p.n);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
