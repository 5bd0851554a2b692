#include <cmath>

#include "cuda/swiglu.h"

namespace qllm::cuda {

absl::Status SwiGluParams::Validate() const {
  if (gate_up == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("swiglu: gate_up and out are required");
  }
  if (rows < 0 || dim <= 0) return absl::InvalidArgumentError("swiglu: bad shape");
  return absl::OkStatus();
}

absl::Status SwiGluRef(const SwiGluParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
#pragma omp parallel for schedule(static) if (p.rows * p.dim > 32768)
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* g = p.gate_up + r * 2 * p.dim;
    const float* u = g + p.dim;
    float* o = p.out + r * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
  return absl::OkStatus();
}

absl::Status AddParams::Validate() const {
  if (x == nullptr || y == nullptr) return absl::InvalidArgumentError("add: x and y required");
  if (n < 0) return absl::InvalidArgumentError("add: negative size");
  return absl::OkStatus();
}

absl::Status AddRef(const AddParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
#pragma omp parallel for simd schedule(static) if (p.n > 65536)
  for (int64_t i = 0; i < p.n; ++i) p.y[i] += p.x[i];
  return absl::OkStatus();
}

}  // namespace qllm::cuda
