// A contiguous range of a model's layers on the CPU backend, optionally with the token
// embedding (first pipeline stage) and the final norm + LM head (last stage). A single-process
// engine is one shard holding everything.
#ifndef QLLM_WORKER_MODEL_SHARD_H_
#define QLLM_WORKER_MODEL_SHARD_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/weights.h"
#include "worker/block_storage.h"
#include "worker/context_memory.h"
#include "worker/kv_cache.h"
#include "worker/memory_config.h"

namespace qllm::worker {

// How a session attends to its past.
struct SessionOptions {
  // Attention mode and Q-LLM parameters. Default: full attention.
  MemoryConfig memory;
  // The question's token span (qllm mode); must lie in the first prefill call unless
  // late_question is set.
  std::optional<QuestionSpan> question;
  // The question span may lie after the attention sinks have filled, e.g. a question asked of a
  // restored document (ModelShard::RestoreSession). Q is then formed at the commit of the
  // execution chunk that completes the span, before that commit cuts blocks, from the span
  // tokens' own local scores exactly as step 5b computes it; if the sinks first fill after the
  // span is complete, step 5b forms Q as usual. With a context memory the span may then be at
  // most n_local tokens long. Default: false (the question must be processed before the sinks
  // fill).
  bool late_question = false;
  // Where memory blocks go; required unless memory.mode is kFull. Must outlive the session.
  BlockStorage* storage = nullptr;
  // Owner id of the blocks this session cuts in `storage`. An ingesting session whose state
  // is persisted as a document uses kDocumentOwnerBit | document id.
  uint64_t session_id = 0;
  // Keep every chunk's block selection for introspection. Default: false.
  bool record_selections = false;
};

// The checks of ModelShard::NewSession(options) against a model of `config`, for every
// backend: INVALID_ARGUMENT for an invalid memory configuration (also against the model, e.g.
// its rope base), a missing block storage, a malformed question span, a qllm session without
// one, or a late question longer than n_local.
absl::Status ValidateSessionOptions(const SessionOptions& options,
                                    const model::ModelConfig& config);

// The per-layer blobs of ModelShard::SaveSession, for every backend (so that a session saved
// by one backend restores on another): a 32-byte header (magic, version, the session's
// attention mode, the layer, the position) followed by KvCache::Save's blob (full mode) or
// LayerMemory::Save's (the memory modes).
void AppendLayerBlobHeader(AttentionMode mode, int64_t layer, int64_t position, std::string* out);
// The per-layer blobs of a session of layers [layer_begin, layer_begin + num_layers), parsed
// for a session in `session_mode`: the common position and each layer's payload (a view into
// `blobs`). Errors: INVALID_ARGUMENT for another number of blobs; DATA_LOSS for a bad magic, a
// damaged header or layers saved at different positions; FAILED_PRECONDITION for another
// layer's blob, or one saved in full mode for a memory session or vice versa. Messages name
// the layer.
struct SavedSession {
  int64_t position = 0;
  std::vector<std::string_view> payloads;  // KvCache or LayerMemory blobs, one per layer.
};
absl::StatusOr<SavedSession> ParseSessionBlobs(std::span<const std::string> blobs,
                                               int64_t layer_begin, size_t num_layers,
                                               AttentionMode session_mode);
// DATA_LOSS (naming `layer`) when a layer restored `tokens` tokens of a session saved at
// `position`.
absl::Status CheckRestoredTokens(int64_t layer, int64_t tokens, int64_t position);
// RestoreSession's check of options.question against the restored position: INVALID_ARGUMENT
// without late_question or for a span that starts before `position`.
absl::Status CheckRestoredQuestion(const SessionOptions& options, int64_t position);
// `s` with "layer <layer>: " before its message, its code and payloads kept (AnnotateStatus).
absl::Status InLayer(int64_t layer, const absl::Status& s);

// Per-request state of one shard: the position reached and each layer's KV cache or context
// memory. Owned by the caller; used by one thread at a time.
class ShardSession {
 public:
  ShardSession(const ShardSession&) = delete;
  ShardSession& operator=(const ShardSession&) = delete;

  // Tokens processed so far (the position of the next token).
  int64_t position() const { return position_; }
  // Bytes of attention state held in host memory across the shard's layers (block K/V in
  // the block storage not included).
  int64_t KvBytes() const;
  const SessionOptions& options() const { return options_; }
  // The context memory of the shard's i-th layer, or nullptr in full mode.
  const LayerMemory* memory(int i) const {
    return memories_.empty() ? nullptr : memories_[i].get();
  }
  // Block selections of every layer and chunk so far (when record_selections is set).
  const std::vector<ChunkSelection>& selections() const { return selections_; }

 private:
  friend class ModelShard;
  ShardSession(int num_layers, int64_t kv_dim, SessionOptions options);

  const SessionOptions options_;
  int64_t position_ = 0;
  std::vector<KvCache> caches_;
  std::vector<std::unique_ptr<LayerMemory>> memories_;
  std::vector<ChunkSelection> selections_;
  // Scratch buffers reused across calls.
  std::vector<float> norm_, qkv_, attn_, proj_, gate_up_, act_;
  std::vector<int64_t> positions_;
};

class ModelShard {
 public:
  // Loads the part of the checkpoint in `model_dir` that `options` names.
  // Errors: those of model::LoadWeights.
  static absl::StatusOr<std::unique_ptr<ModelShard>> Load(const std::string& model_dir,
                                                          const model::LoadOptions& options = {});
  // Wraps already loaded weights.
  explicit ModelShard(model::ModelWeights weights);

  ModelShard(const ModelShard&) = delete;
  ModelShard& operator=(const ModelShard&) = delete;

  const model::ModelConfig& config() const { return weights_.config; }
  int32_t layer_begin() const { return weights_.layer_begin; }
  int32_t layer_end() const { return weights_.layer_end; }
  bool has_embedding() const { return weights_.has_embedding(); }
  bool has_head() const { return weights_.has_head(); }

  // A full-attention session.
  std::unique_ptr<ShardSession> NewSession() const;
  // A session with the given attention options. Errors: INVALID_ARGUMENT for an invalid
  // memory configuration (also against this model, e.g. its rope base), a missing block
  // storage, a malformed question span, or a late question longer than n_local.
  absl::StatusOr<std::unique_ptr<ShardSession>> NewSession(const SessionOptions& options) const;

  // Serializes the attention state of `session` (a session of this shard), one blob per layer
  // of the shard (index 0 is layer_begin()): a header with the layer, the position and whether
  // it holds a KV cache (full mode) or a context memory, then KvCache::Save() or
  // LayerMemory::Save(). Block K/V stay in the block storage under their owners and are not
  // part of the blobs. Errors: INVALID_ARGUMENT when the session does not have this shard's
  // number of layers.
  absl::StatusOr<std::vector<std::string>> SaveSession(const ShardSession& session) const;

  // A session like NewSession(options) whose layers are restored from `blobs` (written by
  // SaveSession() of a shard over the same layers); its position is the saved position. The
  // restored blocks keep the owner they were saved with (the saving session's id), so
  // options.storage must hold them; new blocks go to options.session_id. Retrieval settings
  // (topk, question_weight, infllm vs qllm) may differ from the saved session's.
  // Errors: those of NewSession(options); INVALID_ARGUMENT when blobs.size() differs from the
  // shard's number of layers, or when options.question starts before the saved position or
  // lacks options.late_question; FAILED_PRECONDITION when the saved mode (full, streaming,
  // block modes), layer, shape or layout configuration differs (the message names it);
  // DATA_LOSS for a damaged or inconsistent blob. Messages name the layer.
  absl::StatusOr<std::unique_ptr<ShardSession>> RestoreSession(
      const SessionOptions& options, std::span<const std::string> blobs) const;

  // Writes the embeddings of `tokens` into hidden[tokens.size(), hidden_size].
  // Errors: FAILED_PRECONDITION without an embedding; INVALID_ARGUMENT for ids outside the
  // vocabulary.
  absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const;

  // Runs this shard's layers over n new tokens in place: hidden[n, hidden_size] holds the
  // input activations and receives the output. The tokens sit at positions
  // session->position() .. + n - 1; the session advances by n. With a context memory the
  // tokens run in execution chunks of exc_block_size (one retrieval each), counted from the
  // start of this call. Thread-safe across sessions.
  absl::Status Forward(ShardSession* session, float* hidden, int64_t n) const;

  // logits[rows, vocab] = head(final_norm(hidden[rows, hidden_size])).
  // Errors: FAILED_PRECONDITION without the head.
  absl::Status Logits(const float* hidden, int64_t rows, float* logits) const;

 private:
  absl::Status ForwardChunk(ShardSession* s, float* hidden, int64_t n) const;
  absl::Status ForwardLayer(int layer, ShardSession* s, float* hidden, int64_t n) const;
  absl::Status FullAttention(int layer, ShardSession* s, int64_t n) const;

  const model::ModelWeights weights_;
  const std::vector<double> inv_freq_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_MODEL_SHARD_H_
