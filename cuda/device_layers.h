// The pieces both device engines are made of: DeviceModel (cuda/device_model.h, one sequence,
// whole model) and the worker's CUDA shard backend (cuda/device_shard.h, many sessions, a layer
// range). One code path runs the layers for both, so the GPU tests of DeviceModel hold the
// shard backend's arithmetic too.
//   - DeviceWeights: a layer range's weights on the device (projections as bf16), with the
//     embedding and the final norm + head when the range has them. Shared, read-only.
//   - DeviceSequenceLayer: one sequence's attention state in one layer: a device KV cache (full
//     attention) or a DeviceLayerMemory (the Q-LLM context memory).
//   - PieceRunner: a stream, GEMM handles and the activation buffers of one piece of at most
//     max_piece tokens; runs embedding, the layers and the head on its stream.
//
// Numerics are DeviceModel's (see cuda/device_model.h): bf16 GEMM inputs with fp32
// accumulation, everything else fp32. CUDA builds only; includes no CUDA headers.
#ifndef QLLM_CUDA_DEVICE_LAYERS_H_
#define QLLM_CUDA_DEVICE_LAYERS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/device.h"
#include "cuda/device_layer_memory.h"
#include "cuda/gemm_lt.h"
#include "cuda/memory_attention_gemm.h"
#include "model/config.h"
#include "model/weights.h"
#include "worker/context_memory.h"

namespace qllm::cuda {

// UNIMPLEMENTED for shapes the device kernels do not support: a head_dim above
// kMemoryAttentionMaxHeadDim or an odd head_dim.
absl::Status CheckDeviceShapes(const model::ModelConfig& config);

struct DeviceLayerWeights {
  DeviceBuffer<float> attn_norm;  // [hidden]
  DeviceBuffer<uint16_t> wqkv;    // bf16 [q_dim + 2 * kv_dim, hidden]: q rows, k rows, v rows
  DeviceBuffer<uint16_t> wo;      // bf16 [hidden, q_dim]
  DeviceBuffer<float> ffn_norm;   // [hidden]
  DeviceBuffer<uint16_t> w13;     // bf16 [2 * intermediate, hidden]: gate rows, then up rows
  DeviceBuffer<uint16_t> w2;      // bf16 [hidden, intermediate]
};

struct DeviceWeights {
  model::ModelConfig config;
  int32_t layer_begin = 0;
  DeviceBuffer<float> embedding;   // [vocab, hidden]; empty without the embedding
  DeviceBuffer<float> final_norm;  // [hidden]; empty without the head
  DeviceBuffer<uint16_t> head;     // bf16 [vocab, hidden]; empty without the head
  DeviceBuffer<double> inv_freq;   // [head_dim / 2]
  std::vector<DeviceLayerWeights> layers;

  bool has_embedding() const { return !embedding.empty(); }
  bool has_head() const { return !head.empty(); }

  // Uploads `weights` on `stream` (not synchronized). Errors: CheckDeviceShapes'; the
  // device's.
  static absl::StatusOr<std::unique_ptr<DeviceWeights>> Upload(const model::ModelWeights& weights,
                                                               Stream stream);
};

// One sequence's attention state in one layer: k_cache / v_cache ([capacity, kv_dim], keys
// rotated at their positions) in full mode, `memory` in the memory modes.
struct DeviceSequenceLayer {
  DeviceBuffer<float> k_cache;
  DeviceBuffer<float> v_cache;
  std::unique_ptr<DeviceLayerMemory> memory;
};

// Grows every layer's KV cache of `layers` to hold at least `tokens` tokens (keeping the first
// `valid` of each), at least doubling, at most `max_tokens`. RESOURCE_EXHAUSTED when `tokens`
// exceeds max_tokens or the device is out of memory (the caches are then unchanged).
absl::Status EnsureKvCapacity(std::span<DeviceSequenceLayer> layers, int64_t kv_dim, int64_t valid,
                              int64_t tokens, int64_t max_tokens, Stream stream);

class PieceRunner {
 public:
  // Buffers for pieces of at most max_piece tokens of `config`'s shapes; `memory_modes` and
  // `full_mode` say which attention paths it must serve (both for a shard backend), `head`
  // whether Head is used (the logits buffer takes max_piece * vocab floats).
  static absl::StatusOr<std::unique_ptr<PieceRunner>> Create(const model::ModelConfig& config,
                                                             int64_t max_piece, bool full_mode,
                                                             bool memory_modes, bool head);

  Stream stream() const { return stream_.get(); }
  int64_t max_piece() const { return max_piece_; }
  // Waits for the work enqueued on stream(); returns its first error.
  absl::Status Synchronize() const { return stream_.Synchronize(); }
  // The residual stream of the current piece, [max_piece, hidden] on the device.
  const DeviceBuffer<float>& hidden() const { return hidden_; }
  // Logits of the last Head call, [rows, vocab] on the device ([max_piece, vocab] allocated).
  const DeviceBuffer<float>& logits() const { return logits_; }

  // Starts a piece of n tokens at pos0 .. pos0 + n - 1: uploads the positions and writes
  // hidden() from token ids (h_ids, host memory; needs the embedding) or from host activations
  // (h_hidden [n, hidden]). Exactly one of h_ids and h_hidden is set; ids are not checked here.
  absl::Status Begin(const DeviceWeights& w, const int32_t* h_ids, const float* h_hidden, int64_t n,
                     int64_t pos0);
  // Runs every layer of `w` over hidden() with the sequence state `seq` (one entry per layer;
  // full mode needs caches holding pos0 + n tokens). `record`: memory modes' selections.
  absl::Status Layers(const DeviceWeights& w, std::span<DeviceSequenceLayer> seq, int64_t n,
                      int64_t pos0, std::vector<worker::ChunkSelection>* record);
  // logits()[rows, vocab] = head(final_norm(hidden()[first_row, first_row + rows))).
  absl::Status Head(const DeviceWeights& w, int64_t rows, int64_t first_row);
  // Like Head, on host activations h_hidden[rows, hidden] (rows <= max_piece).
  absl::Status HeadOfHost(const DeviceWeights& w, const float* h_hidden, int64_t rows);

 private:
  PieceRunner() = default;
  absl::Status Gemm(const uint16_t* a, const uint16_t* b, float* c, int64_t m, int64_t n,
                    int64_t k);
  absl::Status ToBf16(const float* x, int64_t rows, int64_t cols);
  absl::Status NormToBf16(const float* weight, int64_t rows, int64_t first_row);
  absl::Status Attention(const DeviceLayerWeights& w, DeviceSequenceLayer& seq, int64_t n,
                         int64_t pos0);
  absl::Status MemoryAttention(const DeviceLayerWeights& w, DeviceSequenceLayer& seq, int64_t n,
                               int64_t pos0, std::vector<worker::ChunkSelection>* record);
  absl::Status Layer(const DeviceLayerWeights& w, DeviceSequenceLayer& seq, int64_t n, int64_t pos0,
                     std::vector<worker::ChunkSelection>* record);

  model::ModelConfig config_;
  int64_t max_piece_ = 0;
  CudaStream stream_;
  std::unique_ptr<GemmLt> gemm_;
  // Full mode: the attention of pieces of >= kGemmAttentionMinQueries tokens (SGEMM path).
  std::unique_ptr<MemoryAttentionGemm> gemm_attention_;
  DeviceBuffer<uint8_t> gemm_workspace_;  // [GemmLt::kDefaultWorkspaceBytes]

  DeviceBuffer<int32_t> ids_;        // [n]
  DeviceBuffer<int64_t> positions_;  // [n]
  DeviceBuffer<float> hidden_;       // [n, hidden]: the residual stream
  DeviceBuffer<float> norm_;         // [n, hidden]
  DeviceBuffer<uint16_t> gemm_in_;   // bf16 [n, max(hidden, q_dim, intermediate)]
  DeviceBuffer<float> q_;            // Full mode: [n, q_dim], rotated
  DeviceBuffer<float> qkv_;          // Memory modes: [n, q_dim + 2 * kv_dim], pre-RoPE
  DeviceBuffer<float> attn_;         // [n, q_dim]
  DeviceBuffer<float> proj_;         // [n, hidden]: o_proj / down_proj output
  DeviceBuffer<float> gate_up_;      // [n, 2 * intermediate]
  DeviceBuffer<float> mlp_;          // [n, intermediate]
  DeviceBuffer<float> logits_;       // [n, vocab]
  DeviceBuffer<float> attn_workspace_;
  std::vector<int64_t> h_positions_;  // Host staging of positions_.
  const double* inv_freq_ = nullptr;  // The weights' RoPE frequencies during Layers.
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_LAYERS_H_
