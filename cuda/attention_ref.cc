#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cuda/attention.h"

namespace qllm::cuda {

absl::Status CausalAttentionParams::Validate() const {
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("attention: q, k, v and out are required");
  }
  if (n_q < 0 || q_offset < 0 || q_offset + n_q > n_kv || heads <= 0 || kv_heads <= 0 ||
      heads % kv_heads != 0 || head_dim <= 0 || q_stride < heads * head_dim ||
      kv_stride < kv_heads * head_dim || out_stride < heads * head_dim) {
    return absl::InvalidArgumentError("attention: bad shape");
  }
  return absl::OkStatus();
}

absl::Status CausalAttentionRef(const CausalAttentionParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n_q == 0) return absl::OkStatus();
  const int64_t group = p.heads / p.kv_heads;
  const int64_t n_kv = p.q_offset + p.n_q;  // Keys beyond the last query are never visible.
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t g = h / group;
      const float* qh = p.q + h * p.head_dim;
      const float* kg = p.k + g * p.head_dim;
      const float* vg = p.v + g * p.head_dim;
      float* oh = p.out + h * p.head_dim;
      scores.resize(p.n_q * n_kv);
      // scores[i, j] = scale * q_i . k_j (BLAS runs single-threaded inside this region).
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.n_q, n_kv, p.head_dim, p.scale, qh,
                  p.q_stride, kg, p.kv_stride, 0.0f, scores.data(), n_kv);
      for (int64_t i = 0; i < p.n_q; ++i) {
        float* row = scores.data() + i * n_kv;
        const int64_t visible = p.q_offset + i + 1;
        float max_v = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < visible; ++j) max_v = std::max(max_v, row[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < visible; ++j) {
          row[j] = std::exp(row[j] - max_v);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
        std::fill(row + visible, row + n_kv, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p.n_q, p.head_dim, n_kv, 1.0f,
                  scores.data(), n_kv, vg, p.kv_stride, 0.0f, oh, p.out_stride);
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
