// The CPU twin of LaunchBlockTopK. worker/context_memory.cc (LayerMemory::Retrieve) is the
// engine's current CPU path for the same step (fp32 sgemv scores); this file implements the
// same contract independently so the GPU parity test has a plain reference.
#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/block_topk.h"

namespace qllm::cuda {

absl::Status BlockTopKParams::Validate() const {
  if (num_blocks < 0 || topk < 0) {
    return absl::InvalidArgumentError("block_topk: negative num_blocks or topk");
  }
  if (q_dim <= 0) return absl::InvalidArgumentError("block_topk: q_dim must be positive");
  if (num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_topk: ", num_blocks, " blocks do not fit int32 ids"));
  }
  if (qbar == nullptr) return absl::InvalidArgumentError("block_topk: qbar is required");
  if (num_blocks > 0 && reprs == nullptr) {
    return absl::InvalidArgumentError("block_topk: reprs is required");
  }
  if (selected() > 0 && (ids == nullptr || scores == nullptr)) {
    return absl::InvalidArgumentError("block_topk: ids and scores are required");
  }
  return absl::OkStatus();
}

absl::Status BlockTopKRef(const BlockTopKParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  const bool with_question = p.question != nullptr && p.question_weight != 0.0f;
  std::vector<float> s(p.num_blocks);
  for (int64_t b = 0; b < p.num_blocks; ++b) {
    const float* r = p.reprs + b * p.q_dim;
    double dot_qbar = 0.0, dot_q = 0.0;
    for (int64_t d = 0; d < p.q_dim; ++d) dot_qbar += static_cast<double>(r[d]) * p.qbar[d];
    if (with_question) {
      for (int64_t d = 0; d < p.q_dim; ++d) dot_q += static_cast<double>(r[d]) * p.question[d];
    }
    s[b] = static_cast<float>(with_question ? dot_qbar + p.question_weight * dot_q : dot_qbar);
  }
  const int64_t k = p.selected();
  std::vector<int32_t> order(p.num_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  for (int64_t i = 0; i < k; ++i) {
    p.ids[i] = order[i];
    p.scores[i] = s[order[i]];
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
