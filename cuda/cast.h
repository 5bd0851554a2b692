// Conversion of fp32 activations to bf16 (round to nearest even), the input format of the bf16
// GEMM (cuda/gemm_lt.h): y[i] = bf16(x[i]) for i < n. bf16 values are their bit patterns
// (uint16_t), as in common/float16.h.
#ifndef QLLM_CUDA_CAST_H_
#define QLLM_CUDA_CAST_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

struct CastToBf16Params {
  const float* x = nullptr;  // [n], required
  uint16_t* y = nullptr;     // [n] bf16 out, required
  int64_t n = 0;

  // INVALID_ARGUMENT for a missing pointer or a negative n.
  absl::Status Validate() const;
};

// CPU backend and reference (qllm::FloatToBf16). Finite values and infinities round to nearest
// even; a NaN stays a NaN (its bit pattern may differ from the device's).
absl::Status CastToBf16Ref(const CastToBf16Params& p);
// CUDA twin (__float2bfloat16_rn); pointers are device pointers. Enqueued on `stream`; does not
// synchronize. Errors: INVALID_ARGUMENT (Validate); UNAVAILABLE or INTERNAL for a failed launch.
absl::Status LaunchCastToBf16(const CastToBf16Params& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_CAST_H_
