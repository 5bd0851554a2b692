#include "cuda/nccl_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {
namespace {

absl::Status NcclError(ncclResult_t r, const char* what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

// Waits for `comm`'s pending work (non-blocking communicator) and, when `event` is given, for
// the stream work behind it. Aborts the communicator at the deadline or on an async error.
absl::Status WaitFor(ncclComm_t comm, cudaEvent_t event, absl::Time deadline,
                     std::atomic<bool>* aborted, const char* what) {
  while (true) {
    if (aborted->load()) return absl::UnavailableError(absl::StrCat(what, ": channel aborted"));
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
    if (r != ncclSuccess) return NcclError(r, what);
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(comm);
      aborted->store(true);
      return NcclError(async, what);
    }
    if (async == ncclSuccess) {
      if (event == nullptr) return absl::OkStatus();
      const cudaError_t e = cudaEventQuery(event);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return CudaErrorToStatus(e, what, __FILE__, __LINE__);
    }
    if (absl::Now() > deadline) {
      ncclCommAbort(comm);
      aborted->store(true);
      return absl::DeadlineExceededError(absl::StrCat(what,
                                                      ": peer did not answer in time; "
                                                      "communicator aborted"));
    }
    absl::SleepFor(absl::Microseconds(50));
  }
}

class NcclChannel final : public worker::ActivationChannel {
 public:
  NcclChannel(ncclComm_t comm, int rank, int device, cudaStream_t stream, cudaEvent_t event)
      : comm_(comm), peer_(1 - rank), device_(device), stream_(stream), event_(event) {}
  ~NcclChannel() override {
    if (aborted_.load()) {
      // Already aborted: the communicator is gone.
    } else {
      ncclCommAbort(comm_);
    }
    cudaEventDestroy(event_);
    cudaStreamDestroy(stream_);
  }

  absl::Status Send(const float* data, size_t count, absl::Time deadline) override {
    return Transfer(const_cast<float*>(data), count, deadline, /*send=*/true);
  }
  absl::Status Recv(float* data, size_t count, absl::Time deadline) override {
    return Transfer(data, count, deadline, /*send=*/false);
  }
  void Abort() override {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);
  }

 private:
  absl::Status Transfer(float* data, size_t count, absl::Time deadline, bool send) {
    absl::MutexLock lock(&mu_);  // One NCCL call at a time on this communicator.
    if (aborted_.load()) return absl::UnavailableError("activation channel aborted");
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    const ncclResult_t r = send ? ncclSend(data, count, ncclFloat32, peer_, comm_, stream_)
                                : ncclRecv(data, count, ncclFloat32, peer_, comm_, stream_);
    if (r != ncclSuccess && r != ncclInProgress)
      return NcclError(r, send ? "ncclSend" : "ncclRecv");
    CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, stream_));
    return WaitFor(comm_, event_, deadline, &aborted_, send ? "ncclSend" : "ncclRecv");
  }

  absl::Mutex mu_;
  ncclComm_t comm_;
  const int peer_;
  const int device_;
  cudaStream_t stream_;
  cudaEvent_t event_;
  std::atomic<bool> aborted_{false};
};

}  // namespace

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return NcclError(r, "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> NewNcclChannel(
    const std::string& unique_id, int rank, int device, absl::Time deadline) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id must be ", sizeof(id.internal),
                                                   " bytes, got ", unique_id.size()));
  }
  if (rank != 0 && rank != 1) return absl::InvalidArgumentError("rank must be 0 or 1");
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // Bounded waits: poll ncclCommGetAsyncError ourselves.
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, 2, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) return NcclError(r, "ncclCommInitRankConfig");
  std::atomic<bool> aborted{false};
  if (absl::Status s = WaitFor(comm, nullptr, deadline, &aborted, "ncclCommInitRankConfig");
      !s.ok()) {
    return s;
  }
  cudaStream_t stream = nullptr;
  cudaEvent_t event = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    ncclCommAbort(comm);
    if (stream != nullptr) cudaStreamDestroy(stream);
    return CudaErrorToStatus(e, "stream/event for the NCCL channel", __FILE__, __LINE__);
  }
  return std::unique_ptr<worker::ActivationChannel>(
      new NcclChannel(comm, rank, device, stream, event));
}

}  // namespace qllm::cuda
