#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cuda/attention.h"
#include "cuda/gemm.h"
#include "cuda/softmax_ref.h"

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
  // Queries go in tiles so the score scratch stays bounded (kTile x keys per thread).
  constexpr int64_t kTile = 256;
  const int64_t tiles = (p.n_q + kTile - 1) / kTile;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t i0 = t * kTile, rows = std::min(kTile, p.n_q - i0);
        const int64_t g = h / group;
        const float* qh = p.q + i0 * p.q_stride + h * p.head_dim;
        const float* kg = p.k + g * p.head_dim;
        const float* vg = p.v + g * p.head_dim;
        float* oh = p.out + i0 * p.out_stride + h * p.head_dim;
        // Keys beyond the tile's last query are never visible to it.
        const int64_t n_kv = p.q_offset + i0 + rows;
        scores.resize(rows * n_kv);
        // scores[i, j] = scale * q_i . k_j (BLAS runs single-threaded inside this region).
        Sgemm(true, rows, n_kv, p.head_dim, p.scale, qh, p.q_stride, kg, p.kv_stride, 0.0f,
              scores.data(), n_kv);
        for (int64_t i = 0; i < rows; ++i) {
          float* row = scores.data() + i * n_kv;
          const int64_t visible = p.q_offset + i0 + i + 1;
          SoftmaxRow(row, visible);
          std::fill(row + visible, row + n_kv, 0.0f);
        }
        Sgemm(false, rows, p.head_dim, n_kv, 1.0f, scores.data(), n_kv, vg, p.kv_stride, 0.0f, oh,
              p.out_stride);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
