#include "worker/grpc_peer_transport.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "worker/rpc_convert.h"
#include "worker/worker_service.h"

namespace qllm::worker {

// The sending side of a link: messages waiting for the PullActivations stream.
struct GrpcPeerTransport::Outbox {
  absl::Mutex mu;
  bool attached ABSL_GUARDED_BY(mu) = false;
  bool aborted ABSL_GUARDED_BY(mu) = false;
  std::string why ABSL_GUARDED_BY(mu);  // Why it was aborted.
  std::deque<std::string> queue ABSL_GUARDED_BY(mu);
  uint64_t sent ABSL_GUARDED_BY(mu) = 0;
  uint64_t written ABSL_GUARDED_BY(mu) = 0;
  bool send_taken ABSL_GUARDED_BY(mu) = false;  // Connect(kSend) claimed it.
  const absl::Time created = absl::Now();

  void Abort(absl::string_view reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!aborted) why = std::string(reason);
    aborted = true;
  }
};

namespace {

constexpr absl::string_view kScheme = "grpc:";
// How often a waiting stream handler checks whether its client went away.
constexpr absl::Duration kPoll = absl::Milliseconds(100);
// A link nobody connected to this long is dropped (its session failed during setup).
constexpr absl::Duration kUnclaimedLinkTtl = absl::Minutes(10);

class SendEnd final : public ActivationChannel {
 public:
  // `forget` drops the link from the transport's table.
  SendEnd(std::shared_ptr<GrpcPeerTransport::Outbox> box, std::function<void()> forget)
      : box_(std::move(box)), forget_(std::move(forget)) {}
  ~SendEnd() override {
    Abort();
    forget_();
  }

  absl::Status Send(const float* data, size_t count, absl::Time deadline) override {
    GrpcPeerTransport::Outbox& b = *box_;
    absl::MutexLock lock(&b.mu);
    if (b.aborted) return absl::UnavailableError(absl::StrCat("peer link aborted: ", b.why));
    b.queue.emplace_back(reinterpret_cast<const char*>(data), count * sizeof(float));
    const uint64_t mine = ++b.sent;
    auto written = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(b.mu) {
      return b.aborted || b.written >= mine;
    };
    if (!b.mu.AwaitWithDeadline(absl::Condition(&written), deadline)) {
      b.Abort("send timed out");
      return absl::DeadlineExceededError(
          "activation send timed out waiting for the receiving worker; link aborted");
    }
    if (b.written < mine) return absl::UnavailableError(absl::StrCat("peer link aborted: ", b.why));
    return absl::OkStatus();
  }
  absl::Status Recv(float*, size_t, absl::Time) override {
    return absl::FailedPreconditionError("the send end of a link receives nothing");
  }
  void Abort() override {
    absl::MutexLock lock(&box_->mu);
    box_->Abort("aborted by the sending worker");
  }

 private:
  const std::shared_ptr<GrpcPeerTransport::Outbox> box_;
  const std::function<void()> forget_;
};

class ReceiveEnd final : public ActivationChannel {
 public:
  ReceiveEnd() = default;
  ~ReceiveEnd() override {
    Abort();
    if (reader_thread_.joinable()) reader_thread_.join();
  }

  // Opens the stream and waits for the hello.
  absl::Status Start(v1::Worker::Stub* stub, const std::string& id, absl::Time deadline,
                     const std::atomic<bool>* cancel) {
    v1::PullActivationsRequest request;
    request.set_link_id(id);
    reader_ = stub->PullActivations(&context_, request);
    reader_thread_ = std::thread([this] { ReadLoop(); });
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hello_ || ended_; };
    while (
        !mu_.AwaitWithDeadline(absl::Condition(&ready), std::min(deadline, absl::Now() + kPoll))) {
      if (cancel != nullptr && cancel->load()) {
        context_.TryCancel();
        return absl::CancelledError("link setup cancelled");
      }
      if (absl::Now() >= deadline) {
        context_.TryCancel();
        return absl::DeadlineExceededError("the sending worker did not attach the link in time");
      }
    }
    if (!hello_) return end_status_;
    return absl::OkStatus();
  }

  absl::Status Send(const float*, size_t, absl::Time) override {
    return absl::FailedPreconditionError("the receive end of a link sends nothing");
  }
  absl::Status Recv(float* data, size_t count, absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    if (aborted_) return end_status_;
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_ || !queue_.empty(); };
    if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) {
      ended_ = true;
      end_status_ = absl::UnavailableError("peer link aborted: receive timed out");
      context_.TryCancel();
      return absl::DeadlineExceededError("activation receive timed out; link aborted");
    }
    if (queue_.empty()) return end_status_;
    const std::string& m = queue_.front();
    if (m.size() != count * sizeof(float)) {
      return absl::InvalidArgumentError(absl::StrCat("peer sent ", m.size() / sizeof(float),
                                                     " values, receiver expects ", count));
    }
    std::memcpy(data, m.data(), m.size());
    queue_.pop_front();
    return absl::OkStatus();
  }
  void Abort() override {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
    if (!ended_) {
      ended_ = true;
      end_status_ = absl::UnavailableError("peer link aborted by the receiving worker");
    }
    context_.TryCancel();
  }

 private:
  void ReadLoop() {
    v1::ActivationMessage m;
    while (reader_->Read(&m)) {
      absl::MutexLock lock(&mu_);
      if (m.hello()) {
        hello_ = true;
      } else {
        queue_.push_back(std::move(*m.mutable_data()));
      }
    }
    const grpc::Status s = reader_->Finish();
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    if (!hello_ && s.error_code() == grpc::StatusCode::NOT_FOUND) {
      end_status_ = absl::InvalidArgumentError("the sending worker does not know this link id");
    } else if (!hello_ && !s.ok()) {
      end_status_ = FromGrpc(s);  // E.g. UNAVAILABLE: the worker cannot be reached.
    } else {
      end_status_ = absl::UnavailableError(
          absl::StrCat("peer link closed by the sending worker: ",
                       s.ok() ? std::string("stream ended") : s.error_message()));
    }
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::ActivationMessage>> reader_;
  std::thread reader_thread_;
  absl::Mutex mu_;
  bool hello_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;  // By this end: queued messages are dropped.
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
};

// "grpc:host:port/nonce" -> host:port. False when malformed.
bool ParseId(const std::string& id, std::string* address) {
  if (!absl::StartsWith(id, kScheme)) return false;
  const size_t slash = id.rfind('/');
  if (slash == std::string::npos || slash <= kScheme.size() || slash + 1 == id.size()) {
    return false;
  }
  *address = id.substr(kScheme.size(), slash - kScheme.size());
  return true;
}

}  // namespace

GrpcPeerTransport::GrpcPeerTransport() {
  std::random_device rd;
  salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

GrpcPeerTransport::~GrpcPeerTransport() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, box] : outboxes_) {
    absl::MutexLock box_lock(&box->mu);
    box->Abort("worker shutting down");
  }
}

void GrpcPeerTransport::set_advertise(const std::string& address) {
  absl::MutexLock lock(&mu_);
  advertise_ = address;
}

absl::StatusOr<std::string> GrpcPeerTransport::NewLinkId() {
  absl::MutexLock lock(&mu_);
  if (advertise_.empty()) {
    return absl::FailedPreconditionError("the gRPC peer transport has no advertised address");
  }
  const absl::Time stale = absl::Now() - kUnclaimedLinkTtl;
  for (auto it = outboxes_.begin(); it != outboxes_.end();) {
    Outbox& b = *it->second;
    absl::MutexLock box_lock(&b.mu);
    const bool unclaimed = !b.send_taken && !b.attached && b.created < stale;
    it = unclaimed ? outboxes_.erase(it) : std::next(it);
  }
  std::string id = absl::StrCat(kScheme, advertise_, "/", absl::Hex(salt_), "-", ++next_);
  outboxes_.emplace(id, std::make_shared<Outbox>());
  return id;
}

std::shared_ptr<grpc::Channel> GrpcPeerTransport::ChannelTo(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<grpc::Channel>& c = channels_[address];
  if (c == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxRpcMessageBytes);
    args.SetMaxSendMessageSize(kMaxRpcMessageBytes);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    c = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  return c;
}

absl::StatusOr<std::unique_ptr<ActivationChannel>> GrpcPeerTransport::Connect(
    const std::string& id, LinkRole role, absl::Time deadline, const std::atomic<bool>* cancel) {
  std::string address;
  if (!ParseId(id, &address)) {
    return absl::InvalidArgumentError(absl::StrCat("malformed gRPC link id \"", id, "\""));
  }
  if (role == LinkRole::kSend) {
    std::shared_ptr<Outbox> box;
    {
      absl::MutexLock lock(&mu_);
      auto it = outboxes_.find(id);
      if (it == outboxes_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("link \"", id, "\" was not issued by this worker"));
      }
      box = it->second;
    }
    auto forget = [this, id] {
      absl::MutexLock lock(&mu_);
      outboxes_.erase(id);
    };
    absl::Status status;
    {
      absl::MutexLock lock(&box->mu);
      if (box->send_taken) {
        return absl::AlreadyExistsError(absl::StrCat("the send end of link \"", id, "\" is taken"));
      }
      box->send_taken = true;
      auto attached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(box->mu) {
        return box->attached || box->aborted;
      };
      while (!box->mu.AwaitWithDeadline(absl::Condition(&attached),
                                        std::min(deadline, absl::Now() + kPoll))) {
        if (cancel != nullptr && cancel->load()) {
          box->Abort("link setup cancelled");
          status = absl::CancelledError("link setup cancelled");
          break;
        }
        if (absl::Now() >= deadline) {
          box->Abort("the receiving worker did not attach in time");
          status =
              absl::DeadlineExceededError("the receiving worker did not attach the link in time");
          break;
        }
      }
      if (status.ok() && box->aborted) {
        status = absl::UnavailableError(absl::StrCat("peer link aborted: ", box->why));
      }
    }
    if (!status.ok()) {
      forget();
      return status;
    }
    return std::unique_ptr<ActivationChannel>(new SendEnd(box, std::move(forget)));
  }
  auto stub = v1::Worker::NewStub(ChannelTo(address));
  auto end = std::make_unique<ReceiveEnd>();
  if (absl::Status s = end->Start(stub.get(), id, deadline, cancel); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("link to ", address, ": ", s.message()));
  }
  return std::unique_ptr<ActivationChannel>(std::move(end));
}

grpc::Status GrpcPeerTransport::Serve(const std::string& link_id, grpc::ServerContext* context,
                                      grpc::ServerWriter<v1::ActivationMessage>* writer) {
  std::shared_ptr<Outbox> box;
  {
    absl::MutexLock lock(&mu_);
    auto it = outboxes_.find(link_id);
    if (it == outboxes_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown link id");
    }
    box = it->second;
  }
  // Whatever ends the stream ends the link, and the link leaves the table.
  struct Cleanup {
    GrpcPeerTransport* t;
    const std::string& id;
    std::shared_ptr<Outbox> box;
    ~Cleanup() {
      {
        absl::MutexLock lock(&box->mu);
        box->Abort("the stream to the receiving worker ended");
      }
      absl::MutexLock lock(&t->mu_);
      t->outboxes_.erase(id);
    }
  };
  {
    absl::MutexLock lock(&box->mu);
    if (box->attached) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "link already attached");
    }
    box->attached = true;
  }
  Cleanup cleanup{this, link_id, box};
  {
    absl::MutexLock lock(&box->mu);
    if (box->aborted) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, absl::StrCat("link aborted: ", box->why));
    }
  }
  v1::ActivationMessage hello;
  hello.set_hello(true);
  if (!writer->Write(hello)) return grpc::Status(grpc::StatusCode::CANCELLED, "receiver gone");
  v1::ActivationMessage m;
  while (true) {
    {
      absl::MutexLock lock(&box->mu);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(box->mu) {
        return box->aborted || !box->queue.empty();
      };
      while (!box->mu.AwaitWithTimeout(absl::Condition(&ready), kPoll)) {
        if (context->IsCancelled()) {
          box->Abort("the receiving worker went away");
          return grpc::Status(grpc::StatusCode::CANCELLED, "receiver gone");
        }
      }
      if (box->queue.empty()) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            absl::StrCat("link aborted: ", box->why));
      }
      m.set_data(std::move(box->queue.front()));
      box->queue.pop_front();
    }
    const bool ok = writer->Write(m);
    absl::MutexLock lock(&box->mu);
    if (!ok) {
      box->Abort("writing to the receiving worker failed");
      return grpc::Status(grpc::StatusCode::CANCELLED, "receiver gone");
    }
    ++box->written;
  }
}

}  // namespace qllm::worker
