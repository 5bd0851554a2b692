// ActivationChannel over NCCL: device-to-device activations between adjacent pipeline stages
// (one GPU per worker). The coordinator creates the unique id (NewNcclUniqueId) and hands it to
// both workers over gRPC; each creates its end with its rank (0 sends downstream first, 1
// receives). Every wait is bounded: a peer that dies or stalls makes the call fail with
// DEADLINE_EXCEEDED / UNAVAILABLE after ncclCommAbort, and the worker stays up (its device
// context is still healthy; the session is lost). CUDA builds only.
#ifndef QLLM_CUDA_NCCL_CHANNEL_H_
#define QLLM_CUDA_NCCL_CHANNEL_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/activation_channel.h"
#include "worker/peer_transport.h"

namespace qllm::cuda {

// A fresh ncclUniqueId as bytes (NCCL_UNIQUE_ID_BYTES of them).
absl::StatusOr<std::string> NewNcclUniqueId();

// The channel end of `rank` (0 or 1) in a two-rank communicator on `device`.
// INVALID_ARGUMENT for a malformed id or rank; DEADLINE_EXCEEDED when the peer does not join
// before `deadline`; UNAVAILABLE for NCCL / CUDA failures.
// CANCELLED soon after *cancel (when given) turns true while the peer has not joined.
absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> NewNcclChannel(
    const std::string& unique_id, int rank, int device, absl::Time deadline,
    const std::atomic<bool>* cancel = nullptr);

// The NCCL peer transport of a worker on `device` (worker/peer_transport.h, name "nccl"): link
// ids are NCCL unique ids, issued by the upstream worker (which hosts NCCL's bootstrap root for
// that link), each link a two-rank communicator (the send end is rank 0). With `host_memory`
// the channels take host memory and stage it through a device buffer (what both worker backends
// hand over today, worker/shard_backend.h); without, Send/Recv take device memory.
std::shared_ptr<worker::PeerTransport> NewNcclPeerTransport(int device, bool host_memory);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_NCCL_CHANNEL_H_
