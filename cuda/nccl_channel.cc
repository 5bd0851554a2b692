#include "cuda/nccl_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {
namespace {

absl::Status NcclError(ncclResult_t r, const char* what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

// Waits for `comm`'s pending work (non-blocking communicator) and, when `event` is given, for
// the stream work behind it; stops at the deadline, on an error, or once *aborted is set. The
// caller aborts the communicator after any error (it is unusable then).
absl::Status WaitFor(ncclComm_t comm, cudaEvent_t event, absl::Time deadline,
                     const std::atomic<bool>* aborted, const char* what) {
  while (true) {
    if (aborted->load()) return absl::UnavailableError(absl::StrCat(what, ": channel aborted"));
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
    if (r != ncclSuccess) return NcclError(r, what);
    if (async != ncclSuccess && async != ncclInProgress) return NcclError(async, what);
    if (async == ncclSuccess) {
      if (event == nullptr) return absl::OkStatus();
      const cudaError_t e = cudaEventQuery(event);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return CudaErrorToStatus(e, what, __FILE__, __LINE__);
    }
    if (absl::Now() > deadline) {
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
    {
      absl::MutexLock lock(&mu_);
      DestroyLocked();
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
  // A transfer in flight sees the flag within its polling interval and aborts the
  // communicator itself (it may be using it); an idle channel is aborted here.
  void Abort() override {
    aborted_.store(true);
    if (mu_.TryLock()) {
      DestroyLocked();
      mu_.Unlock();
    }
  }

 private:
  void DestroyLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  absl::Status Transfer(float* data, size_t count, absl::Time deadline, bool send) {
    absl::MutexLock lock(&mu_);  // One NCCL call at a time on this communicator.
    if (aborted_.load() || comm_ == nullptr) {
      DestroyLocked();
      return absl::UnavailableError("activation channel aborted");
    }
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    const ncclResult_t r = send ? ncclSend(data, count, ncclFloat32, peer_, comm_, stream_)
                                : ncclRecv(data, count, ncclFloat32, peer_, comm_, stream_);
    if (r != ncclSuccess && r != ncclInProgress) {
      aborted_.store(true);
      DestroyLocked();
      return NcclError(r, send ? "ncclSend" : "ncclRecv");
    }
    // A non-blocking communicator may return ncclInProgress and put the kernel on the stream
    // later, from its own thread: first wait until it is there (the async state leaves
    // ncclInProgress), then record the event behind it and wait for the transfer itself.
    const char* what = send ? "ncclSend" : "ncclRecv";
    absl::Status st = WaitFor(comm_, nullptr, deadline, &aborted_, what);
    if (st.ok()) {
      if (const cudaError_t e = cudaEventRecord(event_, stream_); e != cudaSuccess) {
        st = CudaErrorToStatus(e, "cudaEventRecord after an NCCL call", __FILE__, __LINE__);
      }
    }
    if (st.ok()) st = WaitFor(comm_, event_, deadline, &aborted_, what);
    if (!st.ok()) {  // The communicator is unusable after any failure: abort it.
      aborted_.store(true);
      DestroyLocked();
    }
    return st;
  }

  absl::Mutex mu_;
  ncclComm_t comm_ ABSL_GUARDED_BY(mu_);
  const int peer_;
  const int device_;
  cudaStream_t stream_;
  cudaEvent_t event_;
  std::atomic<bool> aborted_{false};
};

// Host memory in and out of an NCCL channel through one device buffer (grown on demand),
// copied on the channel's own stream: no device-wide synchronization, which would wait for
// every NCCL kernel on the device, other sessions' links included (NCCL's warning about
// concurrent communicators).
class HostStagedChannel final : public worker::ActivationChannel {
 public:
  HostStagedChannel(std::unique_ptr<worker::ActivationChannel> inner, int device,
                    cudaStream_t stream)
      : inner_(std::move(inner)), device_(device), stream_(stream) {}
  ~HostStagedChannel() override {
    // Abort first: freeing the buffer synchronizes the device, which would wait forever for
    // a transfer of this channel still waiting on a dead peer.
    inner_->Abort();
    if (buffer_ != nullptr) cudaFree(buffer_);
    cudaStreamDestroy(stream_);
  }

  absl::Status Send(const float* data, size_t count, absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(Reserve(count));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(buffer_, data, count * sizeof(float), cudaMemcpyHostToDevice, stream_));
    // NCCL reads the buffer on its own stream: the copy must have landed.
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return inner_->Send(buffer_, count, deadline);
  }
  absl::Status Recv(float* data, size_t count, absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(Reserve(count));
    RETURN_IF_ERROR(inner_->Recv(buffer_, count, deadline));  // Returns once it has landed.
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(data, buffer_, count * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  void Abort() override { inner_->Abort(); }

 private:
  absl::Status Reserve(size_t count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    if (count <= capacity_) return absl::OkStatus();
    if (buffer_ != nullptr) CUDA_RETURN_IF_ERROR(cudaFree(buffer_));
    buffer_ = nullptr;
    capacity_ = 0;
    CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer_, count * sizeof(float)));
    capacity_ = count;
    return absl::OkStatus();
  }

  const std::unique_ptr<worker::ActivationChannel> inner_;
  const int device_;
  const cudaStream_t stream_;
  absl::Mutex mu_;
  float* buffer_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t capacity_ ABSL_GUARDED_BY(mu_) = 0;
};

class NcclPeerTransport final : public worker::PeerTransport {
 public:
  NcclPeerTransport(int device, bool host_memory) : device_(device), host_memory_(host_memory) {}
  std::string name() const override { return "nccl"; }
  bool device_memory() const override { return !host_memory_; }
  absl::StatusOr<std::string> NewLinkId() override { return NewNcclUniqueId(); }
  using worker::PeerTransport::Connect;
  absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> Connect(
      const std::string& id, worker::LinkRole role, absl::Time deadline,
      const std::atomic<bool>* cancel) override {
    ASSIGN_OR_RETURN(
        std::unique_ptr<worker::ActivationChannel> channel,
        NewNcclChannel(id, role == worker::LinkRole::kSend ? 0 : 1, device_, deadline, cancel));
    if (!host_memory_) return channel;
    cudaStream_t stream = nullptr;
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return std::unique_ptr<worker::ActivationChannel>(
        new HostStagedChannel(std::move(channel), device_, stream));
  }

 private:
  const int device_;
  const bool host_memory_;
};

}  // namespace

std::shared_ptr<worker::PeerTransport> NewNcclPeerTransport(int device, bool host_memory) {
  return std::make_shared<NcclPeerTransport>(device, host_memory);
}

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return NcclError(r, "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> NewNcclChannel(
    const std::string& unique_id, int rank, int device, absl::Time deadline,
    const std::atomic<bool>* cancel) {
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
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    return NcclError(r, "ncclCommInitRankConfig");
  }
  const std::atomic<bool> never{false};
  if (absl::Status s = WaitFor(comm, nullptr, deadline, cancel != nullptr ? cancel : &never,
                               "ncclCommInitRankConfig");
      !s.ok()) {
    ncclCommAbort(comm);
    if (cancel != nullptr && cancel->load()) return absl::CancelledError("link setup cancelled");
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
