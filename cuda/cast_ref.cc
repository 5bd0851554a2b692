#include "common/float16.h"
#include "cuda/cast.h"

namespace qllm::cuda {

absl::Status CastToBf16Params::Validate() const {
  if (x == nullptr || y == nullptr) return absl::InvalidArgumentError("cast: x and y required");
  if (n < 0) return absl::InvalidArgumentError("cast: negative size");
  return absl::OkStatus();
}

absl::Status CastToBf16Ref(const CastToBf16Params& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
#pragma omp parallel for simd schedule(static) if (p.n > 65536)
  for (int64_t i = 0; i < p.n; ++i) p.y[i] = FloatToBf16(p.x[i]);
  return absl::OkStatus();
}

}  // namespace qllm::cuda
