// Point-to-point activations between adjacent pipeline stages, worker to worker: the transport
// a GPU deployment uses so that activations never leave the devices (NCCL, cuda/nccl_channel.h),
// with an in-process implementation for CPU tests. The coordinator's own path to the stages is
// coordinator::ChunkStream (in-process or the RunChunks gRPC stream); see docs/architecture.md.
#ifndef QLLM_WORKER_ACTIVATION_CHANNEL_H_
#define QLLM_WORKER_ACTIVATION_CHANNEL_H_

#include <cstddef>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace qllm::worker {

// One end of a channel. Messages arrive in order; Send and Recv sizes must match. Send and Recv
// may be called from different threads; Abort from any thread.
class ActivationChannel {
 public:
  virtual ~ActivationChannel() = default;
  // Hands `count` floats to the peer. CPU channels take host memory, NCCL device memory.
  // DEADLINE_EXCEEDED past `deadline` (the channel is then aborted), UNAVAILABLE once aborted or
  // when the peer failed.
  virtual absl::Status Send(const float* data, size_t count, absl::Time deadline) = 0;
  // Receives exactly `count` floats. INVALID_ARGUMENT when the peer sent another size.
  virtual absl::Status Recv(float* data, size_t count, absl::Time deadline) = 0;
  // Fails every pending and later call of this end with UNAVAILABLE. In-process channels abort
  // both ends; an NCCL or gRPC peer learns when its own end fails or times out (the coordinator
  // therefore closes the session on every worker after a failure).
  virtual void Abort() = 0;
};

// Two connected in-process ends; at most `capacity` messages wait in each direction. Capacity 0
// is a rendezvous: Send returns once the receiver has taken the message, as NCCL's
// point-to-point send does, so a driver that would deadlock over NCCL times out here too.
std::pair<std::unique_ptr<ActivationChannel>, std::unique_ptr<ActivationChannel>>
NewInProcessChannelPair(size_t capacity = 4);

}  // namespace qllm::worker

#endif  // QLLM_WORKER_ACTIVATION_CHANNEL_H_
