// CPU twins of cuda/memory_ops.h, and the argument checks both twins share.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/memory_ops.h"

namespace qllm::cuda {

absl::Status CopyRowsParams::Validate() const {
  if (rows < 0 || cols < 0 || src_stride < cols || dst_stride < cols) {
    return absl::InvalidArgumentError(absl::StrCat("copy rows: rows ", rows, ", cols ", cols,
                                                   ", strides ", src_stride, " and ", dst_stride,
                                                   " (need sizes >= 0 and strides >= cols)"));
  }
  if (rows * cols > 0 && (src == nullptr || dst == nullptr)) {
    return absl::InvalidArgumentError("copy rows: src and dst are required");
  }
  return absl::OkStatus();
}

absl::Status CopyRowsRef(const CopyRowsParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.cols == 0) return absl::OkStatus();
  for (int64_t r = 0; r < p.rows; ++r) {
    std::memcpy(p.dst + r * p.dst_stride, p.src + r * p.src_stride, p.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status FillPositionsParams::Validate() const {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("fill positions: n ", n, " < 0"));
  if (n > 0 && out == nullptr) return absl::InvalidArgumentError("fill positions: out is required");
  return absl::OkStatus();
}

absl::Status FillPositionsRef(const FillPositionsParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  for (int64_t i = 0; i < p.n; ++i) p.out[i] = p.first + i * p.step;
  return absl::OkStatus();
}

absl::Status MeanRowsParams::Validate() const {
  if (rows <= 0 || dim <= 0 || stride < dim) {
    return absl::InvalidArgumentError(absl::StrCat("mean rows: rows ", rows, ", dim ", dim,
                                                   ", stride ", stride,
                                                   " (need rows, dim > 0 and stride >= dim)"));
  }
  if (x == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("mean rows: x and out are required");
  }
  return absl::OkStatus();
}

absl::Status MeanRowsRef(const MeanRowsParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  std::fill(p.out, p.out + p.dim, 0.0f);
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t d = 0; d < p.dim; ++d) p.out[d] += p.x[r * p.stride + d];
  }
  for (int64_t d = 0; d < p.dim; ++d) p.out[d] /= static_cast<float>(p.rows);
  return absl::OkStatus();
}

absl::Status TopMeanParams::Validate() const {
  if (rows <= 0 || heads <= 0 || group <= 0 || head_dim <= 0 || k <= 0 || heads % group != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top mean: rows ", rows, ", heads ", heads, ", group ", group, ", head_dim ",
                     head_dim, ", k ", k, " (need all > 0 and group dividing heads)"));
  }
  if (score_stride < heads || vector_stride < (heads / group) * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("top mean: strides ", score_stride, " and ",
                                                   vector_stride, " are below heads ", heads,
                                                   " and ", (heads / group) * head_dim));
  }
  if (scores == nullptr || vectors == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("top mean: scores, vectors and out are required");
  }
  return absl::OkStatus();
}

absl::Status TopMeanRef(const TopMeanParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  const int64_t k = std::min(p.k, p.rows);
  std::vector<int64_t> order(p.rows);
  for (int64_t h = 0; h < p.heads; ++h) {
    std::iota(order.begin(), order.end(), 0);
    const float* sc = p.scores + h;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      const float va = sc[a * p.score_stride], vb = sc[b * p.score_stride];
      return va > vb || (va == vb && a < b);
    });
    float* o = p.out + h * p.head_dim;
    std::fill(o, o + p.head_dim, 0.0f);
    const int64_t col = (h / p.group) * p.head_dim;
    for (int64_t i = 0; i < k; ++i) {
      const float* v = p.vectors + order[i] * p.vector_stride + col;
      for (int64_t d = 0; d < p.head_dim; ++d) o[d] += v[d];
    }
    for (int64_t d = 0; d < p.head_dim; ++d) o[d] /= static_cast<float>(k);
  }
  return absl::OkStatus();
}

absl::Status GatherBlocksParams::Validate() const {
  if (count < 0 || num_blocks < 0 || block_elems <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("gather blocks: count ", count, ", num_blocks ",
                                                   num_blocks, ", block_elems ", block_elems,
                                                   " (need counts >= 0 and block_elems > 0)"));
  }
  if (count > 0 && (ids == nullptr || pool_k == nullptr || pool_v == nullptr || dst_k == nullptr ||
                    dst_v == nullptr)) {
    return absl::InvalidArgumentError("gather blocks: ids, pools and destinations are required");
  }
  return absl::OkStatus();
}

absl::Status GatherBlocksRef(const GatherBlocksParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  const size_t bytes = p.block_elems * sizeof(float);
  for (int64_t i = 0; i < p.count; ++i) {
    float* k = p.dst_k + i * p.block_elems;
    float* v = p.dst_v + i * p.block_elems;
    const int64_t b = p.ids[i];
    if (b < 0 || b >= p.num_blocks) {
      std::fill(k, k + p.block_elems, 0.0f);
      std::fill(v, v + p.block_elems, 0.0f);
      continue;
    }
    std::memcpy(k, p.pool_k + b * p.block_elems, bytes);
    std::memcpy(v, p.pool_v + b * p.block_elems, bytes);
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
