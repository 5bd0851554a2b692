#include <cmath>
#include <numbers>
#include <vector>

#include "cuda/rope.h"

namespace qllm::cuda {

std::vector<double> RopeInverseFrequencies(const RopeConfig& c) {
  const int32_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int32_t i = 0; i < half; ++i) {
    inv[i] = std::pow(c.theta, -2.0 * i / c.head_dim);
  }
  if (c.llama3_factor > 0.0) {
    // Wavelengths shorter than the high-frequency bound keep their frequency; longer than the
    // low-frequency bound are divided by the factor; in between, interpolate smoothly.
    const double low_wavelen = c.llama3_original_max_position / c.llama3_low_freq_factor;
    const double high_wavelen = c.llama3_original_max_position / c.llama3_high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= c.llama3_factor;
        continue;
      }
      const double smooth = (c.llama3_original_max_position / wavelen - c.llama3_low_freq_factor) /
                            (c.llama3_high_freq_factor - c.llama3_low_freq_factor);
      f = (1.0 - smooth) * f / c.llama3_factor + smooth * f;
    }
  }
  return inv;
}

absl::Status RopeParams::Validate() const {
  if (x == nullptr || positions == nullptr || inv_freq == nullptr) {
    return absl::InvalidArgumentError("rope: x, positions and inv_freq are required");
  }
  if (tokens < 0 || heads < 0 || head_dim <= 0 || head_dim % 2 != 0 ||
      row_stride < heads * head_dim) {
    return absl::InvalidArgumentError("rope: bad shape");
  }
  return absl::OkStatus();
}

absl::Status RopeRef(const RopeParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  const int64_t half = p.head_dim / 2;
#pragma omp parallel if (p.tokens * p.heads * p.head_dim > 32768)
  {
    std::vector<float> cos_v(half), sin_v(half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.tokens; ++t) {
      const double pos = static_cast<double>(p.positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos * p.inv_freq[i];
        cos_v[i] = static_cast<float>(std::cos(angle));
        sin_v[i] = static_cast<float>(std::sin(angle));
      }
      float* row = p.x + t * p.row_stride;
      for (int64_t h = 0; h < p.heads; ++h) {
        float* v = row + h * p.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cos_v[i] - b * sin_v[i];
          v[i + half] = b * cos_v[i] + a * sin_v[i];
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
