#include "cuda/cuda_check.h"
#include "cuda/embedding.h"

namespace qllm::cuda {
namespace {

// One block per token; out-of-range ids (validated on the host beforehand) write zeros.
__global__ void EmbeddingKernel(const int32_t* __restrict__ tokens, const float* __restrict__ table,
                                float* __restrict__ out, int64_t vocab, int64_t dim) {
  const int64_t t = blockIdx.x;
  const int32_t id = tokens[t];
  const bool valid = id >= 0 && id < vocab;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[t * dim + i] = valid ? table[static_cast<int64_t>(id) * dim + i] : 0.0f;
  }
}

}  // namespace

absl::Status LaunchEmbedding(const EmbeddingParams& p, Stream stream) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n == 0) return absl::OkStatus();
  EmbeddingKernel<<<static_cast<unsigned>(p.n), 256, 0, stream>>>(p.tokens, p.table, p.out, p.vocab,
                                                                  p.dim);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace qllm::cuda
