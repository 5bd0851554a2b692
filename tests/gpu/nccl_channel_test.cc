// NCCL activation channel between two communicators (two GPUs: NCCL refuses two ranks on one
// device). Skips without two devices.
#include "cuda/nccl_channel.h"

#include <cuda_runtime.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

int DeviceCount() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Tests named *TwoGpus skip with fewer devices; tests/gpu/run.sh does not count those skips
// as failures on a one-GPU machine.
TEST(NcclChannelTest, SendsActivationsBetweenTwoGpus) {
  if (DeviceCount() < 2) GTEST_SKIP() << "needs two GPUs (found " << DeviceCount() << ")";
  ASSERT_OK_AND_ASSIGN(const std::string id, NewNcclUniqueId());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::unique_ptr<worker::ActivationChannel> ends[2];
  std::thread t0([&] {
    auto c = NewNcclChannel(id, 0, 0, deadline);
    ASSERT_OK(c.status());
    ends[0] = std::move(*c);
  });
  auto c1 = NewNcclChannel(id, 1, 1, deadline);
  t0.join();
  ASSERT_OK(c1.status());
  ends[1] = std::move(*c1);
  const size_t n = 512 * 4096;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 977);
  float *src = nullptr, *dst = nullptr;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&src, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(src, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dst, n * sizeof(float)), cudaSuccess);
  std::thread sender([&] { EXPECT_OK(ends[0]->Send(src, n, deadline)); });
  EXPECT_OK(ends[1]->Recv(dst, n, deadline));
  sender.join();
  std::vector<float> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), dst, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  // A receive nobody answers times out and aborts instead of hanging.
  EXPECT_THAT(ends[1]->Recv(dst, n, absl::Now() + absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  cudaFree(dst);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  cudaFree(src);
}

TEST(NcclChannelTest, RejectsMalformedIds) {
  EXPECT_THAT(NewNcclChannel("short", 0, 0, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// One GPU is enough: a rank whose peer never joins gives up at its deadline.
TEST(NcclPeerTransportTest, AnEndWhosePeerNeverJoinsTimesOut) {
  if (DeviceCount() < 1) GTEST_SKIP() << "needs a GPU";
  auto transport = NewNcclPeerTransport(0, /*host_memory=*/true);
  EXPECT_EQ(transport->name(), "nccl");
  EXPECT_FALSE(transport->device_memory());
  ASSERT_OK_AND_ASSIGN(const std::string id, transport->NewLinkId());
  EXPECT_EQ(id.size(), 128u);
  EXPECT_LE(id.size(), worker::kMaxLinkIdBytes);
  const absl::Time t0 = absl::Now();
  EXPECT_THAT(
      transport->Connect(id, worker::LinkRole::kSend, absl::Now() + absl::Seconds(2)).status(),
      StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(30));
  EXPECT_THAT(transport->Connect("x", worker::LinkRole::kReceive, absl::Now()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// The workers' transport while they run the CPU engine: host memory in, host memory out.
TEST(NcclPeerTransportTest, HostStagedLinkCarriesActivationsAndAbortsTwoGpus) {
  if (DeviceCount() < 2) GTEST_SKIP() << "needs two GPUs (found " << DeviceCount() << ")";
  auto up = NewNcclPeerTransport(0, true), down = NewNcclPeerTransport(1, true);
  ASSERT_OK_AND_ASSIGN(const std::string id, up->NewLinkId());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> send;
  std::thread t([&] { send = up->Connect(id, worker::LinkRole::kSend, deadline); });
  auto receive = down->Connect(id, worker::LinkRole::kReceive, deadline);
  t.join();
  ASSERT_OK(send.status());
  ASSERT_OK(receive.status());
  for (size_t n : {size_t{1}, size_t{4099}, size_t{512 * 4096}}) {
    std::vector<float> host(n), back(n, -1.0f);
    for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>((i * 7) % 1013) - 500.0f;
    std::thread sender([&] { EXPECT_OK((*send)->Send(host.data(), n, deadline)); });
    EXPECT_OK((*receive)->Recv(back.data(), n, deadline));
    sender.join();
    EXPECT_EQ(back, host) << n << " values";
  }
  // Aborting one end releases a receive that waits on it.
  std::vector<float> buf(16);
  std::thread waiter([&] {
    EXPECT_THAT((*receive)->Recv(buf.data(), buf.size(), absl::Now() + absl::Seconds(60)),
                StatusIs(absl::StatusCode::kUnavailable));
  });
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time t0 = absl::Now();
  (*receive)->Abort();
  waiter.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  EXPECT_THAT((*receive)->Recv(buf.data(), buf.size(), deadline),
              StatusIs(absl::StatusCode::kUnavailable));
  (*send)->Abort();
}

}  // namespace
}  // namespace qllm::cuda
