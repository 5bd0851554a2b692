// Peer links over gRPC, for workers without GPUs (--peer_transport=grpc): the activations of a
// session go from one stage's worker to the next over a Worker.PullActivations stream instead
// of through the coordinator. The sending worker issues the link id
// ("grpc:<its advertised host:port>/<nonce>"), the receiving worker opens the stream to it.
//
// Semantics match NCCL's as the coordinator relies on them: Connect returns once both ends are
// attached (or at its deadline), Send returns once gRPC took the message (or at its deadline,
// which aborts the link), and a dead or aborting peer fails the other end with UNAVAILABLE.
#ifndef QLLM_WORKER_GRPC_PEER_TRANSPORT_H_
#define QLLM_WORKER_GRPC_PEER_TRANSPORT_H_

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "qllm/v1/worker.grpc.pb.h"
#include "worker/peer_transport.h"

namespace qllm::worker {

// Must outlive the channels it returns.
class GrpcPeerTransport final : public PeerTransport {
 public:
  GrpcPeerTransport();
  ~GrpcPeerTransport() override;

  // host:port at which the other workers reach this worker's Worker service. Must be set
  // before the first NewLinkId (the port is known once the server is bound).
  void set_advertise(const std::string& address);

  std::string name() const override { return "grpc"; }
  bool device_memory() const override { return false; }
  // FAILED_PRECONDITION before set_advertise.
  absl::StatusOr<std::string> NewLinkId() override;
  // kSend: the id must be one this transport issued (INVALID_ARGUMENT otherwise, ALREADY_EXISTS
  // when its send end is taken); waits for the receiver to attach. kReceive: opens the stream to
  // the issuing worker and waits for its hello. DEADLINE_EXCEEDED past `deadline`; UNAVAILABLE when
  // the peer cannot be reached.
  using PeerTransport::Connect;
  absl::StatusOr<std::unique_ptr<ActivationChannel>> Connect(
      const std::string& id, LinkRole role, absl::Time deadline,
      const std::atomic<bool>* cancel) override;

  // Serves Worker.PullActivations: attaches the stream to the link and writes its messages
  // until the link ends. NOT_FOUND for an unknown link id, ALREADY_EXISTS when attached.
  grpc::Status Serve(const std::string& link_id, grpc::ServerContext* context,
                     grpc::ServerWriter<v1::ActivationMessage>* writer);

  struct Outbox;

 private:
  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address);

  absl::Mutex mu_;
  std::string advertise_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t salt_ = 0;
  // Links issued here whose send end or stream is alive, by id (unclaimed ones are dropped
  // after kUnclaimedLinkTtl).
  std::map<std::string, std::shared_ptr<Outbox>> outboxes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_GRPC_PEER_TRANSPORT_H_
