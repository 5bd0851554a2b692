// Weights of a contiguous range of layers (a worker's shard), converted to fp32 for the CPU
// backend. The layer projections are fused: wqkv = [q; k; v] and w13 = [gate; up], rows in the
// Hugging Face [out_features, in_features] order, so each is one GEMM.
#ifndef QLLM_MODEL_WEIGHTS_H_
#define QLLM_MODEL_WEIGHTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace qllm::model {

struct LayerWeights {
  std::vector<float> attn_norm;  // [hidden]
  std::vector<float> wqkv;       // [q_dim + 2 * kv_dim, hidden]
  std::vector<float> wo;         // [hidden, q_dim]
  std::vector<float> ffn_norm;   // [hidden]
  std::vector<float> w13;        // [2 * intermediate, hidden]: gate rows, then up rows
  std::vector<float> w2;         // [hidden, intermediate]
};

// Which part of the model to load. Default: the whole model.
struct LoadOptions {
  // First layer to load. Default: 0.
  int32_t layer_begin = 0;
  // One past the last layer to load; -1 means num_layers. Default: -1.
  int32_t layer_end = -1;
  // Load the token embedding (the first pipeline stage needs it). Default: true.
  bool load_embedding = true;
  // Load the final norm and LM head (the last stage needs them). Default: true.
  bool load_head = true;
};

struct ModelWeights {
  ModelConfig config;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;
  std::vector<float> embedding;      // [vocab, hidden]; empty unless loaded
  std::vector<LayerWeights> layers;  // layers [layer_begin, layer_end)
  std::vector<float> final_norm;     // [hidden]; empty unless the head is loaded
  // [vocab, hidden]; empty unless loaded. With tied embeddings this is a copy of the embedding
  // when the embedding itself is not loaded, and empty (use `embedding`) when it is.
  std::vector<float> lm_head;

  bool has_embedding() const { return !embedding.empty(); }
  bool has_head() const { return !final_norm.empty(); }
  // The LM head matrix [vocab, hidden], or nullptr when the head is not loaded.
  const float* head_matrix() const;
};

// Loads the part of the checkpoint in `dir` that `options` names. Every tensor is checked for
// presence and shape. Errors: those of Checkpoint::Open and Checkpoint::ReadFloat, and
// INVALID_ARGUMENT for a layer range outside [0, num_layers).
absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const LoadOptions& options = {});

}  // namespace qllm::model

#endif  // QLLM_MODEL_WEIGHTS_H_
