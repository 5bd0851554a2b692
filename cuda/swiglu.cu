#include "cuda/cuda_check.h"
#include "cuda/swiglu.h"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void SwiGluKernel(const float* __restrict__ gate_up, float* __restrict__ out,
                             int64_t rows, int64_t dim) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * dim) return;
  const int64_t r = idx / dim, i = idx % dim;
  const float g = gate_up[r * 2 * dim + i];
  const float u = gate_up[r * 2 * dim + dim + i];
  out[idx] = g / (1.0f + expf(-g)) * u;
}

__global__ void AddKernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < n) y[idx] += x[idx];
}

unsigned BlocksFor(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

absl::Status LaunchSwiGlu(const SwiGluParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  SwiGluKernel<<<BlocksFor(p.rows * p.dim), kThreads, 0, stream>>>(p.gate_up, p.out, p.rows, p.dim);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchAdd(const AddParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n == 0) return absl::OkStatus();
  AddKernel<<<BlocksFor(p.n), kThreads, 0, stream>>>(p.x, p.y, p.n);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
