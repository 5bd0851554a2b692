// The two-stage Q-LLM attention (cuda/memory_attention.h: the same parameters and contract) as
// the CPU path computes it (worker::LayerMemory::Attend), for chunks of many queries: per group
// of query heads sharing a KV head, the scores of the global and of the local keys by fp32
// SGEMM (cuBLAS, strided over the group's heads; FP32 math, no TF32), one kernel that masks
// each row (visibility rules of memory_attention.h) and turns it into the joint softmax, one
// that adds each local key's probability mass to local_scores (queries summed in order, so the
// result is deterministic), and the outputs by two SGEMMs (global then local values).
//
// The scalar kernel of LaunchMemoryAttention reads every visible key once per (query, head);
// these GEMMs read each key once per tile of queries and run at the SGEMM rate, which is what a
// prefill chunk of 512 queries over ~4K keys needs. Decode (one query) stays with the scalar
// kernel. CUDA builds only (the header compiles everywhere).
#ifndef QLLM_CUDA_MEMORY_ATTENTION_GEMM_H_
#define QLLM_CUDA_MEMORY_ATTENTION_GEMM_H_

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/memory_attention.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Owns a cuBLAS handle and the score workspace (heads * n * (num_global + num_local) floats),
// which grows (by at least a quarter each time, so up to 1.25x what the largest chunk seen
// needs). In full attention a chunk needs heads * chunk * tokens floats: 8 GiB for 32 heads,
// 512-token chunks and 128K tokens (so up to 10 GiB held). Not
// thread-safe; use it from one thread (the layers of a model run one after another on one stream,
// so one object serves them all).
class MemoryAttentionGemm {
 public:
  // Creates the cuBLAS handle on the current device. UNAVAILABLE without a usable device.
  static absl::StatusOr<std::unique_ptr<MemoryAttentionGemm>> Create();
  ~MemoryAttentionGemm();
  MemoryAttentionGemm(const MemoryAttentionGemm&) = delete;
  MemoryAttentionGemm& operator=(const MemoryAttentionGemm&) = delete;

  // Enqueues the attention on `stream`; device pointers as for LaunchMemoryAttention. Growing
  // the workspace (a larger chunk than before) allocates, which waits for the device.
  // Errors: INVALID_ARGUMENT (Validate); RESOURCE_EXHAUSTED when the workspace cannot grow;
  // UNAVAILABLE on a sticky device error; INTERNAL otherwise.
  // Writes p.row_stats when set (split attention, cuda/memory_attention.h).
  absl::Status Launch(const MemoryAttentionParams& p, Stream stream);

  // The SGEMM twin of LaunchMemoryAttentionLocalScores (the local keys' scores by SGEMM into
  // the workspace, then one kernel); the same contract and errors as Launch.
  absl::Status LaunchLocalScores(const MemoryAttentionParams& p, Stream stream);

 private:
  struct Impl;
  explicit MemoryAttentionGemm(std::unique_ptr<Impl> impl);
  // Scores into the workspace (grown as needed): [heads, n, width] with each row [global keys |
  // local keys] when `global`, else [local keys] alone. Validated p; INVALID_ARGUMENT when a
  // dimension exceeds cuBLAS's int.
  absl::Status Scores(const MemoryAttentionParams& p, bool global, Stream stream);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_MEMORY_ATTENTION_GEMM_H_
