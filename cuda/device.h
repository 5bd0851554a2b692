// Move-only RAII owners of CUDA resources: device memory, pinned host memory, streams, events
// and cuBLASLt handles. The header includes no CUDA headers (the handle types are forward
// declared), so it compiles everywhere; the definitions exist only in CUDA builds
// (QLLM_HAVE_CUDA).
//
// Errors. Every creation and every operation returns absl::Status through CudaErrorToStatus
// (cuda/cuda_check.h) or CublasStatusToStatus (cuda/cublas_check.h):
//   RESOURCE_EXHAUSTED  out of device or pinned host memory;
//   UNAVAILABLE         a sticky device error (illegal address, launch failure, ECC, no
//                       device, ...): the CUDA context of this process is unusable. The worker
//                       that sees UNAVAILABLE from any call here must mark itself unhealthy and
//                       report UNAVAILABLE to the coordinator (which moves the stage elsewhere)
//                       instead of retrying on this device or exiting;
//   INVALID_ARGUMENT    a copy outside the buffer;
//   INTERNAL            any other CUDA error.
// Destructors never fail: a failed free/destroy is logged and ignored (the process keeps
// serving; a sticky error shows up again on the next checked call).
//
// The header is C++17 (it is included from .cu files, which nvcc compiles as C++17).
//
// Every resource belongs to the device that was current (cudaSetDevice) when it was created;
// callers that use several devices select the right one before each call. None of these types
// is safe for concurrent mutation; concurrent const calls are fine.
#ifndef QLLM_CUDA_DEVICE_H_
#define QLLM_CUDA_DEVICE_H_

#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/stream.h"

struct CUevent_st;
struct cublasLtContext;

namespace qllm::cuda {

using Event = CUevent_st*;
using CublasLt = cublasLtContext*;

namespace internal {

// Untyped halves of the templates below (defined in device.cc). Allocation of 0 bytes returns
// null without touching the device.
absl::StatusOr<void*> DeviceAlloc(size_t bytes);
void DeviceFree(void* d_ptr) noexcept;
absl::StatusOr<void*> PinnedAlloc(size_t bytes);
void PinnedFree(void* h_ptr) noexcept;
enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };
// cudaMemcpyAsync of `bytes` on `stream`; no-op for 0 bytes.
absl::Status CopyAsync(void* dst, const void* src, size_t bytes, CopyKind kind, Stream stream);
absl::Status SynchronizeStream(Stream stream);
// INVALID_ARGUMENT unless [offset, offset + count) lies inside [0, size).
absl::Status CheckRange(size_t offset, size_t count, size_t size, const char* what);

template <void (*Free)(void*) noexcept>
struct MemoryDeleter {
  void operator()(void* p) const noexcept { Free(p); }
};

}  // namespace internal

// `size` elements of T in device memory (cudaMalloc), freed on destruction. Move-only; a
// moved-from buffer is empty (null, size 0). The contents start uninitialized.
template <typename T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  // RESOURCE_EXHAUSTED when the device is out of memory; UNAVAILABLE on a sticky device error.
  // A buffer of 0 elements holds a null pointer and touches no device.
  static absl::StatusOr<DeviceBuffer> Create(size_t size) {
    absl::StatusOr<void*> p = internal::DeviceAlloc(size * sizeof(T));
    if (!p.ok()) return p.status();
    return DeviceBuffer(static_cast<T*>(*p), size);
  }

  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::move(other.ptr_)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    ptr_ = std::move(other.ptr_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // The device pointer (null when empty). Owned by this object.
  T* data() const { return static_cast<T*>(ptr_.get()); }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  // Enqueues a copy of `count` elements from `h_src` into elements [offset, offset + count)
  // on `stream`. From pinned memory the copy is asynchronous: `h_src` must stay valid and
  // unchanged until `stream` has passed the copy. From pageable memory CUDA stages the data
  // before returning. INVALID_ARGUMENT when the range exceeds the buffer.
  absl::Status Upload(const T* h_src, size_t count, Stream stream, size_t offset = 0) {
    if (absl::Status s = internal::CheckRange(offset, count, size_, "DeviceBuffer::Upload");
        !s.ok()) {
      return s;
    }
    return internal::CopyAsync(data() + offset, h_src, count * sizeof(T),
                               internal::CopyKind::kHostToDevice, stream);
  }
  absl::Status Upload(const std::vector<T>& host, Stream stream, size_t offset = 0) {
    return Upload(host.data(), host.size(), stream, offset);
  }

  // Enqueues a copy of elements [offset, offset + count) into `h_dst` on `stream`. The data is
  // in `h_dst` once `stream` has passed the copy (synchronize the stream or an event recorded
  // after it). INVALID_ARGUMENT when the range exceeds the buffer.
  absl::Status Download(T* h_dst, size_t count, Stream stream, size_t offset = 0) const {
    if (absl::Status s = internal::CheckRange(offset, count, size_, "DeviceBuffer::Download");
        !s.ok()) {
      return s;
    }
    return internal::CopyAsync(h_dst, data() + offset, count * sizeof(T),
                               internal::CopyKind::kDeviceToHost, stream);
  }

  // Enqueues a copy of elements [src_offset, src_offset + count) of `src` (another buffer on
  // the same device) into elements [offset, offset + count) of this one. INVALID_ARGUMENT when
  // either range exceeds its buffer.
  absl::Status CopyFrom(const DeviceBuffer& src, size_t count, Stream stream, size_t offset = 0,
                        size_t src_offset = 0) {
    if (absl::Status s = internal::CheckRange(offset, count, size_, "DeviceBuffer::CopyFrom");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            internal::CheckRange(src_offset, count, src.size(), "DeviceBuffer::CopyFrom source");
        !s.ok()) {
      return s;
    }
    return internal::CopyAsync(data() + offset, src.data() + src_offset, count * sizeof(T),
                               internal::CopyKind::kDeviceToDevice, stream);
  }

  // Download of the whole buffer followed by a synchronization of `stream` (tests, tools).
  absl::StatusOr<std::vector<T>> ToHost(Stream stream) const {
    std::vector<T> host(size_);
    if (absl::Status s = Download(host.data(), host.size(), stream); !s.ok()) return s;
    if (absl::Status s = internal::SynchronizeStream(stream); !s.ok()) return s;
    return host;
  }

 private:
  DeviceBuffer(T* p, size_t size) : ptr_(p), size_(size) {}

  std::unique_ptr<void, internal::MemoryDeleter<internal::DeviceFree>> ptr_;
  size_t size_ = 0;
};

// `size` elements of T in page-locked host memory (cudaMallocHost), so that copies to and from
// the device run asynchronously; freed on destruction. Move-only; a moved-from buffer is empty.
template <typename T>
class PinnedHostBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  // RESOURCE_EXHAUSTED when pinned memory runs out; UNAVAILABLE on a sticky device error.
  static absl::StatusOr<PinnedHostBuffer> Create(size_t size) {
    absl::StatusOr<void*> p = internal::PinnedAlloc(size * sizeof(T));
    if (!p.ok()) return p.status();
    return PinnedHostBuffer(static_cast<T*>(*p), size);
  }

  PinnedHostBuffer() = default;
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept
      : ptr_(std::move(other.ptr_)), size_(std::exchange(other.size_, 0)) {}
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept {
    ptr_ = std::move(other.ptr_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;

  // The host pointer (null when empty). Owned by this object.
  T* data() const { return static_cast<T*>(ptr_.get()); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) const { return data()[i]; }

 private:
  PinnedHostBuffer(T* p, size_t size) : ptr_(p), size_(size) {}

  std::unique_ptr<void, internal::MemoryDeleter<internal::PinnedFree>> ptr_;
  size_t size_ = 0;
};

// An owned CUDA stream, created cudaStreamNonBlocking (it does not synchronize with the legacy
// default stream) and destroyed on destruction. Move-only; a moved-from object holds a null
// stream. Named CudaStream (and CudaEvent), as in style.md, because `Stream` (cuda/stream.h) is
// already the raw handle type that Launch* functions take; get() returns one.
class CudaStream {
 public:
  // UNAVAILABLE on a sticky device error (or no device); INTERNAL otherwise.
  static absl::StatusOr<CudaStream> Create();

  CudaStream() = default;
  CudaStream(CudaStream&&) noexcept = default;
  CudaStream& operator=(CudaStream&&) noexcept = default;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  // The stream, for Launch* calls. Owned by this object.
  Stream get() const { return stream_.get(); }
  // Blocks until all work enqueued so far has finished; returns the first error of that work
  // (asynchronous kernel faults surface here as UNAVAILABLE).
  absl::Status Synchronize() const;

 private:
  struct Deleter {
    void operator()(Stream s) const noexcept;
  };
  explicit CudaStream(Stream s) : stream_(s) {}

  std::unique_ptr<CUstream_st, Deleter> stream_;
};

// An owned CUDA event, destroyed on destruction. Move-only.
class CudaEvent {
 public:
  // `timing`: false creates the event with cudaEventDisableTiming (cheaper record/wait; the
  // default for synchronization); true allows ElapsedMillis.
  static absl::StatusOr<CudaEvent> Create(bool timing = false);

  CudaEvent() = default;
  CudaEvent(CudaEvent&&) noexcept = default;
  CudaEvent& operator=(CudaEvent&&) noexcept = default;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  Event get() const { return event_.get(); }
  // Captures the work enqueued on `stream` so far.
  absl::Status Record(Stream stream) const;
  // Makes `stream` wait (on the device, without blocking the host) for the recorded work.
  absl::Status StreamWait(Stream stream) const;
  // Blocks the host until the recorded work has finished.
  absl::Status Synchronize() const;
  // True when the recorded work has finished (or nothing was recorded), false while pending.
  absl::StatusOr<bool> IsDone() const;
  // Milliseconds between `start` and this event; both created with timing = true, recorded
  // and finished. INTERNAL otherwise.
  absl::StatusOr<float> ElapsedMillis(const CudaEvent& start) const;

 private:
  struct Deleter {
    void operator()(Event e) const noexcept;
  };
  explicit CudaEvent(Event e) : event_(e) {}

  std::unique_ptr<CUevent_st, Deleter> event_;
};

// An owned cuBLASLt handle (cublasLtCreate), destroyed on destruction. Move-only. cuBLASLt
// handles may be shared by threads as long as each concurrent matmul has its own workspace.
class CublasLtHandle {
 public:
  // UNAVAILABLE when the library cannot initialize the device (includes no device);
  // RESOURCE_EXHAUSTED when it cannot allocate; INTERNAL otherwise.
  static absl::StatusOr<CublasLtHandle> Create();

  CublasLtHandle() = default;
  CublasLtHandle(CublasLtHandle&&) noexcept = default;
  CublasLtHandle& operator=(CublasLtHandle&&) noexcept = default;
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;

  CublasLt get() const { return handle_.get(); }

 private:
  struct Deleter {
    void operator()(CublasLt h) const noexcept;
  };
  explicit CublasLtHandle(CublasLt h) : handle_(h) {}

  std::unique_ptr<cublasLtContext, Deleter> handle_;
};

// Devices visible to this process (cudaGetDeviceCount); 0 when there is no driver or no
// device (never an error for that).
int VisibleDeviceCount();

// Makes `device` current for the calling thread (cudaSetDevice). INVALID_ARGUMENT for an
// index outside [0, VisibleDeviceCount()); UNAVAILABLE on a sticky device error.
absl::Status UseDevice(int device);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_H_
