// Device op of the two-stage Q-LLM attention (cuda/memory_attention.h). Written for
// correctness: fp32 scalar dot products per warp, no tensor cores. A fast version would tile
// queries per CTA with K/V tiles staged in shared memory and mma for Q.K^T and P.V
// (FlashAttention-2), split the keys across CTAs for decode (n = 1: flash-decoding with a merge
// kernel), and fuse the local-score pass by writing per-query-tile partial sums that a second
// kernel reduces in a fixed order.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/cuda_check.h"
#include "cuda/memory_attention.h"

namespace qllm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxChunks = static_cast<int>(kMemoryAttentionMaxHeadDim / 32);

// The launch parameters with the derived sizes; trivially copyable, passed by value.
struct Args {
  const float* q_local;
  const float* q_global;
  const float* local_k;
  const float* local_v;
  const float* global_k;
  const float* global_v;
  const int64_t* global_pos;
  float* out;
  float* local_scores;
  float* row_max;  // [n, heads]: the softmax max of each row (-inf for an empty row).
  float* row_sum;  // [n, heads]: sum of exp(score - max) (0 for an empty row).
  int64_t n, start, num_local, local_first, num_global, n_local, q_dim, kv_dim;
  int heads, group, head_dim;
  float scale;
};

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// scale * q . k over head_dim values; every lane of the warp returns the same value. Both
// kernels score through this function, so the local-score pass sees the forward's scores.
__device__ __forceinline__ float Score(const float* q, const float* k, int head_dim, float scale,
                                       int lane) {
  float acc = 0.0f;
  for (int t = lane; t < head_dim; t += 32) acc += q[t] * k[t];
  return WarpSum(acc) * scale;
}

// One step of the online softmax: folds a key with score s and value row v into the warp's
// running max m, running sum l and accumulator acc (lane holds elements lane + 32 * c).
__device__ __forceinline__ void Fold(float s, const float* v, int head_dim, int lane, float* m,
                                     float* l, float (&acc)[kMaxChunks]) {
  const float m_new = fmaxf(*m, s);
  const float corr = expf(*m - m_new);  // 0 while *m is -inf.
  const float e = expf(s - m_new);
  *l = *l * corr + e;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int t = lane + 32 * c;
    if (t < head_dim) acc[c] = acc[c] * corr + e * v[t];
  }
  *m = m_new;
}

// Grid (n, heads), kThreads threads. Dynamic shared memory: q_local and q_global of the row,
// then each warp's accumulator, max and sum for the merge.
__global__ void MemoryAttentionKernel(Args a) {
  extern __shared__ float smem[];
  const int d = a.head_dim;
  float* ql = smem;
  float* qg = smem + d;
  float* warp_acc = smem + 2 * d;         // [kWarps, d]
  float* warp_m = warp_acc + kWarps * d;  // [kWarps]
  float* warp_l = warp_m + kWarps;        // [kWarps]
  const int64_t i = blockIdx.x;
  const int h = static_cast<int>(blockIdx.y);
  const int64_t g = h / a.group;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (int t = static_cast<int>(threadIdx.x); t < d; t += kThreads) {
    ql[t] = a.q_local[i * a.q_dim + h * d + t];
    qg[t] = a.q_global[i * a.q_dim + h * d + t];
  }
  __syncthreads();

  const int64_t pos = a.start + i;
  float m = -INFINITY, l = 0.0f;
  float acc[kMaxChunks];
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) acc[c] = 0.0f;
  // Global keys: visible iff p <= pos - n_local (kAlwaysVisible never overflows this way).
  for (int64_t k = warp; k < a.num_global; k += kWarps) {
    if (a.global_pos != nullptr && a.global_pos[k] > pos - a.n_local) continue;
    const int64_t off = k * a.kv_dim + g * d;
    Fold(Score(qg, a.global_k + off, d, a.scale, lane), a.global_v + off, d, lane, &m, &l, acc);
  }
  // Local keys: visible for pos - n_local < local_first + j <= pos.
  const int64_t lo = max(int64_t{0}, pos - a.n_local + 1 - a.local_first);
  const int64_t hi = min(a.num_local - 1, pos - a.local_first);
  for (int64_t j = lo + warp; j <= hi; j += kWarps) {
    const int64_t off = j * a.kv_dim + g * d;
    Fold(Score(ql, a.local_k + off, d, a.scale, lane), a.local_v + off, d, lane, &m, &l, acc);
  }

  // Merge the warps' partial softmaxes.
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int t = lane + 32 * c;
    if (t < d) warp_acc[warp * d + t] = acc[c];
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  __syncthreads();
  float row_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) row_max = fmaxf(row_max, warp_m[w]);
  float row_sum = 0.0f;
  float weight[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no key has m = -inf and l = 0; it weighs nothing.
    weight[w] = warp_m[w] == -INFINITY ? 0.0f : expf(warp_m[w] - row_max);
    row_sum += warp_l[w] * weight[w];
  }
  float* out = a.out + i * a.q_dim + h * d;
  for (int t = static_cast<int>(threadIdx.x); t < d; t += kThreads) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += warp_acc[w * d + t] * weight[w];
    out[t] = row_sum > 0.0f ? o / row_sum : 0.0f;
  }
  if (threadIdx.x == 0) {
    a.row_max[i * a.heads + h] = row_max;
    a.row_sum[i * a.heads + h] = row_sum;
  }
}

// Grid (ceil(num_local / kWarps), heads), kThreads threads; one warp per (local key j, head h).
// Adds sum over the queries that see j (in query order) of exp(score - row_max) / row_sum.
__global__ void LocalScoreKernel(Args a) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (j >= a.num_local) return;
  const int h = static_cast<int>(blockIdx.y);
  const int d = a.head_dim;
  const float* k = a.local_k + j * a.kv_dim + (h / a.group) * d;
  // Query i sees j iff pos_j <= start + i < pos_j + n_local.
  const int64_t pos_j = a.local_first + j;
  const int64_t first = max(int64_t{0}, pos_j - a.start);
  const int64_t last = min(a.n - 1, pos_j - a.start + a.n_local - 1);
  float mass = 0.0f;
  for (int64_t i = first; i <= last; ++i) {
    const float s = Score(a.q_local + i * a.q_dim + h * d, k, d, a.scale, lane);
    const int64_t row = i * a.heads + h;
    mass += expf(s - a.row_max[row]) / a.row_sum[row];
  }
  if (lane == 0) a.local_scores[j * a.heads + h] += mass;
}

// One CTA per (query, head) row; see MergeAttentionParams (the same arithmetic as the CPU twin).
__global__ void MergeAttentionKernel(float* __restrict__ out, float* __restrict__ stats,
                                     const float* __restrict__ out_b,
                                     const float* __restrict__ stats_b, int64_t rows,
                                     int64_t head_dim) {
  const int64_t r = blockIdx.x;
  const float ma = stats[r], la = stats[rows + r], mb = stats_b[r], lb = stats_b[rows + r];
  const float m = fmaxf(ma, mb);
  const float wa = ma == -INFINITY ? 0.0f : la * expf(ma - m);
  const float wb = mb == -INFINITY ? 0.0f : lb * expf(mb - m);
  const float l = wa + wb;
  float* o = out + r * head_dim;
  const float* ob = out_b + r * head_dim;
  for (int64_t t = threadIdx.x; t < head_dim; t += blockDim.x) {
    o[t] = l > 0.0f ? (o[t] * wa + ob[t] * wb) / l : 0.0f;
  }
  // Every thread has read the part's statistics above; only the last read-modify-write of
  // stats must follow them, and it touches this row alone.
  __syncthreads();
  if (threadIdx.x == 0) {
    stats[r] = m;
    stats[rows + r] = l;
  }
}

// The limits of the kernels' grids and shared memory.
absl::Status CheckLaunchShape(const MemoryAttentionParams& p) {
  if (p.head_dim > kMemoryAttentionMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory_attention: head_dim ", p.head_dim, " > ", kMemoryAttentionMaxHeadDim));
  }
  constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
  if (p.n > kMaxGridX || p.heads > 65535 || (p.num_local + kWarps - 1) / kWarps > kMaxGridX) {
    return absl::InvalidArgumentError("memory_attention: too many queries, heads or local keys");
  }
  return absl::OkStatus();
}

// `stats`: the row max and sum arrays (2 * n * heads floats).
Args MakeArgs(const MemoryAttentionParams& p, void* stats) {
  Args a{};
  a.q_local = p.q_local;
  a.q_global = p.q_global;
  a.local_k = p.local_k;
  a.local_v = p.local_v;
  a.global_k = p.global_k;
  a.global_v = p.global_v;
  a.global_pos = p.global_pos;
  a.out = p.out;
  a.local_scores = p.local_scores;
  a.row_max = static_cast<float*>(stats);
  a.row_sum = a.row_max + p.n * p.heads;
  a.n = p.n;
  a.start = p.start;
  a.num_local = p.num_local;
  a.local_first = p.local_first;
  a.num_global = p.num_global;
  a.n_local = p.n_local;
  a.q_dim = p.q_dim();
  a.kv_dim = p.kv_dim();
  a.heads = static_cast<int>(p.heads);
  a.group = static_cast<int>(p.heads / p.kv_heads);
  a.head_dim = static_cast<int>(p.head_dim);
  a.scale = p.scale;
  return a;
}

absl::Status LaunchLocalScores(const Args& a, Stream stream) {
  const dim3 grid(static_cast<unsigned>((a.num_local + kWarps - 1) / kWarps),
                  static_cast<unsigned>(a.heads));
  LocalScoreKernel<<<grid, kThreads, 0, stream>>>(a);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchMemoryAttention(const MemoryAttentionParams& p, void* d_workspace,
                                   size_t workspace_bytes, Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  RETURN_IF_ERROR(CheckLaunchShape(p));
  if (p.n == 0) return absl::OkStatus();
  const size_t needed = p.row_stats != nullptr ? 0 : MemoryAttentionWorkspaceBytes(p);
  if (needed > 0 && (d_workspace == nullptr || workspace_bytes < needed)) {
    return absl::InvalidArgumentError(absl::StrCat("memory_attention: workspace of ",
                                                   workspace_bytes, " bytes, ", needed, " needed"));
  }
  const Args a = MakeArgs(p, p.row_stats != nullptr ? p.row_stats : d_workspace);
  const size_t smem = static_cast<size_t>((2 + kWarps) * p.head_dim + 2 * kWarps) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(p.n), static_cast<unsigned>(p.heads));
  MemoryAttentionKernel<<<grid, kThreads, smem, stream>>>(a);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  if (p.local_scores != nullptr && p.num_local > 0) RETURN_IF_ERROR(LaunchLocalScores(a, stream));
  return absl::OkStatus();
}

absl::Status LaunchMemoryAttentionLocalScores(const MemoryAttentionParams& p, Stream stream) {
  RETURN_IF_ERROR(p.ValidateLocalScores());
  RETURN_IF_ERROR(CheckLaunchShape(p));
  if (p.n == 0 || p.num_local == 0) return absl::OkStatus();
  return LaunchLocalScores(MakeArgs(p, p.row_stats), stream);
}

absl::Status LaunchMergeAttention(const MergeAttentionParams& p, Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  const int64_t rows = p.n * p.heads;
  if (rows == 0) return absl::OkStatus();
  if (rows > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("merge_attention: too many rows");
  }
  const int threads = static_cast<int>(std::min<int64_t>(p.head_dim, kThreads));
  MergeAttentionKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(
      p.out, p.stats, p.out_b, p.stats_b, rows, p.head_dim);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
