// CUDA twin of cuda/sampling.h.
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/cuda_check.h"
#include "cuda/sampling.h"
#include "cuda/sort_workspace.cuh"

namespace qllm::cuda {
namespace {

constexpr int kThreads = 1024;

// One CTA: the first index of the largest logit (Argmax of model/sampler.h).
__global__ void ArgmaxKernel(const float* __restrict__ logits, int32_t vocab,
                             int32_t* __restrict__ out) {
  __shared__ float s_val[kThreads];
  __shared__ int s_idx[kThreads];
  float best = 0.0f;
  int best_idx = -1;
  for (int32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (internal::RanksBefore(logits[i], i, best, best_idx)) {
      best = logits[i];
      best_idx = i;
    }
  }
  const int winner = internal::CtaArgmax(best, best_idx, s_val, s_idx);
  if (threadIdx.x == 0) *out = winner;
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
  ASSIGN_OR_RETURN(const size_t sort_bytes, internal::SortScratchBytes(vocab));
  return internal::SortRegionsBytes(vocab) + sort_bytes;
}

absl::Status LaunchSample(const SampleParams& p, void* d_workspace, size_t workspace_bytes,
                          Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  if (p.temperature == 0.0f) {
    ArgmaxKernel<<<1, kThreads, 0, stream>>>(p.logits, p.vocab, p.out);
    CUDA_RETURN_IF_LAUNCH_ERROR();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const size_t sort_bytes, internal::SortScratchBytes(p.vocab));
  const size_t needed = internal::SortRegionsBytes(p.vocab) + sort_bytes;
  if (d_workspace == nullptr || workspace_bytes < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: workspace of ", workspace_bytes, " bytes, ", needed, " needed"));
  }
  internal::SortWorkspace ws = internal::CarveSortWorkspace(d_workspace, p.vocab, sort_bytes);
  const unsigned blocks = static_cast<unsigned>((p.vocab + 255) / 256);
  ScaleKernel<<<blocks, 256, 0, stream>>>(p.logits, p.vocab, p.temperature, ws.keys_in, ws.ids_in);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  // Stable: equal keys keep the ascending id order of ids_in (the host's tie rule).
  CUDA_RETURN_IF_ERROR(internal::SortPairsDescending(ws, p.vocab, stream));
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
