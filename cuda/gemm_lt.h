// bf16 GEMM on the device through cuBLASLt, fp32 accumulation (CUBLAS_COMPUTE_32F), row-major:
// C[m, n] = alpha * A[m, k] * op(B) + beta * C, where op(B) is B^T for B stored [n, k] (trans_b,
// the layout of Hugging Face weights) or B for B [k, n]. The same contract as GemmParams /
// GemmRef (cuda/gemm.h), which is its CPU twin: GemmRef on the inputs widened to fp32 (exact)
// computes the same product up to accumulation order (and the bf16 rounding of a bf16 C).
// CUDA builds only; the header itself includes no CUDA headers.
#ifndef QLLM_CUDA_GEMM_LT_H_
#define QLLM_CUDA_GEMM_LT_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// bf16 values are passed as their bit patterns (uint16_t, as in common/float16.h). All pointers
// are device pointers, aligned to their element size.
struct GemmLtParams {
  const uint16_t* a = nullptr;  // bf16 [m, lda], required
  const uint16_t* b = nullptr;  // bf16 [n, ldb] if trans_b else [k, ldb], required
  // The output, [m, ldc]: exactly one of c (fp32) and c_bf16 (bf16) is set. With beta != 0 it
  // is also read.
  float* c = nullptr;
  uint16_t* c_bf16 = nullptr;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // Row strides in elements.
  bool trans_b = true;
  float alpha = 1.0f;
  float beta = 0.0f;
  // Scratch for cuBLASLt, [workspace_bytes], optional (null with 0 bytes restricts cuBLASLt to
  // algorithms without a workspace). Owned by the caller; concurrent launches need distinct
  // workspaces. GemmLt::kDefaultWorkspaceBytes is enough for every algorithm.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // INVALID_ARGUMENT for null inputs, not exactly one output, negative sizes, strides smaller
  // than the rows, or workspace_bytes > 0 without a workspace.
  absl::Status Validate() const;
};

// Runs GemmLtParams on one cuBLASLt handle. For each distinct problem (shapes, strides,
// trans_b, output type, beta == 0, pointer alignments, workspace size) the first launch builds
// the matmul descriptor and layouts and asks the cuBLASLt heuristic for an algorithm; later
// launches reuse them, so a fixed set of model shapes costs the heuristic once.
//
// Thread-safe: launches from several threads share the cache (under a mutex held only for the
// lookup); each concurrent launch needs its own workspace. Create on the device it will run
// on; every launch must use that device.
class GemmLt {
 public:
  // 32 MiB: what NVIDIA recommends for cuBLASLt on Hopper (4 MiB suffices on Ampere).
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  // UNAVAILABLE when the device cannot be used (no device, sticky error); RESOURCE_EXHAUSTED
  // when cuBLASLt cannot allocate; INTERNAL otherwise.
  static absl::StatusOr<std::unique_ptr<GemmLt>> Create();

  ~GemmLt();
  GemmLt(const GemmLt&) = delete;
  GemmLt& operator=(const GemmLt&) = delete;

  // Enqueues the product on `stream`; does not synchronize and allocates no device memory.
  // m == 0 or n == 0 is a no-op; k == 0 computes C = beta * C.
  // Errors: INVALID_ARGUMENT (Validate); UNIMPLEMENTED when cuBLASLt offers no algorithm for
  // the problem (e.g. a stride or pointer alignment it cannot handle); UNAVAILABLE on a sticky
  // device error (the worker must mark itself unhealthy, see cuda/device.h); INTERNAL otherwise.
  absl::Status Launch(const GemmLtParams& p, Stream stream);

  // Number of distinct problems seen so far (cached plans). For tests and metrics.
  size_t cached_plans() const;

 private:
  struct Impl;
  explicit GemmLt(std::unique_ptr<Impl> impl);

  const std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_GEMM_LT_H_
