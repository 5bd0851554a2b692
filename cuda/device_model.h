// A whole-model forward on the device: the CUDA twin of the CPU engine's ModelShard::Forward +
// Logits, in full attention mode (a device KV cache) or with the Q-LLM context memory of every
// layer on the device (DeviceLayerMemory, cuda/device_layer_memory.h: streaming, infllm or
// qllm, as DeviceModelOptions::memory says). Weights are uploaded as bf16 and every projection
// is a bf16 GEMM with fp32 accumulation (cuda/gemm_lt.h); activations, norms, RoPE, attention
// and the residual stream stay in fp32, and each activation is rounded to bf16 only as a GEMM
// input (cuda/cast.h). The token embedding and the norm weights stay in fp32 (the embedding and
// RMSNorm ops read fp32 tables), so a bf16 checkpoint's values are used exactly.
//
// Per layer: RMSNorm -> attention -> o_proj -> residual add -> RMSNorm -> gate/up GEMM ->
// SwiGLU -> down GEMM -> residual add; then the final RMSNorm and the LM head (the embedding
// when tied), logits in fp32. Attention in full mode: Q, K, V GEMMs (K and V written straight
// into the layer's device KV cache) -> RoPE (llama3 scaling included) -> causal GQA attention
// over the cache (the memory attention with the whole sequence as its local window and no
// global keys: cuda/memory_attention_gemm.h for pieces of 16 tokens or more, the scalar kernel
// below that). In the memory modes: one QKV GEMM whose rows go to DeviceLayerMemory::Process,
// which runs the algorithm's steps on the device (retrieval included) without a host round trip.
//
// Written for correctness first: one stream, a scalar attention kernel. CUDA builds only
// (QLLM_HAVE_CUDA); the header includes no CUDA headers.
#ifndef QLLM_CUDA_DEVICE_MODEL_H_
#define QLLM_CUDA_DEVICE_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/weights.h"
#include "worker/block_storage.h"
#include "worker/context_memory.h"
#include "worker/memory_config.h"

namespace qllm::cuda {

struct DeviceModelOptions {
  // Capacity of the device KV cache in tokens: a sequence may hold at most this many tokens
  // (start_pos + n <= max_tokens). Each layer keeps 2 * max_tokens * kv_dim floats.
  // Default: 4096.
  int64_t max_tokens = 4096;
  // Most tokens run through the layers at once; Forward splits longer calls into pieces of
  // this size. Sizes the activation buffers (the logits take max_chunk * vocab floats).
  // Default: 512.
  int64_t max_chunk = 512;
  // Attention. kFull (the default): ordinary causal attention over a device KV cache of
  // max_tokens tokens. Any other mode: every layer keeps a Q-LLM context memory on the device
  // (cuda/device_layer_memory.h) configured by `memory`; Forward then runs pieces of at most
  // min(max_chunk, exc_block_size) tokens (one retrieval each, as the CPU engine's execution
  // chunks), max_tokens is not used, and a document is bounded by max_blocks per layer.
  worker::MemoryConfig memory;
  // Memory modes: the question span (qllm retrieval) and whether it may end after the sinks
  // start filling (worker::SessionOptions::late_question).
  std::optional<worker::QuestionSpan> question;
  bool late_question = false;
  // Memory modes: blocks a layer may hold (LayerMemoryEngineOptions::max_blocks). Default: 1024.
  int64_t max_blocks = 1024;
  // Memory modes: with a storage, blocks are stored there under owner `session` and each layer
  // keeps memory.max_cached_block of them on the device (the tiered mode of
  // cuda/layer_memory_engine.h); without, every block stays on the device. Must outlive the
  // model. Default: null.
  worker::BlockStorage* block_storage = nullptr;
  uint64_t session = 0;
};

// Token sampling on the device (cuda/sampling.h), the arguments of model::Sampler with the draw
// taken on the host (Sampler::NextUniform(); unused when greedy).
struct DeviceSampling {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  double u01 = 0.0;
};

// Per-call options of DeviceModel::Forward.
struct ForwardOptions {
  // Only the last token's logits are computed and copied (logits_host holds vocab floats):
  // what prefill needs, and far less work for a long prompt.
  bool last_only = false;
  // Memory modes: every layer's selection in every execution chunk is appended here (one
  // device synchronization per layer and chunk). Ignored in full mode.
  std::vector<worker::ChunkSelection>* record = nullptr;
  // When set: the next token is sampled on the device from the last token's logits and written
  // to *sample_token (only it comes back; implies last_only). logits_host may then be null, or
  // receives the last row as well.
  const DeviceSampling* sample = nullptr;
  int32_t* sample_token = nullptr;
};

// The layers that `weights` holds ([layer_begin, layer_end) as loaded by model::LoadWeights)
// together with its embedding and head, on the current CUDA device, plus the device KV cache
// of one sequence. A whole-model forward needs all of the model's layers; weights loaded with
// a smaller range run those layers only.
//
// Move-only; a moved-from object may only be destroyed or assigned to. Not thread-safe: one
// call at a time. Every call must run with the device current that Create ran on.
class DeviceModel {
 public:
  // Uploads the weights (projections converted to bf16) and allocates the KV cache and the
  // activation buffers; synchronizes before returning. `weights` may be destroyed afterwards.
  // Errors: INVALID_ARGUMENT for options <= 0; FAILED_PRECONDITION when `weights` lacks the
  // embedding or the head; UNIMPLEMENTED for a head_dim above kMemoryAttentionMaxHeadDim
  // (cuda/memory_attention.h) or an odd head_dim; RESOURCE_EXHAUSTED when the device is out of
  // memory; UNAVAILABLE when no device is usable or on a sticky device error; INTERNAL
  // otherwise.
  static absl::StatusOr<std::unique_ptr<DeviceModel>> Create(
      const model::ModelWeights& weights, const DeviceModelOptions& options = {});

  ~DeviceModel();
  DeviceModel(DeviceModel&&) noexcept;
  DeviceModel& operator=(DeviceModel&&) noexcept;
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  const model::ModelConfig& config() const;
  const DeviceModelOptions& options() const;
  // Tokens of the sequence held in the KV cache (the position of the next token).
  int64_t position() const;

  // Runs the n tokens `ids` (host memory) at positions start_pos .. start_pos + n - 1 and
  // writes their logits to logits_host[n, vocab] (host memory, fp32), row i for token i.
  // start_pos continues the sequence (start_pos == position()) or rewinds it
  // (start_pos < position(): the cached tokens from start_pos on are dropped). Blocks until
  // the logits are on the host. On success position() becomes start_pos + n. An argument
  // error changes nothing; after any other error position() is start_pos (the cache below it
  // is intact unless the error is UNAVAILABLE, which leaves the device unusable).
  // Errors: INVALID_ARGUMENT for n <= 0, null pointers, start_pos outside [0, position()] or a
  // token id outside [0, vocab); RESOURCE_EXHAUSTED when start_pos + n > max_tokens;
  // UNAVAILABLE on a sticky device error (the caller must stop using this device, see
  // cuda/device.h); UNIMPLEMENTED when cuBLASLt has no algorithm for a projection; INTERNAL
  // otherwise. Messages name the layer where one is involved.
  //
  // Memory modes: start_pos must be position() (continue) or 0 (a new document: every layer's
  // memory is reset); anything else is INVALID_ARGUMENT, and RESOURCE_EXHAUSTED comes from a
  // full block pool instead of the KV cache. After an error other than INVALID_ARGUMENT the
  // memory holds a partial chunk: start again at 0.
  absl::Status Forward(const int32_t* ids, int n, int start_pos, float* logits_host,
                       const ForwardOptions& forward = {});
  // Bytes of device memory held by the layers' context memories (0 in full mode).
  int64_t MemoryDeviceBytes() const;
  // Tiered mode: LayerMemoryEngineOptions::overlap_loads of every layer from the next chunk on
  // (default true); for benchmarks of the overlap.
  void SetOverlapLoads(bool on);

 private:
  struct Impl;
  explicit DeviceModel(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_MODEL_H_
