// Vectorizable exp and row softmax for the CPU attention kernels (the CPU halves of the
// attention ops; the CUDA kernels use the hardware's exp).
#ifndef QLLM_CUDA_SOFTMAX_REF_H_
#define QLLM_CUDA_SOFTMAX_REF_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

namespace qllm::cuda {

// exp(x) to about 2 ulp for x in [-87, 88] (Cephes' polynomial), 0 below -87, +inf above 88.7.
// Written without library calls or branches the compiler cannot turn into selects, so loops
// over it vectorize (the scalar libm expf was 10% of prefill).
inline float FastExp(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  const float clamped = std::min(std::max(x, -87.0f), 88.7f);
  const float fx = clamped * kLog2e + 0.5f;
  const int32_t t = static_cast<int32_t>(fx);
  const int32_t n = t - static_cast<int32_t>(fx < static_cast<float>(t));  // floor(fx)
  const float nf = static_cast<float>(n);
  const float r = clamped - nf * kLn2Hi - nf * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const float result = y * std::bit_cast<float>((n + 127) << 23);
  // Selects, not branches: below the range the result is 0, above it +inf.
  const float low = x < -87.0f ? 0.0f : result;
  return x > 88.7f ? std::numeric_limits<float>::infinity() : low;
}

// A softmax row's max and sum of exp(x - max) (the row statistics of memory_attention.h).
struct SoftmaxStats {
  float max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
};

// In place: row[j] = exp(row[j] - max) / sum over j < n. Entries at -inf become 0. Returns the
// max and the sum. REQUIRES: at least one entry is finite.
inline SoftmaxStats SoftmaxRow(float* row, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    row[j] = FastExp(row[j] - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  return {mx, sum};
}

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_SOFTMAX_REF_H_
