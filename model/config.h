// The architecture of a Llama-family checkpoint, parsed from its Hugging Face config.json.
#ifndef QLLM_MODEL_CONFIG_H_
#define QLLM_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qllm::model {

// Llama-3.1 frequency-dependent RoPE scaling ("rope_type": "llama3").
struct Llama3RopeScaling {
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  // "LlamaForCausalLM" or "MistralForCausalLM".
  std::string architecture;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  // Key/value heads; num_heads % num_kv_heads == 0 (GQA group = num_heads / num_kv_heads).
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t vocab_size = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool has_llama3_scaling = false;
  Llama3RopeScaling llama3_scaling;
  // When true the checkpoint has no lm_head.weight; the embedding matrix is the head.
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 0;
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;
  // "float32", "float16" or "bfloat16" as declared (informational: tensors carry their dtype).
  std::string torch_dtype;

  int32_t q_dim() const { return num_heads * head_dim; }
  int32_t kv_dim() const { return num_kv_heads * head_dim; }
  int32_t group_size() const { return num_heads / num_kv_heads; }
  // Parameters in the checkpoint (embedding, layers, norm, head unless tied).
  int64_t NumParameters() const;
};

// Parses the text of a config.json. Errors: INVALID_ARGUMENT for malformed JSON, missing or
// out-of-range fields; UNIMPLEMENTED for architectures or features the engine does not run
// (unknown rope_scaling types, Mistral v0.1 sliding-window attention).
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);

// Reads and parses `<model_dir>/config.json`. Adds NOT_FOUND when the file is missing.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace qllm::model

#endif  // QLLM_MODEL_CONFIG_H_
