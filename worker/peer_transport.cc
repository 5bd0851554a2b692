#include "worker/peer_transport.h"

#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace qllm::worker {
namespace {

class InProcessPeerTransport final : public PeerTransport {
 public:
  std::string name() const override { return "in-process"; }
  bool device_memory() const override { return false; }

  absl::StatusOr<std::string> NewLinkId() override {
    absl::MutexLock lock(&mu_);
    const uint64_t n = ++next_;
    auto [send, receive] = NewInProcessChannelPair(0);
    Pending& p = pending_[n];
    p.ends[0] = std::move(send);
    p.ends[1] = std::move(receive);
    // Ends never taken (their session failed first) are dropped, oldest first.
    while (pending_.size() > kMaxPending) pending_.erase(pending_.begin());
    return absl::StrCat(kPrefix, n);
  }

  using PeerTransport::Connect;
  absl::StatusOr<std::unique_ptr<ActivationChannel>> Connect(const std::string& id, LinkRole role,
                                                             absl::Time,
                                                             const std::atomic<bool>*) override {
    uint64_t n = 0;
    absl::MutexLock lock(&mu_);
    auto it = pending_.end();
    if (absl::StartsWith(id, kPrefix) && absl::SimpleAtoi(id.substr(kPrefix.size()), &n)) {
      it = pending_.find(n);
    }
    if (it == pending_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown in-process link id \"", id, "\""));
    }
    std::unique_ptr<ActivationChannel>& end = it->second.ends[role == LinkRole::kSend ? 0 : 1];
    if (end == nullptr) {
      return absl::AlreadyExistsError(absl::StrCat("the ",
                                                   role == LinkRole::kSend ? "send" : "receive",
                                                   " end of link \"", id, "\" is taken"));
    }
    std::unique_ptr<ActivationChannel> out = std::move(end);
    if (it->second.ends[0] == nullptr && it->second.ends[1] == nullptr) pending_.erase(it);
    return out;
  }

 private:
  struct Pending {
    std::unique_ptr<ActivationChannel> ends[2];
  };
  static constexpr absl::string_view kPrefix = "in-process:";
  static constexpr size_t kMaxPending = 4096;
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  // Links with an end not yet taken, by number.
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<PeerTransport> NewInProcessPeerTransport() {
  return std::make_shared<InProcessPeerTransport>();
}

}  // namespace qllm::worker
