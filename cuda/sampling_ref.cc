// CPU twin of cuda/sampling.h: model::Sampler's arithmetic with the draw passed in.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/sampling.h"

namespace qllm::cuda {

absl::Status SampleParams::Validate() const {
  if (logits == nullptr || out == nullptr || vocab <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: logits and out are required and vocab (", vocab, ") > 0"));
  }
  if (!(temperature >= 0.0f && temperature <= 100.0f) || top_k < 0 || top_k > vocab ||
      !(top_p > 0.0f && top_p <= 1.0f) || !(u01 >= 0.0 && u01 < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("sample: temperature ", temperature, ", top_k ",
                                                   top_k, ", top_p ", top_p, ", u01 ", u01,
                                                   " out of range"));
  }
  return absl::OkStatus();
}

absl::Status SampleRef(const SampleParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.temperature == 0.0f) {
    int32_t best = 0;
    for (int32_t i = 1; i < p.vocab; ++i) {
      if (p.logits[i] > p.logits[best]) best = i;
    }
    *p.out = best;
    return absl::OkStatus();
  }
  std::vector<std::pair<float, int32_t>> v(p.vocab);
  for (int32_t i = 0; i < p.vocab; ++i) v[i] = {p.logits[i] / p.temperature, i};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int32_t keep = p.vocab;
  if (p.top_k > 0 && p.top_k < p.vocab) {
    keep = p.top_k;
    std::partial_sort(v.begin(), v.begin() + keep, v.end(), by_logit);
  } else {
    std::sort(v.begin(), v.end(), by_logit);
  }
  const float max_logit = v[0].first;
  double total = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    v[i].first = std::exp(v[i].first - max_logit);
    total += v[i].first;
  }
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      mass += v[i].first / total;
      if (mass >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    total = 0.0;
    for (int32_t i = 0; i < cut; ++i) total += v[i].first;
    keep = cut;
  }
  const double u = p.u01 * total;
  double acc = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    acc += v[i].first;
    if (u < acc) {
      *p.out = v[i].second;
      return absl::OkStatus();
    }
  }
  *p.out = v[keep - 1].second;
  return absl::OkStatus();
}

}  // namespace qllm::cuda
