// CPU twin of cuda/sampling.h: model::Sampler's arithmetic (model::SampleWithDraw) with the
// draw passed in.
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/sampling.h"
#include "model/sampler.h"

namespace qllm::cuda {

absl::Status SampleParams::Validate() const {
  if (logits == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("sample: logits and out are required");
  }
  return ValidateSettings();
}

absl::Status SampleParams::ValidateSettings() const {
  if (vocab <= 0) return absl::InvalidArgumentError(absl::StrCat("sample: vocab ", vocab, " <= 0"));
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
    *p.out = model::Argmax(p.logits, p.vocab);
    return absl::OkStatus();
  }
  const model::SamplingOptions o{.temperature = p.temperature, .top_k = p.top_k, .top_p = p.top_p};
  std::vector<std::pair<float, int32_t>> scratch;
  *p.out = model::SampleWithDraw(p.logits, p.vocab, o, p.u01, &scratch);
  return absl::OkStatus();
}

}  // namespace qllm::cuda
