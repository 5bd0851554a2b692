// SwiGLU activation of the fused gate/up projection: out[r, i] = silu(g[r, i]) * u[r, i], where
// row r of `gate_up` holds g (dim values) followed by u (dim values).
#ifndef QLLM_CUDA_SWIGLU_H_
#define QLLM_CUDA_SWIGLU_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

struct SwiGluParams {
  const float* gate_up = nullptr;  // [rows, 2 * dim], required
  float* out = nullptr;            // [rows, dim], required
  int64_t rows = 0;
  int64_t dim = 0;

  absl::Status Validate() const;
};

absl::Status SwiGluRef(const SwiGluParams& p);
absl::Status LaunchSwiGlu(const SwiGluParams& p, Stream stream);

// Residual add: y[i] += x[i] for i < n.
struct AddParams {
  const float* x = nullptr;  // [n], required
  float* y = nullptr;        // [n], required
  int64_t n = 0;

  absl::Status Validate() const;
};

absl::Status AddRef(const AddParams& p);
absl::Status LaunchAdd(const AddParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_SWIGLU_H_
