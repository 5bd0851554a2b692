#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "cuda/gemm.h"

namespace qllm::cuda {

absl::Status GemmParams::Validate() const {
  if (a == nullptr || b == nullptr || c == nullptr) {
    return absl::InvalidArgumentError("gemm: a, b and c are required");
  }
  if (m < 0 || n < 0 || k < 0) return absl::InvalidArgumentError("gemm: negative size");
  const int64_t b_cols = trans_b ? k : n;
  if (lda < k || ldb < b_cols || ldc < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm: strides (", lda, ", ", ldb, ", ", ldc, ") are smaller than the rows"));
  }
  return absl::OkStatus();
}

absl::Status GemmRef(const GemmParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (p.m == 1) {
    // One row (decode): OpenBLAS's sgemm packs the whole of B on every call; sgemv streams it.
    if (p.trans_b) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(p.n), static_cast<blasint>(p.k),
                  p.alpha, p.b, static_cast<blasint>(p.ldb), p.a, 1, p.beta, p.c, 1);
    } else {
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(p.k), static_cast<blasint>(p.n),
                  p.alpha, p.b, static_cast<blasint>(p.ldb), p.a, 1, p.beta, p.c, 1);
    }
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, p.trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(p.m), static_cast<blasint>(p.n), static_cast<blasint>(p.k),
              p.alpha, p.a, static_cast<blasint>(p.lda), p.b, static_cast<blasint>(p.ldb), p.beta,
              p.c, static_cast<blasint>(p.ldc));
  return absl::OkStatus();
}

void Sgemm(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  GemmParams p;
  p.a = a;
  p.b = b;
  p.c = c;
  p.m = m;
  p.n = n;
  p.k = k;
  p.lda = lda;
  p.ldb = ldb;
  p.ldc = ldc;
  p.trans_b = trans_b;
  p.alpha = alpha;
  p.beta = beta;
  absl::Status s = GemmRef(p);
  QLLM_CHECK(s.ok()) << s;
}

absl::Status MatMulNT(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) {
  GemmParams p;
  p.a = x;
  p.b = w;
  p.c = y;
  p.m = m;
  p.n = n;
  p.k = k;
  p.lda = k;
  p.ldb = k;
  p.ldc = n;
  return GemmRef(p);
}

}  // namespace qllm::cuda
