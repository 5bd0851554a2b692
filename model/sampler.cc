#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"

namespace qllm::model {

absl::Status SamplingOptions::Validate(int32_t vocab_size) const {
  if (!(temperature >= 0.0f && temperature <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, 100], got ", temperature));
  }
  if (top_k < 0 || top_k > vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be in [0, ", vocab_size, "], got ", top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {}

double Sampler::NextUniform() {
  // What uniform_real_distribution<double>(0, total) draws before scaling by total.
  return std::generate_canonical<double, std::numeric_limits<double>::digits>(rng_);
}

int32_t Argmax(const float* logits, int32_t vocab) {
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

int32_t Sampler::Sample(const float* logits, int32_t vocab) {
  if (options_.temperature == 0.0f) return Argmax(logits, vocab);
  return SampleWithDraw(logits, vocab, options_, NextUniform(), &scratch_);
}

int32_t SampleWithDraw(const float* logits, int32_t vocab, const SamplingOptions& options,
                       double u01, std::vector<std::pair<float, int32_t>>* scratch) {
  std::vector<std::pair<float, int32_t>>& v = *scratch;
  v.resize(vocab);
  for (int32_t i = 0; i < vocab; ++i) v[i] = {logits[i] / options.temperature, i};
  // Descending by logit, ascending id among equals: a deterministic order.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int32_t keep = vocab;
  if (options.top_k > 0 && options.top_k < vocab) {
    keep = options.top_k;
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
  if (options.top_p < 1.0f) {
    double mass = 0.0;
    int32_t cut = keep;
    for (int32_t i = 0; i < keep; ++i) {
      mass += v[i].first / total;
      if (mass >= options.top_p) {
        cut = i + 1;
        break;
      }
    }
    total = 0.0;
    for (int32_t i = 0; i < cut; ++i) total += v[i].first;
    keep = cut;
  }
  // uniform_real_distribution<double>(0, total) draws u01 * total (+ 0).
  const double u = u01 * total;
  double acc = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    acc += v[i].first;
    if (u < acc) return v[i].second;
  }
  return v[keep - 1].second;
}

}  // namespace qllm::model
