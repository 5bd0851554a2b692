// The CPU twin of LaunchMemoryAttention: the arithmetic of LayerMemory::Attend
// (worker/context_memory.cc) over the explicit local/global key sets of memory_attention.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "common/status_macros.h"
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

absl::Status MemoryAttentionParams::ValidateLocalScores() const {
  RETURN_IF_ERROR(Validate());
  if (n > 0 && num_local > 0 && (row_stats == nullptr || local_scores == nullptr)) {
    return absl::InvalidArgumentError(
        "memory_attention local scores: row_stats and local_scores are required");
  }
  return absl::OkStatus();
}

absl::Status MergeAttentionParams::Validate() const {
  if (n < 0 || heads <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError("merge_attention: bad shape");
  }
  if (n > 0 && (out == nullptr || stats == nullptr || out_b == nullptr || stats_b == nullptr)) {
    return absl::InvalidArgumentError("merge_attention: out, stats, out_b and stats_b required");
  }
  return absl::OkStatus();
}

namespace {

void SetRowStats(const MemoryAttentionParams& p, int64_t i, int64_t h, SoftmaxStats stats) {
  p.row_stats[i * p.heads + h] = stats.max;
  p.row_stats[(p.n + i) * p.heads + h] = stats.sum;
}

// The local keys query `pos` sees: j in [lo, hi] (empty when hi < lo).
std::pair<int64_t, int64_t> VisibleLocal(const MemoryAttentionParams& p, int64_t pos) {
  return {std::max<int64_t>(0, pos - p.n_local + 1 - p.local_first),
          std::min<int64_t>(p.num_local - 1, pos - p.local_first)};
}

}  // namespace

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
        const auto [lo, hi] = VisibleLocal(p, pos);
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
          if (p.row_stats != nullptr) SetRowStats(p, i, h, SoftmaxStats{});
          continue;
        }
        // Softmax over the entries up to the last visible one; -inf entries become 0.
        const int64_t used = hi < lo ? ng : ng + hi + 1;
        const SoftmaxStats stats = SoftmaxRow(row, used);
        if (p.row_stats != nullptr) SetRowStats(p, i, h, stats);
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

absl::Status MergeAttentionRef(const MergeAttentionParams& p) {
  RETURN_IF_ERROR(p.Validate());
  const int64_t rows = p.n * p.heads, d = p.head_dim;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    const float ma = p.stats[r], la = p.stats[rows + r];
    const float mb = p.stats_b[r], lb = p.stats_b[rows + r];
    const float m = std::max(ma, mb);
    // A part that saw no key (max -inf) weighs nothing; the guard also avoids -inf - -inf.
    const float wa = ma == neg_inf ? 0.0f : la * std::exp(ma - m);
    const float wb = mb == neg_inf ? 0.0f : lb * std::exp(mb - m);
    const float l = wa + wb;
    float* o = p.out + r * d;
    const float* ob = p.out_b + r * d;
    for (int64_t t = 0; t < d; ++t) o[t] = l > 0.0f ? (o[t] * wa + ob[t] * wb) / l : 0.0f;
    p.stats[r] = m;
    p.stats[rows + r] = l;
  }
  return absl::OkStatus();
}

absl::Status MemoryAttentionLocalScoresRef(const MemoryAttentionParams& p) {
  RETURN_IF_ERROR(p.ValidateLocalScores());
  if (p.n == 0 || p.num_local == 0) return absl::OkStatus();
  const int64_t nl = p.num_local, d = p.head_dim, q_dim = p.q_dim(), kv_dim = p.kv_dim();
  const int64_t group = p.heads / p.kv_heads, rows = p.n * p.heads;
#pragma omp parallel
  {
    std::vector<float> s(p.n * nl), mass(nl);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t g = h / group;
      Sgemm(true, p.n, nl, d, p.scale, p.q_local + h * d, q_dim, p.local_k + g * d, kv_dim, 0.0f,
            s.data(), nl);
      std::fill(mass.begin(), mass.end(), 0.0f);
      for (int64_t i = 0; i < p.n; ++i) {
        const auto [lo, hi] = VisibleLocal(p, p.start + i);
        if (hi < lo) continue;
        // The row sees a local key, so its joint sum is positive.
        const float mx = p.row_stats[i * p.heads + h];
        const float inv = 1.0f / p.row_stats[rows + i * p.heads + h];
        const float* row = s.data() + i * nl;
        for (int64_t j = lo; j <= hi; ++j) mass[j] += FastExp(row[j] - mx) * inv;
      }
      for (int64_t j = 0; j < nl; ++j) p.local_scores[j * p.heads + h] += mass[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
