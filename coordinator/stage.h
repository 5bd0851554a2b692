// One pipeline stage as the coordinator sees it: control calls plus the activation transport of
// a session. Two implementations: InProcessStage (a WorkerCore in this process; activations are
// handed over in memory) and GrpcStage (a qllm-worker process; activations travel on the
// session's RunChunks stream). With peer links (worker/peer_transport.h: NCCL between GPUs) the
// activations skip the coordinator and the chunk streams carry control only.
#ifndef QLLM_COORDINATOR_STAGE_H_
#define QLLM_COORDINATOR_STAGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/worker_core.h"

namespace qllm::coordinator {

struct StageIdentity {
  std::string worker_id;
  uint64_t incarnation = 0;
  std::optional<worker::ShardSpec> shard;  // What it serves now.
  std::string peer_transport;              // Its peer transport; empty when none.
  std::string unhealthy;                   // Why it refuses engine work; empty when healthy.
  std::string backend;                     // "cpu" or "cuda"; empty before a shard is loaded.
};

// The chunks of one session through one stage, in order. Not thread-safe; one user at a time.
class ChunkStream {
 public:
  virtual ~ChunkStream() = default;
  // Runs one chunk in place (see worker::Activations).
  virtual absl::Status Run(worker::Activations* chunk) = 0;
  // Makes a blocked or later Run fail with CANCELLED (thread-safe).
  virtual void Cancel() = 0;
};

class Stage {
 public:
  virtual ~Stage() = default;
  // Where the stage lives ("in-process:N" or host:port).
  virtual std::string address() const = 0;

  // Every call takes a deadline; past it, DEADLINE_EXCEEDED. A stage that cannot be reached
  // gives UNAVAILABLE.
  virtual absl::StatusOr<StageIdentity> Register(absl::Time deadline) = 0;
  virtual absl::StatusOr<worker::ShardInfo> LoadShard(const worker::ShardSpec& spec,
                                                      absl::Time deadline) = 0;
  virtual absl::Status OpenSession(const worker::SessionSpec& spec, absl::Time deadline) = 0;
  virtual absl::Status CloseSession(uint64_t session_id, absl::Time deadline) = 0;
  virtual absl::StatusOr<std::unique_ptr<ChunkStream>> OpenChunkStream(uint64_t session_id,
                                                                       absl::Time deadline) = 0;
  virtual absl::Status PersistDocument(uint64_t session_id, uint64_t document_key,
                                       absl::Time deadline) = 0;
  virtual absl::StatusOr<int64_t> RestoreDocument(uint64_t document_key,
                                                  const worker::SessionSpec& spec,
                                                  absl::Time deadline) = 0;
  virtual absl::Status DeleteDocument(uint64_t document_key, absl::Time deadline) = 0;
  virtual absl::StatusOr<std::vector<uint64_t>> ListDocuments(absl::Time deadline) = 0;
  virtual absl::StatusOr<worker::WorkerStatsSnapshot> GetStats(absl::Time deadline) = 0;
  // Peer links of a session (worker/peer_transport.h, Worker.CreateLink / ConnectLink).
  virtual absl::StatusOr<std::string> CreateLink(uint64_t session_id, absl::Time deadline) = 0;
  virtual absl::Status ConnectLink(uint64_t session_id, const std::string& link_id,
                                   worker::LinkRole role, absl::Time deadline) = 0;
};

// A stage backed by a WorkerCore in this process. `core` must outlive the stage. Its chunks run
// with `threads` OpenMP threads (0: the process default).
std::unique_ptr<Stage> NewInProcessStage(worker::WorkerCore* core, int index, int threads = 0);

// A stage backed by the qllm-worker at `address` (host:port), over one gRPC channel.
std::unique_ptr<Stage> NewGrpcStage(const std::string& address);

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_STAGE_H_
