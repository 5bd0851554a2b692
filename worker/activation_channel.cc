#include "worker/activation_channel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace qllm::worker {
namespace {

// Shared state of a pair: one queue per direction, messages sent and taken per direction, and
// the aborted flag. capacity 0: a send returns once the receiver has taken the message.
struct Link {
  absl::Mutex mu;
  std::deque<std::vector<float>> queue[2] ABSL_GUARDED_BY(mu);
  uint64_t sent[2] ABSL_GUARDED_BY(mu) = {0, 0};
  uint64_t taken[2] ABSL_GUARDED_BY(mu) = {0, 0};
  bool aborted ABSL_GUARDED_BY(mu) = false;
  size_t capacity = 4;
};

class InProcessEnd final : public ActivationChannel {
 public:
  InProcessEnd(std::shared_ptr<Link> link, int side) : link_(std::move(link)), side_(side) {}

  absl::Status Send(const float* data, size_t count, absl::Time deadline) override {
    Link& l = *link_;
    absl::MutexLock lock(&l.mu);
    auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(l.mu) {
      return l.aborted || l.queue[side_].size() < std::max<size_t>(l.capacity, 1);
    };
    if (!l.mu.AwaitWithDeadline(absl::Condition(&room), deadline)) {
      l.aborted = true;
      return absl::DeadlineExceededError("activation send timed out; channel aborted");
    }
    if (l.aborted) return absl::UnavailableError("activation channel aborted");
    l.queue[side_].emplace_back(data, data + count);
    const uint64_t mine = ++l.sent[side_];
    if (l.capacity > 0) return absl::OkStatus();
    auto taken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(l.mu) {
      return l.aborted || l.taken[side_] >= mine;
    };
    if (!l.mu.AwaitWithDeadline(absl::Condition(&taken), deadline)) {
      l.aborted = true;
      return absl::DeadlineExceededError(
          "activation send timed out waiting for the receiver; channel aborted");
    }
    if (l.taken[side_] < mine) return absl::UnavailableError("activation channel aborted");
    return absl::OkStatus();
  }

  absl::Status Recv(float* data, size_t count, absl::Time deadline) override {
    Link& l = *link_;
    std::deque<std::vector<float>>& in = l.queue[1 - side_];
    absl::MutexLock lock(&l.mu);
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(l.mu) { return l.aborted || !in.empty(); };
    if (!l.mu.AwaitWithDeadline(absl::Condition(&ready), deadline)) {
      l.aborted = true;
      return absl::DeadlineExceededError("activation receive timed out; channel aborted");
    }
    if (l.aborted) return absl::UnavailableError("activation channel aborted");
    if (in.front().size() != count) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer sent ", in.front().size(), " values, receiver expects ", count));
    }
    std::memcpy(data, in.front().data(), count * sizeof(float));
    in.pop_front();
    ++l.taken[1 - side_];
    return absl::OkStatus();
  }

  void Abort() override {
    absl::MutexLock lock(&link_->mu);
    link_->aborted = true;
  }

 private:
  const std::shared_ptr<Link> link_;
  const int side_;
};

}  // namespace

std::pair<std::unique_ptr<ActivationChannel>, std::unique_ptr<ActivationChannel>>
NewInProcessChannelPair(size_t capacity) {
  auto link = std::make_shared<Link>();
  link->capacity = capacity;
  return {std::make_unique<InProcessEnd>(link, 0), std::make_unique<InProcessEnd>(link, 1)};
}

}  // namespace qllm::worker
