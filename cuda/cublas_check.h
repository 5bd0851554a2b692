// Turns cuBLAS / cuBLASLt status codes into absl::Status with file:line (never aborts); the
// cuBLAS counterpart of cuda/cuda_check.h. CUDA-only header.
#ifndef QLLM_CUDA_CUBLAS_CHECK_H_
#define QLLM_CUDA_CUBLAS_CHECK_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {

// EXECUTION_FAILED and INTERNAL_ERROR are often the echo of a CUDA error; when the CUDA runtime
// holds one (cudaPeekAtLastError), the status is that error's (so a sticky device error is
// UNAVAILABLE marked as a lost device, as in CudaErrorToStatus). Otherwise: NOT_INITIALIZED (the
// library could not initialize the device) -> UNAVAILABLE, ALLOC_FAILED -> RESOURCE_EXHAUSTED,
// INVALID_VALUE -> INVALID_ARGUMENT, NOT_SUPPORTED and ARCH_MISMATCH -> UNIMPLEMENTED, the rest ->
// INTERNAL.
inline absl::Status CublasStatusToStatus(cublasStatus_t st, const char* expr, const char* file,
                                         int line) {
  const std::string msg =
      absl::StrCat(file, ":", line, ": ", expr, ": cuBLAS status ", static_cast<int>(st), " (",
                   cublasLtGetStatusName(st), ": ", cublasLtGetStatusString(st), ")");
  switch (st) {
    case CUBLAS_STATUS_EXECUTION_FAILED:
    case CUBLAS_STATUS_INTERNAL_ERROR: {
      const cudaError_t err = cudaPeekAtLastError();
      if (err != cudaSuccess) {
        absl::Status cuda = CudaErrorToStatus(err, expr, file, line);
        const std::string both = absl::StrCat(msg, "; pending CUDA error ", cudaGetErrorName(err),
                                              ": ", cudaGetErrorString(err));
        return IsDeviceLost(cuda) ? DeviceLostError(both) : absl::Status(cuda.code(), both);
      }
      return absl::InternalError(msg);
    }
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::UnavailableError(msg);
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(msg);
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::InvalidArgumentError(msg);
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::UnimplementedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace qllm::cuda

#define CUBLAS_RETURN_IF_ERROR(expr)                                                         \
  do {                                                                                       \
    const cublasStatus_t qllm_cublas_st_ = (expr);                                           \
    if (qllm_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                          \
      return ::qllm::cuda::CublasStatusToStatus(qllm_cublas_st_, #expr, __FILE__, __LINE__); \
    }                                                                                        \
  } while (0)

#endif  // QLLM_CUDA_CUBLAS_CHECK_H_
