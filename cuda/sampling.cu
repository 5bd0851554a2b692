// CUDA twin of cuda/sampling.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/cub.cuh>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/cuda_check.h"
#include "cuda/sampling.h"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 1024;

size_t AlignUp(size_t bytes) { return (bytes + 255) & ~size_t{255}; }

struct Workspace {
  float* keys_in;
  float* keys_out;
  int32_t* ids_in;
  int32_t* ids_out;
  void* sort_scratch;
  size_t sort_bytes;
};

absl::StatusOr<size_t> SortScratchBytes(int32_t vocab) {
  size_t bytes = 0;
  CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), vocab));
  return bytes;
}

size_t RegionsBytes(int32_t vocab) {
  return 2 * AlignUp(vocab * sizeof(float)) + 2 * AlignUp(vocab * sizeof(int32_t));
}

Workspace Carve(void* base, int32_t vocab, size_t sort_bytes) {
  char* p = static_cast<char*>(base);
  Workspace w;
  w.keys_in = reinterpret_cast<float*>(p);
  p += AlignUp(vocab * sizeof(float));
  w.keys_out = reinterpret_cast<float*>(p);
  p += AlignUp(vocab * sizeof(float));
  w.ids_in = reinterpret_cast<int32_t*>(p);
  p += AlignUp(vocab * sizeof(int32_t));
  w.ids_out = reinterpret_cast<int32_t*>(p);
  p += AlignUp(vocab * sizeof(int32_t));
  w.sort_scratch = p;
  w.sort_bytes = sort_bytes;
  return w;
}

// One CTA: the first index of the largest logit (Argmax of model/sampler.h).
__global__ void ArgmaxKernel(const float* __restrict__ logits, int32_t vocab,
                             int32_t* __restrict__ out) {
  __shared__ float s_val[kThreads];
  __shared__ int32_t s_idx[kThreads];
  float best = logits[0];
  int32_t best_idx = 0;
  for (int32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (logits[i] > best || (logits[i] == best && i < best_idx)) {
      best = logits[i];
      best_idx = i;
    }
  }
  s_val[threadIdx.x] = best;
  s_idx[threadIdx.x] = best_idx;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const float v = s_val[threadIdx.x + half];
      const int32_t j = s_idx[threadIdx.x + half];
      if (v > s_val[threadIdx.x] || (v == s_val[threadIdx.x] && j < s_idx[threadIdx.x])) {
        s_val[threadIdx.x] = v;
        s_idx[threadIdx.x] = j;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = s_idx[0];
}

__global__ void ScaleKernel(const float* __restrict__ logits, int32_t vocab, float temperature,
                            float* __restrict__ keys, int32_t* __restrict__ ids) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= vocab) return;
  keys[i] = logits[i] / temperature;
  ids[i] = i;
}

// w[i] = expf(keys[i] - keys[0]) for i < keep (keys sorted descending, so keys[0] is the max).
__global__ void ExpKernel(const float* __restrict__ keys, int32_t keep, float* __restrict__ w) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < keep) w[i] = expf(keys[i] - keys[0]);
}

// One thread: the top-p cut and the pick, summing in double in rank order as the host does.
__global__ void PickKernel(const float* __restrict__ w, const int32_t* __restrict__ ids,
                           int32_t keep, float top_p, double u01, int32_t* __restrict__ out) {
  double total = 0.0;
  for (int32_t i = 0; i < keep; ++i) total += w[i];
  if (top_p < 1.0f) {
    double mass = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      mass += w[i] / total;
      if (mass >= top_p) {
        cut = i + 1;
        break;
      }
    }
    total = 0.0;
    for (int32_t i = 0; i < cut; ++i) total += w[i];
    keep = cut;
  }
  const double u = u01 * total;
  double acc = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    acc += w[i];
    if (u < acc) {
      *out = ids[i];
      return;
    }
  }
  *out = ids[keep - 1];
}

}  // namespace

absl::StatusOr<size_t> SampleWorkspaceBytes(int32_t vocab) {
  if (vocab <= 0) return absl::InvalidArgumentError(absl::StrCat("sample: vocab ", vocab));
  ASSIGN_OR_RETURN(const size_t sort_bytes, SortScratchBytes(vocab));
  return RegionsBytes(vocab) + sort_bytes;
}

absl::Status LaunchSample(const SampleParams& p, void* d_workspace, size_t workspace_bytes,
                          Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  if (p.temperature == 0.0f) {
    ArgmaxKernel<<<1, kThreads, 0, stream>>>(p.logits, p.vocab, p.out);
    CUDA_RETURN_IF_LAUNCH_ERROR();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const size_t sort_bytes, SortScratchBytes(p.vocab));
  const size_t needed = RegionsBytes(p.vocab) + sort_bytes;
  if (d_workspace == nullptr || workspace_bytes < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: workspace of ", workspace_bytes, " bytes, ", needed, " needed"));
  }
  Workspace ws = Carve(d_workspace, p.vocab, sort_bytes);
  const unsigned blocks = static_cast<unsigned>((p.vocab + 255) / 256);
  ScaleKernel<<<blocks, 256, 0, stream>>>(p.logits, p.vocab, p.temperature, ws.keys_in, ws.ids_in);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  // Stable: equal keys keep the ascending id order of ids_in (the host's tie rule).
  CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairsDescending(
      ws.sort_scratch, ws.sort_bytes, ws.keys_in, ws.keys_out, ws.ids_in, ws.ids_out, p.vocab, 0,
      static_cast<int>(sizeof(float) * 8), stream));
  const int32_t keep = p.top_k > 0 && p.top_k < p.vocab ? p.top_k : p.vocab;
  // The weights go to keys_in, free once sorted.
  ExpKernel<<<static_cast<unsigned>((keep + 255) / 256), 256, 0, stream>>>(ws.keys_out, keep,
                                                                           ws.keys_in);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  PickKernel<<<1, 1, 0, stream>>>(ws.keys_in, ws.ids_out, keep, p.top_p, p.u01, p.out);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
