// Token sampling from one row of logits, the device twin of model::Sampler (model/sampler.h):
// greedy (temperature 0: argmax, ties to the lower id) or temperature / top-k / top-p over the
// logits sorted descending (ties to the lower id). The random draw stays on the host: the
// caller passes u01, the uniform number in [0, 1) that Sampler::NextUniform() returns, and the
// pick is the first kept token whose cumulative weight exceeds u01 * total, exactly as
// Sampler::Sample draws with the same generator. So a device stream of tokens can follow the
// seeded host sampler step for step.
//
// SampleRef (CPU twin, host pointers) equals model::Sampler given the same u01. LaunchSample
// (device pointers, CUB radix sort + one scan thread) may differ from it only where u01 * total
// falls within the rounding of expf between a cumulative boundary (device and host expf may
// differ in the last bit), or where logits are NaN or signed zeros tie.
#ifndef QLLM_CUDA_SAMPLING_H_
#define QLLM_CUDA_SAMPLING_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/stream.h"

namespace qllm::cuda {

struct SampleParams {
  const float* logits = nullptr;  // [vocab], required
  int32_t vocab = 0;              // > 0
  float temperature = 0.0f;       // [0, 100]; 0 = greedy
  int32_t top_k = 0;              // [0, vocab]; 0 disables
  float top_p = 1.0f;             // (0, 1]; 1 disables
  double u01 = 0.0;               // [0, 1); unused when greedy
  int32_t* out = nullptr;         // [1] the token id, required

  // INVALID_ARGUMENT for a missing pointer or a value out of range (NaN included).
  absl::Status Validate() const;
  // The value checks of Validate alone (vocab and the settings), for callers that check the
  // settings before the logits exist.
  absl::Status ValidateSettings() const;
};

absl::Status SampleRef(const SampleParams& p);

// Device workspace for LaunchSample over `vocab` logits (keys, ids, sorted copies and the CUB
// scratch). UNAVAILABLE without a usable device.
absl::StatusOr<size_t> SampleWorkspaceBytes(int32_t vocab);

// Enqueues the sample on `stream`; writes *p.out (device memory). Does not synchronize and
// allocates nothing (`d_workspace`: SampleWorkspaceBytes(vocab) bytes, cudaMalloc-aligned).
// Errors: INVALID_ARGUMENT (Validate, small workspace); UNAVAILABLE on a sticky device error;
// INTERNAL otherwise.
absl::Status LaunchSample(const SampleParams& p, void* d_workspace, size_t workspace_bytes,
                          Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_SAMPLING_H_
