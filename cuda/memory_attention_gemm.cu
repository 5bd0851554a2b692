// cuda/memory_attention_gemm.h: scores and outputs by cuBLAS SGEMM, masking + softmax and the
// local-score sums by two kernels.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/cublas_check.h"
#include "cuda/cuda_check.h"
#include "cuda/memory_attention_gemm.h"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 256;

// Reduces `v` over the CTA with `op`; every thread returns the result. `red` holds kThreads / 32
// floats of shared memory.
template <typename Op>
__device__ float CtaReduce(float v, float* red, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `red` may still be read by a previous reduction.
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < kThreads / 32; ++w) v = op(v, red[w]);
  return v;
}

// One CTA per (query i, head h): row [global scores | local scores] of S becomes the joint
// softmax over the visible keys (others 0; a row without visible keys is all 0).
// `stats` (optional): the row statistics of memory_attention.h.
__global__ void MaskSoftmaxKernel(float* __restrict__ s, const int64_t* __restrict__ global_pos,
                                  float* __restrict__ stats, int64_t n, int64_t width, int64_t ng,
                                  int64_t start, int64_t local_first, int64_t n_local) {
  __shared__ float red[kThreads / 32];
  const int64_t i = blockIdx.x, h = blockIdx.y;
  float* row = s + (h * n + i) * width;
  const int64_t pos = start + i;
  auto visible = [&](int64_t j) {
    if (j < ng) return global_pos == nullptr || global_pos[j] <= pos - n_local;
    const int64_t pj = local_first + (j - ng);
    return pj > pos - n_local && pj <= pos;
  };
  const float neg_inf = -INFINITY;
  float m = neg_inf;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    if (visible(j)) m = fmaxf(m, row[j]);
  }
  m = CtaReduce(m, red, [](float a, float b) { return fmaxf(a, b); });
  const int64_t rows = n * gridDim.y, r = i * gridDim.y + h;
  if (m == neg_inf) {
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) row[j] = 0.0f;
    if (stats != nullptr && threadIdx.x == 0) {
      stats[r] = neg_inf;
      stats[rows + r] = 0.0f;
    }
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    const float e = visible(j) ? expf(row[j] - m) : 0.0f;
    row[j] = e;
    sum += e;
  }
  sum = CtaReduce(sum, red, [](float a, float b) { return a + b; });
  if (stats != nullptr && threadIdx.x == 0) {
    stats[r] = m;
    stats[rows + r] = sum;
  }
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) row[j] *= inv;
}

// Thread (h, j): local_scores[j, h] += sum over queries i, in order, of P[h, i, ng + j].
__global__ void LocalScoresKernel(const float* __restrict__ s, float* __restrict__ scores,
                                  int64_t n, int64_t width, int64_t ng, int64_t num_local,
                                  int64_t heads) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= num_local * heads) return;
  const int64_t h = t / num_local, j = t % num_local;
  const float* col = s + h * n * width + ng + j;
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += col[i * width];
  scores[j * heads + h] += sum;
}

// Thread (h, j): local_scores[j, h] += sum over the queries i that see local key j, in order,
// of exp(S[h, i, j] - max_i) / sum_i, S the local keys' scores only ([heads, n, num_local]) and
// (max, sum) the joint row statistics.
__global__ void LocalScoresFromStatsKernel(const float* __restrict__ s,
                                           const float* __restrict__ stats,
                                           float* __restrict__ scores, int64_t n, int64_t num_local,
                                           int64_t heads, int64_t start, int64_t local_first,
                                           int64_t n_local) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= num_local * heads) return;
  const int64_t h = t / num_local, j = t % num_local;
  // Query i sees j iff pos_j <= start + i < pos_j + n_local.
  const int64_t pos_j = local_first + j;
  const int64_t first = max(int64_t{0}, pos_j - start);
  const int64_t last = min(n - 1, pos_j - start + n_local - 1);
  const float* col = s + h * n * num_local + j;
  const int64_t rows = n * heads;
  float sum = 0.0f;
  for (int64_t i = first; i <= last; ++i) {
    const int64_t r = i * heads + h;
    sum += expf(col[i * num_local] - stats[r]) / stats[rows + r];
  }
  scores[j * heads + h] += sum;
}

// Writes the statistics of rows that see no key: max -inf, sum 0.
__global__ void EmptyStatsKernel(float* __restrict__ stats, int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  stats[r] = -INFINITY;
  stats[rows + r] = 0.0f;
}

}  // namespace

struct MemoryAttentionGemm::Impl {
  cublasHandle_t handle = nullptr;
  float* workspace = nullptr;
  size_t workspace_bytes = 0;
  ~Impl() {
    if (workspace != nullptr) cudaFree(workspace);
    if (handle != nullptr) cublasDestroy(handle);
  }
};

MemoryAttentionGemm::MemoryAttentionGemm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MemoryAttentionGemm::~MemoryAttentionGemm() = default;

absl::StatusOr<std::unique_ptr<MemoryAttentionGemm>> MemoryAttentionGemm::Create() {
  auto impl = std::make_unique<Impl>();
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&impl->handle));
  // FP32 arithmetic (no TF32): the scores feed a softmax and the block selection.
  CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(impl->handle, CUBLAS_DEFAULT_MATH));
  return std::unique_ptr<MemoryAttentionGemm>(new MemoryAttentionGemm(std::move(impl)));
}

absl::Status MemoryAttentionGemm::Launch(const MemoryAttentionParams& p, Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  if (p.n == 0) return absl::OkStatus();
  const int64_t ng = p.num_global, nl = p.num_local, width = ng + nl;
  const int64_t qd = p.q_dim(), kvd = p.kv_dim(), d = p.head_dim;
  const int64_t group = p.heads / p.kv_heads;
  if (width == 0) {
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p.out, 0, p.n * qd * sizeof(float), stream));
    if (p.row_stats != nullptr) {
      const int64_t rows = p.n * p.heads;
      EmptyStatsKernel<<<static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads, 0,
                         stream>>>(p.row_stats, rows);
      CUDA_RETURN_IF_LAUNCH_ERROR();
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(Scores(p, /*global=*/true, stream));
  cublasHandle_t h = impl_->handle;
  const int n = static_cast<int>(p.n), w = static_cast<int>(width);
  const long long row_stride = static_cast<long long>(p.n) * width;  // One head's scores.
  const float zero = 0.0f, one = 1.0f;
  MaskSoftmaxKernel<<<dim3(static_cast<unsigned>(p.n), static_cast<unsigned>(p.heads)), kThreads, 0,
                      stream>>>(impl_->workspace, p.global_pos, p.row_stats, p.n, width, ng,
                                p.start, p.local_first, p.n_local);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  if (p.local_scores != nullptr && nl > 0) {
    const int64_t threads = nl * p.heads;
    LocalScoresKernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0,
                        stream>>>(impl_->workspace, p.local_scores, p.n, width, ng, nl, p.heads);
    CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  // Outputs, column-major view: out_h^T [D, n] = V^T [D, keys] . P_h^T [keys, n], global keys
  // then local keys (accumulated).
  for (int64_t g = 0; g < p.kv_heads; ++g) {
    const int64_t h0 = g * group;
    const float* s0 = impl_->workspace + h0 * row_stride;
    if (ng > 0) {
      CUBLAS_RETURN_IF_ERROR(cublasSgemmStridedBatched(
          h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), n, static_cast<int>(ng), &one,
          p.global_v + g * d, static_cast<int>(kvd), 0, s0, w, row_stride, &zero, p.out + h0 * d,
          static_cast<int>(qd), d, static_cast<int>(group)));
    }
    if (nl > 0) {
      CUBLAS_RETURN_IF_ERROR(cublasSgemmStridedBatched(
          h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), n, static_cast<int>(nl), &one,
          p.local_v + g * d, static_cast<int>(kvd), 0, s0 + ng, w, row_stride,
          ng > 0 ? &one : &zero, p.out + h0 * d, static_cast<int>(qd), d, static_cast<int>(group)));
    }
  }
  return absl::OkStatus();
}

absl::Status MemoryAttentionGemm::Scores(const MemoryAttentionParams& p, bool global,
                                         Stream stream) {
  const int64_t ng = global ? p.num_global : 0, nl = p.num_local, width = ng + nl;
  const int64_t qd = p.q_dim(), kvd = p.kv_dim(), d = p.head_dim;
  const int64_t group = p.heads / p.kv_heads;
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (width > kIntMax || p.n * width > kIntMax || qd > kIntMax) {
    return absl::InvalidArgumentError(absl::StrCat("memory attention (gemm): chunk of ", p.n,
                                                   " queries over ", width, " keys is too large"));
  }
  const size_t bytes = static_cast<size_t>(p.heads * p.n * width) * sizeof(float);
  if (bytes > impl_->workspace_bytes) {
    const size_t old_bytes = impl_->workspace_bytes;
    if (impl_->workspace != nullptr) {
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
      cudaFree(impl_->workspace);
      impl_->workspace = nullptr;
      impl_->workspace_bytes = 0;
    }
    // A quarter more than needed, so that a prefill whose key count grows piece by piece
    // (full attention) reallocates a few dozen times, not once per piece; exactly `bytes` when
    // that much is not free.
    void* ws = nullptr;
    size_t want = std::max(bytes, old_bytes + old_bytes / 4);
    cudaError_t e = cudaMalloc(&ws, want);
    if (e == cudaErrorMemoryAllocation && want > bytes) {
      cudaGetLastError();  // Not sticky: clear it and try the exact size.
      want = bytes;
      e = cudaMalloc(&ws, want);
    }
    CUDA_RETURN_IF_ERROR(e);
    impl_->workspace = static_cast<float*>(ws);
    impl_->workspace_bytes = want;
  }
  cublasHandle_t h = impl_->handle;
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, stream));
  const int n = static_cast<int>(p.n), w = static_cast<int>(width);
  const long long row_stride = static_cast<long long>(p.n) * width;  // One head's scores.
  const float zero = 0.0f, scale = p.scale;
  // Column-major view: S_h^T [width, n] = K [width, D] . q_h^T, per KV head over its group of
  // query heads (K shared: stride 0).
  for (int64_t g = 0; g < p.kv_heads; ++g) {
    const int64_t h0 = g * group;
    float* s0 = impl_->workspace + h0 * row_stride;
    if (ng > 0) {
      CUBLAS_RETURN_IF_ERROR(cublasSgemmStridedBatched(
          h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(ng), n, static_cast<int>(d), &scale,
          p.global_k + g * d, static_cast<int>(kvd), 0, p.q_global + h0 * d, static_cast<int>(qd),
          d, &zero, s0, w, row_stride, static_cast<int>(group)));
    }
    if (nl > 0) {
      CUBLAS_RETURN_IF_ERROR(cublasSgemmStridedBatched(
          h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(nl), n, static_cast<int>(d), &scale,
          p.local_k + g * d, static_cast<int>(kvd), 0, p.q_local + h0 * d, static_cast<int>(qd), d,
          &zero, s0 + ng, w, row_stride, static_cast<int>(group)));
    }
  }
  return absl::OkStatus();
}

absl::Status MemoryAttentionGemm::LaunchLocalScores(const MemoryAttentionParams& p, Stream stream) {
  RETURN_IF_ERROR(p.ValidateLocalScores());
  if (p.n == 0 || p.num_local == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Scores(p, /*global=*/false, stream));
  const int64_t threads = p.num_local * p.heads;
  LocalScoresFromStatsKernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads,
                               0, stream>>>(impl_->workspace, p.row_stats, p.local_scores, p.n,
                                            p.num_local, p.heads, p.start, p.local_first,
                                            p.n_local);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
