#include "cuda/device.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "cuda/cublas_check.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {
namespace {

// A failed runtime call also leaves its error as the thread's "last error", where the next
// CUDA_RETURN_IF_LAUNCH_ERROR would report it as a failure of an unrelated launch. Errors that
// this file returns as a Status are therefore cleared (cudaGetLastError); sticky errors cannot
// be cleared and keep surfacing, as they should.
absl::Status Check(cudaError_t err, const char* expr, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return CudaErrorToStatus(err, expr, __FILE__, line);
}

}  // namespace

namespace internal {

absl::StatusOr<void*> DeviceAlloc(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0) RETURN_IF_ERROR(Check(cudaMalloc(&p, bytes), "cudaMalloc", __LINE__));
  return p;
}

void DeviceFree(void* d_ptr) noexcept {
  if (d_ptr == nullptr) return;
  const cudaError_t err = cudaFree(d_ptr);
  if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaFree: " << cudaGetErrorString(err);
}

absl::StatusOr<void*> PinnedAlloc(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0) RETURN_IF_ERROR(Check(cudaMallocHost(&p, bytes), "cudaMallocHost", __LINE__));
  return p;
}

void PinnedFree(void* h_ptr) noexcept {
  if (h_ptr == nullptr) return;
  const cudaError_t err = cudaFreeHost(h_ptr);
  if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaFreeHost: " << cudaGetErrorString(err);
}

absl::Status CopyAsync(void* dst, const void* src, size_t bytes, CopyKind kind, Stream stream) {
  if (bytes == 0) return absl::OkStatus();
  cudaMemcpyKind k = cudaMemcpyDeviceToDevice;
  if (kind == CopyKind::kHostToDevice) k = cudaMemcpyHostToDevice;
  if (kind == CopyKind::kDeviceToHost) k = cudaMemcpyDeviceToHost;
  return Check(cudaMemcpyAsync(dst, src, bytes, k, stream), "cudaMemcpyAsync", __LINE__);
}

absl::Status SynchronizeStream(Stream stream) {
  return Check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", __LINE__);
}

absl::Status CheckRange(size_t offset, size_t count, size_t size, const char* what) {
  if (offset > size || count > size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": elements [", offset, ", ",
                                                   offset + count, ") outside a buffer of ", size));
  }
  return absl::OkStatus();
}

}  // namespace internal

int VisibleDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // Not sticky: clear it for later calls.
    return 0;
  }
  return count;
}

absl::Status UseDevice(int device) {
  const int count = VisibleDeviceCount();
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " outside the ", count, " visible device(s)"));
  }
  return Check(cudaSetDevice(device), "cudaSetDevice", __LINE__);
}

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t s = nullptr;
  RETURN_IF_ERROR(Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                        "cudaStreamCreateWithFlags", __LINE__));
  return CudaStream(s);
}

absl::Status CudaStream::Synchronize() const { return internal::SynchronizeStream(get()); }

void CudaStream::Deleter::operator()(Stream s) const noexcept {
  const cudaError_t err = cudaStreamDestroy(s);
  if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaStreamDestroy: " << cudaGetErrorString(err);
}

absl::StatusOr<CudaEvent> CudaEvent::Create(bool timing) {
  cudaEvent_t e = nullptr;
  RETURN_IF_ERROR(
      Check(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming),
            "cudaEventCreateWithFlags", __LINE__));
  return CudaEvent(e);
}

absl::Status CudaEvent::Record(Stream stream) const {
  return Check(cudaEventRecord(get(), stream), "cudaEventRecord", __LINE__);
}

absl::Status CudaEvent::StreamWait(Stream stream) const {
  return Check(cudaStreamWaitEvent(stream, get(), 0), "cudaStreamWaitEvent", __LINE__);
}

absl::Status CudaEvent::Synchronize() const {
  return Check(cudaEventSynchronize(get()), "cudaEventSynchronize", __LINE__);
}

absl::StatusOr<bool> CudaEvent::IsDone() const {
  const cudaError_t err = cudaEventQuery(get());
  if (err == cudaErrorNotReady) {
    cudaGetLastError();  // "Not ready" is a state, not an error; see Check().
    return false;
  }
  RETURN_IF_ERROR(Check(err, "cudaEventQuery", __LINE__));
  return true;
}

absl::StatusOr<float> CudaEvent::ElapsedMillis(const CudaEvent& start) const {
  float ms = 0.0f;
  RETURN_IF_ERROR(
      Check(cudaEventElapsedTime(&ms, start.get(), get()), "cudaEventElapsedTime", __LINE__));
  return ms;
}

void CudaEvent::Deleter::operator()(Event e) const noexcept {
  const cudaError_t err = cudaEventDestroy(e);
  if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaEventDestroy: " << cudaGetErrorString(err);
}

absl::StatusOr<CublasLtHandle> CublasLtHandle::Create() {
  cublasLtHandle_t h = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&h));
  return CublasLtHandle(h);
}

void CublasLtHandle::Deleter::operator()(CublasLt h) const noexcept {
  const cublasStatus_t st = cublasLtDestroy(h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    QLLM_LOG(ERROR) << "cublasLtDestroy: " << cublasLtGetStatusString(st);
  }
}

}  // namespace qllm::cuda
