// Peer links: a session's activations travel straight from one stage's worker to the next
// instead of through the coordinator (on GPUs over NCCL, device to device; NewNcclPeerTransport
// in cuda/nccl_channel.h). The coordinator sets a link up per session and adjacent pair of
// stages: it asks the upstream worker for a link id (PeerTransport::NewLinkId, Worker.CreateLink),
// hands the id to both workers (Worker.ConnectLink), and each end joins with its role; control
// (positions, token ids, logits, selections) keeps travelling over the RunChunks streams.
#ifndef QLLM_WORKER_PEER_TRANSPORT_H_
#define QLLM_WORKER_PEER_TRANSPORT_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/activation_channel.h"

namespace qllm::worker {

// Which end of a link a worker holds: the upstream stage sends its output, the downstream stage
// receives its input.
enum class LinkRole { kSend, kReceive };

// Largest link id a transport may issue (an NCCL unique id is 128 bytes).
inline constexpr size_t kMaxLinkIdBytes = 1024;

class PeerTransport {
 public:
  virtual ~PeerTransport() = default;
  // Reported by Worker.Register; the coordinator links stages only when all report the same.
  virtual std::string name() const = 0;
  // Whether Send/Recv of the channels take device memory (NCCL without host staging).
  virtual bool device_memory() const = 0;
  // A fresh link id (at most kMaxLinkIdBytes). The worker that issues it holds the send end.
  virtual absl::StatusOr<std::string> NewLinkId() = 0;
  // This worker's end of link `id`. Blocks until the end is usable: for NCCL until both ends
  // joined. Errors: INVALID_ARGUMENT for an id this transport cannot parse or does not know;
  // ALREADY_EXISTS when the role's end was taken; DEADLINE_EXCEEDED when the peer does not join
  // in time; CANCELLED soon after *cancel turns true (when given: the session closed, e.g.
  // because the other end failed); UNAVAILABLE for transport failures.
  virtual absl::StatusOr<std::unique_ptr<ActivationChannel>> Connect(
      const std::string& id, LinkRole role, absl::Time deadline,
      const std::atomic<bool>* cancel) = 0;
  absl::StatusOr<std::unique_ptr<ActivationChannel>> Connect(const std::string& id, LinkRole role,
                                                             absl::Time deadline) {
    return Connect(id, role, deadline, nullptr);
  }
};

// Links between workers of one process (the embedded coordinator's stages, tests): ids name
// entries of this object, so every worker must use the same transport object. The channels are
// rendezvous channels (NewInProcessChannelPair(0)): Send waits for the receiver, as NCCL's does.
std::shared_ptr<PeerTransport> NewInProcessPeerTransport();

}  // namespace qllm::worker

#endif  // QLLM_WORKER_PEER_TRANSPORT_H_
