// The CPU twin of LaunchMemoryAttention: the arithmetic of LayerMemory::Attend
// (worker/context_memory.cc) over the explicit local/global key sets of memory_attention.h.
#include <algorithm>
#include <limits>
#include <vector>

#include "cuda/gemm.h"
#include "cuda/memory_attention.h"
#include "cuda/softmax_ref.h"

namespace qllm::cuda {

absl::Status MemoryAttentionParams::Validate() const {
  if (n < 0 || start < 0 || num_local < 0 || local_first < 0 || num_global < 0) {
    return absl::InvalidArgumentError("memory_attention: negative size or position");
  }
  if (n_local <= 0 || heads <= 0 || kv_heads <= 0 || head_dim <= 0 || heads % kv_heads != 0) {
    return absl::InvalidArgumentError("memory_attention: bad shape");
  }
  if (n > 0 && (q_local == nullptr || q_global == nullptr || out == nullptr)) {
    return absl::InvalidArgumentError("memory_attention: q_local, q_global and out are required");
  }
  if (num_local > 0 && (local_k == nullptr || local_v == nullptr)) {
    return absl::InvalidArgumentError("memory_attention: local_k and local_v are required");
  }
  if (num_global > 0 && (global_k == nullptr || global_v == nullptr)) {
    return absl::InvalidArgumentError("memory_attention: global_k and global_v are required");
  }
  return absl::OkStatus();
}

absl::Status MemoryAttentionRef(const MemoryAttentionParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.n == 0) return absl::OkStatus();
  const int64_t ng = p.num_global, nl = p.num_local, d = p.head_dim;
  const int64_t q_dim = p.q_dim(), kv_dim = p.kv_dim(), group = p.heads / p.kv_heads;
  const int64_t width = ng + nl;  // Row layout: [global keys | local keys].
  const float neg_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel
  {
    std::vector<float> s(p.n * width), mass(nl);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t g = h / group;
      float* oh = p.out + h * d;
      std::fill(mass.begin(), mass.end(), 0.0f);
      // scores = scale * q . k (BLAS runs single-threaded inside this region).
      if (ng > 0) {
        Sgemm(true, p.n, ng, d, p.scale, p.q_global + h * d, q_dim, p.global_k + g * d, kv_dim,
              0.0f, s.data(), width);
      }
      if (nl > 0) {
        Sgemm(true, p.n, nl, d, p.scale, p.q_local + h * d, q_dim, p.local_k + g * d, kv_dim, 0.0f,
              s.data() + ng, width);
      }
      for (int64_t i = 0; i < p.n; ++i) {
        float* row = s.data() + i * width;
        float* lrow = row + ng;
        const int64_t pos = p.start + i;
        // Local key j is visible for pos - n_local < local_first + j <= pos: j in [lo, hi].
        const int64_t lo = std::max<int64_t>(0, pos - p.n_local + 1 - p.local_first);
        const int64_t hi = std::min<int64_t>(nl - 1, pos - p.local_first);
        bool any = false;
        for (int64_t k = 0; k < ng; ++k) {
          // Written as a comparison against pos - n_local so kAlwaysVisible cannot overflow.
          if (p.global_pos != nullptr && p.global_pos[k] > pos - p.n_local) {
            row[k] = neg_inf;
          } else {
            any = true;
          }
        }
        if (hi < lo) {
          std::fill(lrow, lrow + nl, neg_inf);
        } else {
          any = true;
          std::fill(lrow, lrow + lo, neg_inf);
          std::fill(lrow + hi + 1, lrow + nl, neg_inf);
        }
        if (!any) {
          std::fill(row, row + width, 0.0f);
          continue;
        }
        // Softmax over the entries up to the last visible one; -inf entries become 0.
        const int64_t used = hi < lo ? ng : ng + hi + 1;
        SoftmaxRow(row, used);
        std::fill(row + used, row + width, 0.0f);
        // Local scores: the mass each local key received (step 4).
        for (int64_t j = lo; j <= hi; ++j) mass[j] += lrow[j];
      }
      if (ng > 0) {
        Sgemm(false, p.n, d, ng, 1.0f, s.data(), width, p.global_v + g * d, kv_dim, 0.0f, oh,
              q_dim);
      }
      if (nl > 0) {
        Sgemm(false, p.n, d, nl, 1.0f, s.data() + ng, width, p.local_v + g * d, kv_dim,
              ng > 0 ? 1.0f : 0.0f, oh, q_dim);
      }
      if (ng == 0 && nl == 0) {
        for (int64_t i = 0; i < p.n; ++i) std::fill(oh + i * q_dim, oh + i * q_dim + d, 0.0f);
      }
      if (p.local_scores != nullptr) {
        for (int64_t j = 0; j < nl; ++j) p.local_scores[j * p.heads + h] += mass[j];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
