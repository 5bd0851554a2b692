// The worker's CUDA backend (worker/shard_backend.h, `qllm-worker --backend=cuda`): a layer
// range of a checkpoint, with the embedding and / or the head as the stage needs, on one
// device, serving many sessions.
//   - The weights are uploaded once (projections as bf16) and shared by every session.
//   - Each session keeps its attention state on the device: in full mode a KV cache per layer
//     that grows with the sequence (doubling, up to max_tokens); in the memory modes one
//     DeviceLayerMemory per layer in tiered mode, whose blocks go to the session's block
//     storage (the worker's RocksDB memory store) and of which max_cached_block per layer stay
//     on the device. Retrieval runs on the device (cuda/layer_memory_engine.h).
//   - SaveSession / RestoreSession write and read the CPU engine's blobs (worker/model_shard.h:
//     the layer header, then worker::KvCache's or worker::LayerMemory's blob; the memories'
//     blocks stay in the block storage), so a document ingested on one backend can be asked on
//     the other. Saving waits for the device and copies the state to the host.
//   - Activations enter and leave through host memory (Forward reads and writes hidden[n,
//     hidden_size] on the host), as the transports between stages carry them. A Forward uploads
//     each execution chunk's activations, runs all of the shard's layers on the device, and
//     downloads the result: two copies of n * hidden_size floats per call, no per-layer round
//     trip.
// The layers run through the same code as DeviceModel (cuda/device_layers.h), which
// tests/gpu/device_model_gpu_test.cc holds to the CPU engine; tests/gpu/device_shard_gpu_test.cc
// holds this backend to the CPU backend stage by stage.
//
// Limits (first version):
//   - Calls are serialized: one session's chunk at a time on the device (a mutex), with one set
//     of activation buffers. Sessions interleave between calls.
//   - After an error inside a memory-mode Forward the session's memory may hold a partial
//     chunk; later calls on it fail with FAILED_PRECONDITION. In full mode a failed Forward
//     leaves the position where it was and the session usable.
//   - Session options beyond the CPU engine's checks: exc_block_size <= max_chunk, and (the
//     tiered DeviceLayerMemory) max_cached_block >= topk; block_size and question spans are
//     bounded by the kernels (UNIMPLEMENTED above kTopMeanMaxRows, cuda/memory_ops.h).
//   - Full attention: besides the KV caches (2 * tokens * kv_dim floats per layer, grown by
//     doubling, old and new held during a copy), prefill's attention scratch holds heads *
//     max_chunk * tokens floats, up to 1.25x that (cuda/memory_attention_gemm.h; 8-10 GiB for
//     Llama-3-8B at 128K),
//     shared by the sessions: budget the device for both at max_tokens.
//   - Device memory per memory-mode session and layer: the block cache (max_cached_block
//     blocks of K and V, and pinned staging) and the working arrays, allocated when the session
//     opens, plus one representative vector (q_dim floats) per block, in an array that doubles
//     as the document grows (from 64 blocks). A session holds at most max_blocks * block_size
//     tokens per layer (RESOURCE_EXHAUSTED beyond, or when the device runs out). E.g.
//     Llama-3-8B (q_dim 4096, 32 layers): 0.5 MiB of vectors per 1K tokens at block_size 128
//     (1 GiB at 2M tokens); the built-in model (q_dim 192, 4 layers, block_size 16): 48 MiB at
//     1M tokens.
//
// CUDA builds only (QLLM_HAVE_CUDA); the header includes no CUDA headers.
#ifndef QLLM_CUDA_DEVICE_SHARD_H_
#define QLLM_CUDA_DEVICE_SHARD_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "model/weights.h"
#include "worker/shard_backend.h"

namespace qllm::cuda {

struct CudaShardOptions {
  // The CUDA device (index among the visible ones). Default: 0.
  int device = 0;
  // Full mode: most tokens a session may hold (its KV cache grows up to this). Default: 128K.
  int64_t max_tokens = int64_t{1} << 17;
  // Full mode: most tokens run through the layers at once; longer calls are split. Sizes the
  // activation buffers (the head's logits take max_chunk * vocab floats). Memory modes run
  // execution chunks of exc_block_size, which must not exceed it. Default: 512.
  int64_t max_chunk = 512;
  // Memory modes: most blocks per layer and session (their representative vectors stay on the
  // device, heads * head_dim floats each, allocated as the document grows): a session holds at
  // most max_blocks * block_size tokens. Default: 131072 (2M tokens at block_size 16, 16M at
  // 128).
  int64_t max_blocks = int64_t{1} << 17;
};

// Uploads `weights` to options.device and returns the backend.
// Errors: INVALID_ARGUMENT for options <= 0 or a device outside the visible ones (no device
// visible included: the message says so); UNIMPLEMENTED for shapes the kernels do not support
// (cuda/device_layers.h CheckDeviceShapes); RESOURCE_EXHAUSTED when the device is out of
// memory; UNAVAILABLE on a sticky device error.
absl::StatusOr<std::unique_ptr<worker::ShardBackend>> NewCudaShardBackend(
    const model::ModelWeights& weights, const CudaShardOptions& options = {});

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_SHARD_H_
