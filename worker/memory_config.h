// Configuration of the context memory (docs/qllm-algorithm.md): the attention mode and the
// Q-LLM / InfLLM parameters, under the reference implementation's names. Reads the reference's
// YAML config files unchanged.
#ifndef QLLM_WORKER_MEMORY_CONFIG_H_
#define QLLM_WORKER_MEMORY_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace qllm::worker {

enum class AttentionMode {
  kFull,       // Ordinary causal attention over every past token (the baseline).
  kStreaming,  // StreamingLLM: n_init sinks + n_local window; nothing retrieved.
  kInfLlm,     // Block retrieval by relevance to the current chunk (question_weight ignored).
  kQllm,       // Retrieval by relevance to the chunk and to the question (w > 0).
};

// "full", "streaming", "infllm", "qllm".
const char* AttentionModeName(AttentionMode mode);
// Accepts the names above and the reference's aliases ("origin", "stream-llm", "inf-llm",
// "q-llm"). INVALID_ARGUMENT otherwise.
absl::StatusOr<AttentionMode> ParseAttentionMode(const std::string& name);

struct MemoryConfig {
  // Default: kFull.
  AttentionMode mode = AttentionMode::kFull;
  // Attention-sink tokens kept forever. Default: 128.
  int32_t n_init = 128;
  // Sliding local window in tokens. Default: 512.
  int32_t n_local = 512;
  // Tokens per memory block. Default: 64.
  int32_t block_size = 64;
  // Memory blocks retrieved per execution chunk. Default: 8.
  int32_t topk = 8;
  // Representative tokens per block (and question tokens for the question vector). Default: 4.
  int32_t repr_topk = 4;
  // Prefill execution chunk: one retrieval per chunk; must be <= n_local. Default: 512.
  int32_t exc_block_size = 512;
  // Blocks per layer kept in the fast (device) tier. Default: 32.
  int32_t max_cached_block = 32;
  // Weight w of the question term in block scores (qllm mode); qllm with w = 0 is infllm.
  // Default: 4.
  float question_weight = 4.0f;
  // Pending tokens older than the local window are global keys (the specification's step 3).
  // Streaming mode never attends them; turning this off in infllm mode with topk = 0 gives
  // streaming, which the invariant tests use. Not a reference YAML key. Default: true.
  bool far_pending_global = true;
  // Tokens per forward call during prefill; a multiple of exc_block_size. Default: 8192.
  int32_t chunk_size = 8192;
  // RoPE base the config was written for (`base`); when set it must equal the checkpoint's
  // rope_theta. Default: unset.
  std::optional<double> rope_base;
  // Chat template named by the config (`conv_type`), e.g. "llama-3-inst". Default: empty.
  std::string conv_type;
  // Longest prompt in tokens (`max_len`). The reference truncates longer prompts; this engine
  // rejects them instead (INVALID_ARGUMENT), whatever `truncation` says. Default: no limit.
  int64_t max_len = INT64_MAX;

  // INVALID_ARGUMENT naming the first inconsistent value (e.g. exc_block_size > n_local,
  // topk < 0, a negative question_weight, qllm mode without attention sinks).
  absl::Status Validate() const;
  // Validate() plus the checks against a model: rope base.
  absl::Status ValidateForModel(double rope_theta) const;
  // True for the modes with a context memory (everything but kFull).
  bool uses_memory() const { return mode != AttentionMode::kFull; }
  // The effective question weight: 0 except in qllm mode.
  float effective_question_weight() const {
    return mode == AttentionMode::kQllm ? question_weight : 0.0f;
  }
};

// Parses the text of a reference YAML config: a `model:` map (type, n_init, n_local,
// block_size, topk, repr_topk, max_cached_block, exc_block_size, base, distance_scale,
// question_weight, plus the reference's path, fattn, async_global_stream, pin_memory, perhead,
// faiss) and top-level chunk_size, conv_type, max_len, truncation. Unknown keys and invalid
// values are INVALID_ARGUMENT; settings the engine does not implement (distance_scale != 1,
// perhead, faiss) are UNIMPLEMENTED. The result is validated.
absl::StatusOr<MemoryConfig> ParseMemoryConfigYaml(const std::string& yaml_text);
// Reads and parses a YAML file. NOT_FOUND when it cannot be opened.
absl::StatusOr<MemoryConfig> LoadMemoryConfig(const std::string& path);

}  // namespace qllm::worker

#endif  // QLLM_WORKER_MEMORY_CONFIG_H_
