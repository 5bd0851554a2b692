// RMSNorm: y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight.
#ifndef QLLM_CUDA_RMSNORM_H_
#define QLLM_CUDA_RMSNORM_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

struct RmsNormParams {
  const float* x = nullptr;       // [rows, dim], required
  const float* weight = nullptr;  // [dim], required
  float* y = nullptr;             // [rows, dim], required; may alias x
  int64_t rows = 0;
  int64_t dim = 0;
  float eps = 1e-5f;

  absl::Status Validate() const;
};

// CPU backend and reference.
absl::Status RmsNormRef(const RmsNormParams& p);
// CUDA twin; pointers are device pointers. Enqueued on `stream`; does not synchronize.
absl::Status LaunchRmsNorm(const RmsNormParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_RMSNORM_H_
