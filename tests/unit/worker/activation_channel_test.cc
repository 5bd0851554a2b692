#include "worker/activation_channel.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;

TEST(ActivationChannelTest, MessagesArriveInOrderAcrossThreads) {
  auto [a, b] = NewInProcessChannelPair(2);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::thread sender([&, a = a.get()] {
    for (int i = 0; i < 50; ++i) {
      std::vector<float> msg(100 + i, static_cast<float>(i));
      ASSERT_OK(a->Send(msg.data(), msg.size(), deadline));
    }
  });
  for (int i = 0; i < 50; ++i) {
    std::vector<float> got(100 + i);
    ASSERT_OK(b->Recv(got.data(), got.size(), deadline));
    EXPECT_EQ(got.front(), static_cast<float>(i));
    EXPECT_EQ(got.back(), static_cast<float>(i));
  }
  sender.join();
}

TEST(ActivationChannelTest, SizeMismatchTimeoutAndAbort) {
  auto [a, b] = NewInProcessChannelPair(1);
  std::vector<float> msg(8, 1.0f), got(4);
  ASSERT_OK(a->Send(msg.data(), msg.size(), absl::InfiniteFuture()));
  EXPECT_THAT(b->Recv(got.data(), got.size(), absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // The queue is full (capacity 1): a send must time out, which aborts the channel.
  EXPECT_THAT(a->Send(msg.data(), msg.size(), absl::Now() + absl::Milliseconds(20)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(b->Recv(got.data(), 8, absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kUnavailable));
  auto [c, d] = NewInProcessChannelPair();
  std::thread waiter([&, d = d.get()] {
    std::vector<float> buf(4);
    EXPECT_THAT(d->Recv(buf.data(), 4, absl::InfiniteFuture()),
                StatusIs(absl::StatusCode::kUnavailable));
  });
  absl::SleepFor(absl::Milliseconds(20));
  c->Abort();  // Wakes the blocked peer.
  waiter.join();
}

TEST(ActivationChannelTest, ARendezvousSendWaitsForTheReceiver) {
  auto [a, b] = NewInProcessChannelPair(0);
  std::vector<float> msg(4, 2.0f), got(4);
  // Nobody receives: the send times out (and aborts), as an NCCL send would.
  EXPECT_THAT(a->Send(msg.data(), msg.size(), absl::Now() + absl::Milliseconds(30)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  auto [c, d] = NewInProcessChannelPair(0);
  std::atomic<bool> sent{false};
  std::thread sender([&, c = c.get()] {
    ASSERT_OK(c->Send(msg.data(), msg.size(), absl::Now() + absl::Seconds(30)));
    sent = true;
  });
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_FALSE(sent.load()) << "returned before the receiver took the message";
  ASSERT_OK(d->Recv(got.data(), got.size(), absl::Now() + absl::Seconds(30)));
  sender.join();
  EXPECT_EQ(got, msg);
}

}  // namespace
}  // namespace qllm::worker
