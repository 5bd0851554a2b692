// Single-precision GEMM, row-major: C[m, n] = alpha * A[m, k] * op(B) + beta * C, where op(B) is
// B^T for B stored [n, k] (trans_b, the layout of Hugging Face weights) or B for B [k, n].
// CPU backend: OpenBLAS sgemm (threaded through OpenMP).
#ifndef QLLM_CUDA_GEMM_H_
#define QLLM_CUDA_GEMM_H_

#include <cstdint>

#include "absl/status/status.h"

namespace qllm::cuda {

struct GemmParams {
  const float* a = nullptr;  // [m, lda], required
  const float* b = nullptr;  // [n, ldb] if trans_b else [k, ldb], required
  float* c = nullptr;        // [m, ldc], required
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // Row strides in elements.
  bool trans_b = true;
  float alpha = 1.0f;
  float beta = 0.0f;

  // INVALID_ARGUMENT for null pointers, negative sizes or strides smaller than the rows.
  absl::Status Validate() const;
};

// CPU backend. A single-row product (m == 1, decode) runs as sgemv.
absl::Status GemmRef(const GemmParams& p);

// GemmRef for callers that have already validated their shapes (hot loops inside kernels).
void Sgemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Shorthand for the common case y[m, n] = x[m, k] * w[n, k]^T with dense rows.
absl::Status MatMulNT(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_GEMM_H_
