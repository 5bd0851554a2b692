// Helpers for GPU tests: device detection, a move-only device buffer, a stream, and an
// elementwise comparison that reports the first mismatches. Header-only; include it only from
// targets that link CUDA::cudart (tests/gpu/).
#ifndef QLLM_TESTS_TESTUTIL_CUDA_TEST_UTIL_H_
#define QLLM_TESTS_TESTUTIL_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "cuda/cuda_check.h"
#include "cuda/stream.h"

namespace qllm::testing {

// Returns an empty string when at least one CUDA device is usable, else why not (no driver,
// no device, ...). Clears the error it provokes so later calls start clean.
inline std::string NoCudaDeviceReason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // Resets the non-sticky error left by the failed query.
    return absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorName(err), ": ",
                        cudaGetErrorString(err));
  }
  if (count == 0) return "cudaGetDeviceCount returned 0 devices";
  return "";
}

// Skips the current test (from a TEST body or SetUp) when no CUDA device is present.
#define QLLM_SKIP_WITHOUT_CUDA_DEVICE()                                        \
  do {                                                                         \
    const std::string qllm_no_device_ = ::qllm::testing::NoCudaDeviceReason(); \
    if (!qllm_no_device_.empty()) GTEST_SKIP() << qllm_no_device_;             \
  } while (0)

// Device memory for n elements of T, freed on destruction. Move-only.
template <typename T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  // Errors: RESOURCE_EXHAUSTED when cudaMalloc runs out of memory, INTERNAL or UNAVAILABLE for
  // other CUDA errors. A buffer of 0 elements holds a null pointer.
  static absl::StatusOr<DeviceBuffer> Create(size_t n) {
    void* p = nullptr;
    if (n > 0) CUDA_RETURN_IF_ERROR(cudaMalloc(&p, n * sizeof(T)));
    return DeviceBuffer(static_cast<T*>(p), n);
  }
  // Create() followed by a copy of `host` to the device.
  static absl::StatusOr<DeviceBuffer> FromHost(std::span<const T> host) {
    absl::StatusOr<DeviceBuffer> buf = Create(host.size());
    if (!buf.ok()) return buf.status();
    if (!host.empty()) {
      CUDA_RETURN_IF_ERROR(
          cudaMemcpy(buf->get(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
    }
    return buf;
  }

  DeviceBuffer(DeviceBuffer&&) noexcept = default;
  DeviceBuffer& operator=(DeviceBuffer&&) noexcept = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_.get(); }
  size_t size() const { return size_; }

  // Copies the whole buffer to the host (synchronous; waits for work on the legacy default
  // stream, hence for blocking streams too).
  absl::StatusOr<std::vector<T>> ToHost() const {
    std::vector<T> host(size_);
    if (size_ > 0) {
      CUDA_RETURN_IF_ERROR(
          cudaMemcpy(host.data(), get(), size_ * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return host;
  }

 private:
  struct Deleter {
    void operator()(T* p) const {
      const cudaError_t err = cudaFree(p);
      if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaFree: " << cudaGetErrorString(err);
    }
  };

  DeviceBuffer(T* p, size_t n) : ptr_(p), size_(n) {}

  std::unique_ptr<T, Deleter> ptr_;
  size_t size_ = 0;
};

// A blocking CUDA stream, destroyed on destruction. Move-only.
class TestStream {
 public:
  static absl::StatusOr<TestStream> Create() {
    cudaStream_t s = nullptr;
    CUDA_RETURN_IF_ERROR(cudaStreamCreate(&s));
    return TestStream(s);
  }

  cuda::Stream get() const { return stream_.get(); }
  absl::Status Synchronize() const {
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(get()));
    return absl::OkStatus();
  }

 private:
  struct Deleter {
    void operator()(cudaStream_t s) const {
      const cudaError_t err = cudaStreamDestroy(s);
      if (err != cudaSuccess) QLLM_LOG(ERROR) << "cudaStreamDestroy: " << cudaGetErrorString(err);
    }
  };

  explicit TestStream(cudaStream_t s) : stream_(s) {}

  std::unique_ptr<std::remove_pointer_t<cudaStream_t>, Deleter> stream_;
};

// Succeeds when |actual[i] - expected[i]| <= atol + rtol * |expected[i]| for every i (NaN
// never matches). On failure lists the mismatch count, the worst error and the first
// `max_report` mismatches as index, expected and actual.
inline ::testing::AssertionResult AllClose(std::span<const float> expected,
                                           std::span<const float> actual, double atol, double rtol,
                                           int max_report = 8) {
  if (expected.size() != actual.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: expected " << expected.size() << ", actual " << actual.size();
  }
  size_t mismatches = 0;
  double worst = 0.0;
  std::string first;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    const double err = std::abs(a - e);
    if (err <= atol + rtol * std::abs(e)) continue;  // False for NaN.
    if (static_cast<int>(mismatches) < max_report) {
      absl::StrAppend(&first, "\n  [", i, "] expected ", e, ", actual ", a);
    }
    ++mismatches;
    if (!(err <= worst)) worst = err;
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << mismatches << " of " << expected.size() << " elements differ (atol " << atol
         << ", rtol " << rtol << ", worst abs error " << worst << "); first:" << first;
}

// The largest |x| in `v`: the logit scale the parity bounds are relative to.
inline double MaxAbs(std::span<const float> v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// How many rows of width `width` have the same argmax (greedy token) in `a` and `b`.
inline int ArgmaxAgreement(std::span<const float> a, std::span<const float> b, int64_t width) {
  auto argmax = [width](std::span<const float> v, int64_t row) {
    const auto r = v.subspan(row * width, width);
    return std::max_element(r.begin(), r.end()) - r.begin();
  };
  int agree = 0;
  const int64_t rows = static_cast<int64_t>(std::min(a.size(), b.size())) / width;
  for (int64_t t = 0; t < rows; ++t) agree += argmax(a, t) == argmax(b, t) ? 1 : 0;
  return agree;
}

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_CUDA_TEST_UTIL_H_
