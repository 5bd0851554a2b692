// The RAII owners of cuda/device.h: allocation, host <-> device round trips, move semantics,
// events across streams and the error codes. Tests that need a device skip without one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include "cuda/device.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

class DeviceGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    absl::StatusOr<CudaStream> stream = CudaStream::Create();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_.emplace(*std::move(stream));
  }

  Stream stream() const { return stream_->get(); }

  std::optional<CudaStream> stream_;
};

std::vector<float> Iota(size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST_F(DeviceGpuTest, UploadDownloadRoundTrip) {
  const std::vector<float> host = Iota(1000, 0.5f);
  ASSERT_OK_AND_ASSIGN(auto d_buf, DeviceBuffer<float>::Create(host.size()));
  EXPECT_NE(d_buf.data(), nullptr);
  EXPECT_EQ(d_buf.size(), 1000u);
  EXPECT_EQ(d_buf.bytes(), 4000u);
  ASSERT_OK(d_buf.Upload(host, stream()));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> back, d_buf.ToHost(stream()));
  EXPECT_EQ(back, host);

  // A sub-range at an offset, through pinned memory (asynchronous until the sync).
  ASSERT_OK_AND_ASSIGN(auto h_pinned, PinnedHostBuffer<float>::Create(10));
  for (size_t i = 0; i < 10; ++i) h_pinned[i] = -static_cast<float>(i);
  ASSERT_OK(d_buf.Upload(h_pinned.data(), 10, stream(), /*offset=*/990));
  ASSERT_OK_AND_ASSIGN(auto h_out, PinnedHostBuffer<float>::Create(20));
  ASSERT_OK(d_buf.Download(h_out.data(), 20, stream(), /*offset=*/980));
  ASSERT_OK(stream_->Synchronize());
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(h_out[i], host[980 + i]);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(h_out[10 + i], -static_cast<float>(i));
}

TEST_F(DeviceGpuTest, CopiesOutsideTheBufferAreInvalidArguments) {
  ASSERT_OK_AND_ASSIGN(auto d_buf, DeviceBuffer<int32_t>::Create(8));
  const std::vector<int32_t> nine(9, 1);
  EXPECT_THAT(d_buf.Upload(nine, stream()), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(d_buf.Upload(nine.data(), 2, stream(), /*offset=*/7),
              StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<int32_t> out(4);
  EXPECT_THAT(d_buf.Download(out.data(), 4, stream(), /*offset=*/5),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(d_buf.Download(out.data(), 4, stream(), /*offset=*/4));
  ASSERT_OK(stream_->Synchronize());
}

TEST_F(DeviceGpuTest, MoveTransfersOwnership) {
  ASSERT_OK_AND_ASSIGN(auto a, DeviceBuffer<float>::Create(64));
  const std::vector<float> host = Iota(64, 1.0f);
  ASSERT_OK(a.Upload(host, stream()));
  float* const ptr = a.data();
  DeviceBuffer<float> b = std::move(a);
  EXPECT_EQ(b.data(), ptr);
  EXPECT_EQ(b.size(), 64u);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from state is defined.
  EXPECT_EQ(a.size(), 0u);
  EXPECT_TRUE(a.empty());
  // Move assignment frees the target's old memory and takes the source's.
  ASSERT_OK_AND_ASSIGN(auto c, DeviceBuffer<float>::Create(3));
  c = std::move(b);
  EXPECT_EQ(c.data(), ptr);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> back, c.ToHost(stream()));
  EXPECT_EQ(back, host);

  ASSERT_OK_AND_ASSIGN(auto pinned, PinnedHostBuffer<int32_t>::Create(5));
  int32_t* const h_ptr = pinned.data();
  PinnedHostBuffer<int32_t> pinned2 = std::move(pinned);
  EXPECT_EQ(pinned2.data(), h_ptr);
  EXPECT_EQ(pinned.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(pinned.size(), 0u);

  const Stream s = stream_->get();
  CudaStream moved = *std::move(stream_);
  EXPECT_EQ(moved.get(), s);
  EXPECT_EQ(stream_->get(), nullptr);  // NOLINT(bugprone-use-after-move)
  stream_ = std::move(moved);
}

TEST_F(DeviceGpuTest, EmptyBuffersHoldNull) {
  ASSERT_OK_AND_ASSIGN(auto d_empty, DeviceBuffer<float>::Create(0));
  EXPECT_EQ(d_empty.data(), nullptr);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> back, d_empty.ToHost(stream()));
  EXPECT_TRUE(back.empty());
  ASSERT_OK_AND_ASSIGN(auto h_empty, PinnedHostBuffer<float>::Create(0));
  EXPECT_EQ(h_empty.data(), nullptr);
}

TEST_F(DeviceGpuTest, OutOfDeviceMemoryIsResourceExhausted) {
  // 1 PiB: more than any device has.
  EXPECT_THAT(DeviceBuffer<char>::Create(size_t{1} << 50),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // The failed allocation leaves the context usable and no stale "last error" behind (which
  // the next launch check would report).
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_OK_AND_ASSIGN(auto d_buf, DeviceBuffer<char>::Create(16));
  EXPECT_NE(d_buf.data(), nullptr);
}

TEST_F(DeviceGpuTest, EventOrdersWorkAcrossStreams) {
  ASSERT_OK_AND_ASSIGN(CudaStream other, CudaStream::Create());
  ASSERT_OK_AND_ASSIGN(CudaEvent start, CudaEvent::Create(/*timing=*/true));
  ASSERT_OK_AND_ASSIGN(CudaEvent uploaded, CudaEvent::Create(/*timing=*/true));
  ASSERT_OK_AND_ASSIGN(auto h_in, PinnedHostBuffer<float>::Create(1 << 20));
  for (size_t i = 0; i < h_in.size(); ++i) h_in[i] = static_cast<float>(i);
  ASSERT_OK_AND_ASSIGN(auto d_buf, DeviceBuffer<float>::Create(h_in.size()));
  ASSERT_OK(start.Record(stream()));
  ASSERT_OK(d_buf.Upload(h_in.data(), h_in.size(), stream()));
  ASSERT_OK(uploaded.Record(stream()));
  // The download on the other stream waits for the upload on the device.
  ASSERT_OK(uploaded.StreamWait(other.get()));
  ASSERT_OK_AND_ASSIGN(auto h_out, PinnedHostBuffer<float>::Create(h_in.size()));
  ASSERT_OK(d_buf.Download(h_out.data(), h_out.size(), other.get()));
  ASSERT_OK(other.Synchronize());
  for (size_t i = 0; i < h_out.size(); i += 4097) ASSERT_EQ(h_out[i], static_cast<float>(i));
  ASSERT_OK(uploaded.Synchronize());
  EXPECT_THAT(uploaded.IsDone(), ::qllm::testing::IsOkAndHolds(true));
  ASSERT_OK_AND_ASSIGN(const float ms, uploaded.ElapsedMillis(start));
  EXPECT_GE(ms, 0.0f);
  // Timing needs timing events.
  ASSERT_OK_AND_ASSIGN(CudaEvent plain, CudaEvent::Create());
  ASSERT_OK(plain.Record(stream()));
  ASSERT_OK(plain.Synchronize());
  EXPECT_THAT(plain.ElapsedMillis(start), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(DeviceGpuTest, CublasLtHandleIsCreatedAndMoved) {
  ASSERT_OK_AND_ASSIGN(CublasLtHandle h, CublasLtHandle::Create());
  EXPECT_NE(h.get(), nullptr);
  const CublasLt raw = h.get();
  CublasLtHandle h2 = std::move(h);
  EXPECT_EQ(h2.get(), raw);
  EXPECT_EQ(h.get(), nullptr);  // NOLINT(bugprone-use-after-move)
}

// Neither an empty buffer nor a range check touches the device, so these run everywhere.
TEST(DeviceBufferWithoutDevice, EmptyBufferChecksRanges) {
  DeviceBuffer<float> empty;
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
  const float x = 1.0f;
  EXPECT_THAT(empty.Upload(&x, 1, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(empty.Upload(&x, 0, nullptr));  // Nothing to copy: no CUDA call.
  ASSERT_OK_AND_ASSIGN(auto zero, DeviceBuffer<float>::Create(0));
  EXPECT_EQ(zero.data(), nullptr);
}

}  // namespace
}  // namespace qllm::cuda
