#include "cuda/cuda_check.h"
#include "cuda/rope.h"

namespace qllm::cuda {
namespace {

// One thread per (token, head, pair). The angle is formed in double precision so that large
// positions (a million tokens) rotate as accurately as on the CPU.
__global__ void RopeKernel(float* __restrict__ x, const int64_t* __restrict__ positions,
                           const double* __restrict__ inv_freq, int64_t tokens, int64_t heads,
                           int64_t head_dim, int64_t row_stride) {
  const int64_t half = head_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * heads * half) return;
  const int64_t i = idx % half;
  const int64_t h = (idx / half) % heads;
  const int64_t t = idx / (half * heads);
  double s, c;
  sincos(static_cast<double>(positions[t]) * inv_freq[i], &s, &c);
  float* v = x + t * row_stride + h * head_dim;
  const float a = v[i], b = v[i + half];
  v[i] = a * static_cast<float>(c) - b * static_cast<float>(s);
  v[i + half] = b * static_cast<float>(c) + a * static_cast<float>(s);
}

}  // namespace

absl::Status LaunchRope(const RopeParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  const int64_t total = p.tokens * p.heads * (p.head_dim / 2);
  if (total == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  RopeKernel<<<blocks, kThreads, 0, stream>>>(p.x, p.positions, p.inv_freq, p.tokens, p.heads,
                                              p.head_dim, p.row_stride);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
