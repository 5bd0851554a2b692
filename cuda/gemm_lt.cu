#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "cuda/cublas_check.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/gemm_lt.h"

namespace qllm::cuda {
namespace {

// C = beta * C over [m, n] rows of stride ldc: the whole product when k == 0 (cuBLASLt does
// not take k == 0). beta == 0 writes zeros without reading C, as BLAS does.
template <typename T>
__global__ void ScaleRowsKernel(T* __restrict__ c, int64_t m, int64_t n, int64_t ldc, float beta) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T* p = c + (i / n) * ldc + i % n;
    const float v = beta == 0.0f ? 0.0f : beta * static_cast<float>(*p);
    *p = static_cast<T>(v);
  }
}

template <typename T>
absl::Status LaunchScaleRows(T* c, int64_t m, int64_t n, int64_t ldc, float beta, Stream stream) {
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((m * n + kThreads - 1) / kThreads, 4096);
  ScaleRowsKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(c, m, n, ldc, beta);
  CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

// The largest power of two (at most 256) that divides the address: cuBLASLt's heuristic
// assumes 256-byte aligned operands unless told otherwise.
uint32_t Alignment(const void* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && addr % align != 0) align /= 2;
  return align;
}

struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const noexcept {
    const cublasStatus_t st = cublasLtMatmulDescDestroy(d);
    if (st != CUBLAS_STATUS_SUCCESS) {
      QLLM_LOG(ERROR) << "cublasLtMatmulDescDestroy: " << cublasLtGetStatusString(st);
    }
  }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const noexcept {
    const cublasStatus_t st = cublasLtMatrixLayoutDestroy(l);
    if (st != CUBLAS_STATUS_SUCCESS) {
      QLLM_LOG(ERROR) << "cublasLtMatrixLayoutDestroy: " << cublasLtGetStatusString(st);
    }
  }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t p) const noexcept {
    const cublasStatus_t st = cublasLtMatmulPreferenceDestroy(p);
    if (st != CUBLAS_STATUS_SUCCESS) {
      QLLM_LOG(ERROR) << "cublasLtMatmulPreferenceDestroy: " << cublasLtGetStatusString(st);
    }
  }
};
using MatmulDescPtr = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
using LayoutPtr = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
using PreferencePtr = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

// Everything that decides the descriptors and the algorithm.
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool,
                           uint32_t, uint32_t, uint32_t, size_t>;

PlanKey KeyOf(const GemmLtParams& p) {
  const void* c = p.c != nullptr ? static_cast<const void*>(p.c) : p.c_bf16;
  return {p.m,
          p.n,
          p.k,
          p.lda,
          p.ldb,
          p.ldc,
          p.trans_b,
          p.c != nullptr,
          Alignment(p.a),
          Alignment(p.b),
          Alignment(c),
          p.workspace_bytes};
}

// The column-major problem cuBLASLt solves. Row-major C[m, n] is column-major C^T [n, m], and
// C^T = op(B)^T A^T: cuBLASLt's "A" is our B (the weight; transposed when trans_b, because a
// row-major [n, k] array is a column-major [k, n] one) and its "B" is our A (column-major
// [k, m], not transposed).
struct Plan {
  MatmulDescPtr op;
  LayoutPtr layout_a, layout_b, layout_c;
  cublasLtMatmulAlgo_t algo{};
};

absl::Status MakeLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                        LayoutPtr* out) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                                    static_cast<uint64_t>(cols), ld));
  out->reset(l);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Plan>> MakePlan(cublasLtHandle_t handle, const GemmLtParams& p) {
  auto plan = std::make_unique<Plan>();
  cublasLtMatmulDesc_t op = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  plan->op.reset(op);
  const cublasOperation_t trans_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  if (p.trans_b) {
    RETURN_IF_ERROR(MakeLayout(CUDA_R_16BF, p.k, p.n, p.ldb, &plan->layout_a));
  } else {
    RETURN_IF_ERROR(MakeLayout(CUDA_R_16BF, p.n, p.k, p.ldb, &plan->layout_a));
  }
  RETURN_IF_ERROR(MakeLayout(CUDA_R_16BF, p.k, p.m, p.lda, &plan->layout_b));
  RETURN_IF_ERROR(
      MakeLayout(p.c != nullptr ? CUDA_R_32F : CUDA_R_16BF, p.n, p.m, p.ldc, &plan->layout_c));

  cublasLtMatmulPreference_t pref_raw = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref_raw));
  PreferencePtr pref(pref_raw);
  const size_t ws = p.workspace_bytes;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const void* c = p.c != nullptr ? static_cast<const void*>(p.c) : p.c_bf16;
  const uint32_t align_a = Alignment(p.b), align_b = Alignment(p.a), align_c = Alignment(c);
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle, op, plan->layout_a.get(), plan->layout_b.get(), plan->layout_c.get(),
      plan->layout_c.get(), pref_raw, 1, &result, &found);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
    return absl::UnimplementedError(absl::StrCat("gemm_lt: cuBLASLt has no algorithm for m ", p.m,
                                                 " n ", p.n, " k ", p.k, " strides (", p.lda, ", ",
                                                 p.ldb, ", ", p.ldc, ") alignments (", align_b,
                                                 ", ", align_a, ", ", align_c, ") workspace ", ws));
  }
  CUBLAS_RETURN_IF_ERROR(st);
  plan->algo = result.algo;
  return plan;
}

}  // namespace

absl::Status GemmLtParams::Validate() const {
  if (a == nullptr || b == nullptr) return absl::InvalidArgumentError("gemm_lt: a and b required");
  if ((c == nullptr) == (c_bf16 == nullptr)) {
    return absl::InvalidArgumentError("gemm_lt: exactly one of c and c_bf16 is required");
  }
  if (m < 0 || n < 0 || k < 0) return absl::InvalidArgumentError("gemm_lt: negative size");
  const int64_t b_cols = trans_b ? k : n;
  if (lda < k || ldb < b_cols || ldc < n) {
    return absl::InvalidArgumentError(absl::StrCat("gemm_lt: strides (", lda, ", ", ldb, ", ", ldc,
                                                   ") are smaller than the rows"));
  }
  if (workspace_bytes > 0 && workspace == nullptr) {
    return absl::InvalidArgumentError("gemm_lt: workspace_bytes > 0 without a workspace");
  }
  return absl::OkStatus();
}

struct GemmLt::Impl {
  CublasLtHandle handle;
  mutable absl::Mutex mu;
  // Plans are never removed, so a plan stays valid after the lookup releases the mutex.
  std::map<PlanKey, std::unique_ptr<Plan>> plans ABSL_GUARDED_BY(mu);
};

GemmLt::GemmLt(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GemmLt::~GemmLt() = default;

absl::StatusOr<std::unique_ptr<GemmLt>> GemmLt::Create() {
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->handle, CublasLtHandle::Create());
  return std::unique_ptr<GemmLt>(new GemmLt(std::move(impl)));
}

size_t GemmLt::cached_plans() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->plans.size();
}

absl::Status GemmLt::Launch(const GemmLtParams& p, Stream stream) {
  RETURN_IF_ERROR(p.Validate());
  if (p.m == 0 || p.n == 0) return absl::OkStatus();
  if (p.k == 0) {
    if (p.c != nullptr) return LaunchScaleRows(p.c, p.m, p.n, p.ldc, p.beta, stream);
    return LaunchScaleRows(reinterpret_cast<__nv_bfloat16*>(p.c_bf16), p.m, p.n, p.ldc, p.beta,
                           stream);
  }
  const PlanKey key = KeyOf(p);
  const Plan* plan = nullptr;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->plans.find(key);
    if (it != impl_->plans.end()) plan = it->second.get();
  }
  if (plan == nullptr) {
    // Built outside the lock (the heuristic takes a while); a racing thread's equal plan wins.
    ASSIGN_OR_RETURN(std::unique_ptr<Plan> fresh, MakePlan(impl_->handle.get(), p));
    absl::MutexLock lock(&impl_->mu);
    plan = impl_->plans.try_emplace(key, std::move(fresh)).first->second.get();
  }
  void* c = p.c != nullptr ? static_cast<void*>(p.c) : p.c_bf16;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(impl_->handle.get(), plan->op.get(), &p.alpha, p.b,
                                        plan->layout_a.get(), p.a, plan->layout_b.get(), &p.beta, c,
                                        plan->layout_c.get(), c, plan->layout_c.get(), &plan->algo,
                                        p.workspace, p.workspace_bytes, stream));
  return absl::OkStatus();
}

}  // namespace qllm::cuda
