// Turns CUDA runtime errors into absl::Status with file:line (never aborts). CUDA-only header.
#ifndef QLLM_CUDA_CUDA_CHECK_H_
#define QLLM_CUDA_CUDA_CHECK_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/device_error.h"

namespace qllm::cuda {

// Sticky errors (the context is unusable) map to UNAVAILABLE marked as a lost device
// (common/device_error.h), so the worker reports itself unhealthy; everything else to INTERNAL.
inline absl::Status CudaErrorToStatus(cudaError_t err, const char* expr, const char* file,
                                      int line) {
  const std::string msg = absl::StrCat(file, ":", line, ": ", expr, ": ", cudaGetErrorName(err),
                                       ": ", cudaGetErrorString(err));
  switch (err) {
    // The errors the CUDA runtime documents as leaving the context unusable ("the process
    // must be terminated and relaunched"), and no device at all.
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case cudaErrorContained:
    case cudaErrorExternalDevice:
    case cudaErrorNoDevice:
      return DeviceLostError(msg);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace qllm::cuda

// On an error, also clears the thread's last error (a no-op for sticky ones), so that a later
// CUDA_RETURN_IF_LAUNCH_ERROR does not report this call's failure as a failed launch.
#define CUDA_RETURN_IF_ERROR(expr)                                                       \
  do {                                                                                   \
    const cudaError_t qllm_cuda_err_ = (expr);                                           \
    if (qllm_cuda_err_ != cudaSuccess) {                                                 \
      (void)cudaGetLastError();                                                          \
      return ::qllm::cuda::CudaErrorToStatus(qllm_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

// Checks the launch that was just enqueued (llm.c's cudaGetLastError after every launch).
#define CUDA_RETURN_IF_LAUNCH_ERROR() CUDA_RETURN_IF_ERROR(cudaGetLastError())

#endif  // QLLM_CUDA_CUDA_CHECK_H_
