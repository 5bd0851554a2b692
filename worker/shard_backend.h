// What a worker runs its layers on: the interface between WorkerCore and a backend that
// executes a contiguous range of a model's layers for many sessions. Two implementations:
//   - the CPU engine (ModelShard, worker/model_shard.h), NewCpuShardBackend below;
//   - the CUDA engine (cuda/device_shard.h, CUDA builds only), selected by the worker's
//     `--backend=cuda`: weights on the device, each session's KV cache or Q-LLM context memory
//     on the device, activations in and out through host memory.
// Both take and return activations in host memory, so the transports between stages (relay
// through the coordinator, peer links) do not depend on the backend.
#ifndef QLLM_WORKER_SHARD_BACKEND_H_
#define QLLM_WORKER_SHARD_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/weights.h"
#include "worker/context_memory.h"
#include "worker/model_shard.h"

namespace qllm::worker {

// The per-session state a backend keeps (a position and, per layer, a KV cache or a context
// memory). Created by its backend and only passed back to it; used by one thread at a time.
class ShardState {
 public:
  virtual ~ShardState() = default;
  // Tokens processed so far (the position of the next token).
  virtual int64_t position() const = 0;
  // Block selections of every layer and chunk so far (when the session records them).
  virtual const std::vector<ChunkSelection>& selections() const = 0;
};

// The contract of each method is ModelShard's method of the same name (worker/model_shard.h),
// with ShardState in place of ShardSession. A backend is thread-safe across sessions: calls for
// different sessions may run concurrently (a backend may serialize them internally). A backend
// may differ from ModelShard where its header says so; the CUDA backend (cuda/device_shard.h):
// stricter session options (exc_block_size at most its chunk, max_cached_block >= topk, block
// and question sizes its kernels support), a Forward that fails leaves the position where it
// was and, in the memory modes, the session unusable (FAILED_PRECONDITION afterwards), and
// bounds: a full-attention session holds at most max_tokens tokens, a memory-mode session
// max_blocks blocks per layer (RESOURCE_EXHAUSTED beyond, from Forward or RestoreSession).
class ShardBackend {
 public:
  virtual ~ShardBackend() = default;

  // "cpu" or "cuda"; for logs and status.
  virtual std::string_view name() const = 0;
  virtual const model::ModelConfig& config() const = 0;
  virtual int32_t layer_begin() const = 0;
  virtual int32_t layer_end() const = 0;
  virtual bool has_embedding() const = 0;
  virtual bool has_head() const = 0;

  // OK when SaveSession and RestoreSession work; else UNIMPLEMENTED saying why, so that a
  // worker refuses to ingest or restore a document before doing any work. Both built-in
  // backends can.
  virtual absl::Status CanSaveSessions() const { return absl::OkStatus(); }

  virtual absl::StatusOr<std::unique_ptr<ShardState>> NewSession(
      const SessionOptions& options) const = 0;
  // Additional error: UNIMPLEMENTED where the backend cannot serialize its sessions.
  virtual absl::StatusOr<std::vector<std::string>> SaveSession(const ShardState& state) const = 0;
  // Additional error: UNIMPLEMENTED where the backend cannot restore sessions.
  virtual absl::StatusOr<std::unique_ptr<ShardState>> RestoreSession(
      const SessionOptions& options, std::span<const std::string> blobs) const = 0;
  virtual absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const = 0;
  // `state` must come from this backend.
  virtual absl::Status Forward(ShardState* state, float* hidden, int64_t n) const = 0;
  virtual absl::Status Logits(const float* hidden, int64_t rows, float* logits) const = 0;
};

// Makes a backend of the weights that the worker loaded (layers, and embedding / head as its
// stage needs). Errors are the backend's (e.g. the CUDA backend's INVALID_ARGUMENT for a device
// index outside the visible ones, none visible included; UNAVAILABLE for a device that fails).
using ShardBackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<ShardBackend>>(model::ModelWeights weights)>;

// The CPU engine as a backend.
std::unique_ptr<ShardBackend> NewCpuShardBackend(std::unique_ptr<ModelShard> shard);

}  // namespace qllm::worker

#endif  // QLLM_WORKER_SHARD_BACKEND_H_
