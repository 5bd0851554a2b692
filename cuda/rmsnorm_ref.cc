#include <cmath>

#include "cuda/rmsnorm.h"

namespace qllm::cuda {

absl::Status RmsNormParams::Validate() const {
  if (x == nullptr || weight == nullptr || y == nullptr) {
    return absl::InvalidArgumentError("rmsnorm: x, weight and y are required");
  }
  if (rows < 0 || dim <= 0) return absl::InvalidArgumentError("rmsnorm: bad shape");
  if (!(eps >= 0.0f)) return absl::InvalidArgumentError("rmsnorm: eps must be >= 0");
  return absl::OkStatus();
}

absl::Status RmsNormRef(const RmsNormParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
#pragma omp parallel for schedule(static) if (p.rows * p.dim > 32768)
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.dim;
    float* y = p.y + r * p.dim;
    double ss = 0.0;
    for (int64_t i = 0; i < p.dim; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / p.dim + p.eps));
    for (int64_t i = 0; i < p.dim; ++i) y[i] = x[i] * inv * p.weight[i];
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
