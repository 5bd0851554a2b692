// The Q-LLM context memory of one attention layer for one session: attention sinks (init), a
// local window, memory blocks with representative vectors, pending tokens with local scores,
// and the question vector. Implements docs/qllm-algorithm.md step by step; the PyTorch
// reference of the same page (tools/reference/qllm_ref.py) is what the tests compare against.
#ifndef QLLM_WORKER_CONTEXT_MEMORY_H_
#define QLLM_WORKER_CONTEXT_MEMORY_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/block_storage.h"
#include "worker/memory_config.h"

namespace qllm::worker {

// Token span [begin, end) of the question in absolute positions.
struct QuestionSpan {
  int64_t begin = 0;
  int64_t end = 0;
};

// What retrieval chose for one layer in one execution chunk.
struct ChunkSelection {
  int32_t layer = 0;
  int64_t chunk_begin = 0;  // Token positions [chunk_begin, chunk_end) of the chunk.
  int64_t chunk_end = 0;
  int32_t candidates = 0;             // Blocks that existed (B) when the chunk retrieved.
  std::vector<int32_t> blocks;        // Selected block ids, best first.
  std::vector<float> scores;          // Their scores.
  std::vector<int64_t> block_starts;  // First token position of each selected block.
};

struct LayerShape {
  int32_t heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
};

// What a saved layer state holds besides its layout: counts and positions, the sinks' K/V, the
// pending tokens' K, rotated K, V and local scores, each block's first position, owner and
// representative vector, and the question vector if formed. LayerMemory and the device memory
// (cuda/layer_memory_engine.h) save and load through EncodeLayerMemoryState /
// DecodeLayerMemoryState, so either can restore what the other saved.
struct LayerMemoryStateView {
  int64_t end = 0;     // Tokens processed.
  int64_t p0 = 0;      // First pending position (= n_init + blocks * block_size).
  int64_t n_init = 0;  // Sink tokens.
  bool init_ran = false;
  std::span<const float> init_k, init_v;   // [n_init, kv_dim]
  std::span<const float> pk, pkr, pv;      // [end - p0, kv_dim]
  std::span<const float> ps;               // [end - p0, heads]
  std::span<const int64_t> block_start;    // [blocks]
  std::span<const uint64_t> block_owner;   // [blocks]
  std::span<const float> reprs;            // [blocks, heads * head_dim]
  std::span<const float> question_vector;  // empty or [heads * head_dim]
};

// The owning counterpart that DecodeLayerMemoryState returns.
struct LayerMemoryState {
  int64_t end = 0, p0 = 0, n_init = 0;
  bool init_ran = false;
  std::vector<float> init_k, init_v, pk, pkr, pv, ps;
  std::vector<int64_t> block_start;
  std::vector<uint64_t> block_owner;
  std::vector<float> reprs, question_vector;
};

// Appends the blob of LayerMemory::Save for a memory with `config`, `layer` and `shape`.
// REQUIRES: the arrays have the sizes documented above.
void EncodeLayerMemoryState(const MemoryConfig& config, int32_t layer, const LayerShape& shape,
                            const LayerMemoryStateView& state, std::string* out);
// Reads a blob written by EncodeLayerMemoryState into the state of a memory with `config`,
// `layer` and `shape`, with the checks and errors of LayerMemory::Load.
absl::StatusOr<LayerMemoryState> DecodeLayerMemoryState(const MemoryConfig& config, int32_t layer,
                                                        const LayerShape& shape,
                                                        std::string_view blob);

// The constants a layer's context memory derives from its configuration and shape; a private
// base of LayerMemory and of the device memory (cuda/layer_memory_engine.h), whose members use
// these names.
struct LayerMemoryDims {
  LayerMemoryDims(const MemoryConfig& config, const LayerShape& shape);

  const int64_t heads_, kv_heads_, head_dim_, group_, q_dim_, kv_dim_;
  const float scale_;  // 1 / sqrt(head_dim).
  const float w_;      // Effective question weight.
  const int64_t n_local_;
  const bool pending_global_;  // Pending tokens beyond the window are global keys.
  const int32_t topk_;         // 0 in streaming mode.
};

// What step 5 (commit) does to the sinks and the question vector, decided from the counts alone
// (LayerMemory and the device memory execute it; then both cut blocks while the tokens older
// than the window number at least block_size).
struct CommitPlan {
  // 5b for a late question: the chunk completed the span after the sinks started filling; Q is
  // formed first, before any of this commit's tokens leave pending.
  bool question_first = false;
  // 5a: tokens that move from pending to the sinks (0: none).
  int64_t move = 0;
  // 5b: the sinks fill for the first time; Q is formed before the move.
  bool question_at_sinks = false;
};
// INVALID_ARGUMENT when the sinks would fill before a (not late) question span was processed.
absl::StatusOr<CommitPlan> PlanCommit(const MemoryConfig& config,
                                      const std::optional<QuestionSpan>& question,
                                      bool late_question, bool question_formed, bool init_ran,
                                      int64_t init_size, int64_t p0, int64_t end);

class LayerMemory : private LayerMemoryDims {
 public:
  // `storage` and `inv_freq` (head_dim / 2 RoPE frequencies) must outlive this object. Blocks
  // this memory cuts are stored under owner `session`. With `late_question` the question span
  // may end after the attention sinks have started filling: Q is then formed at the commit of
  // the chunk that completes the span (see SessionOptions::late_question).
  // REQUIRES: config.Validate() is OK and config.uses_memory(); with late_question, the span
  // is at most n_local tokens long (so its tokens are still pending when Q is formed).
  LayerMemory(const MemoryConfig& config, const LayerShape& shape, int32_t layer, uint64_t session,
              std::optional<QuestionSpan> question, bool late_question, BlockStorage* storage,
              const double* inv_freq);
  LayerMemory(const LayerMemory&) = delete;
  LayerMemory& operator=(const LayerMemory&) = delete;

  // Processes one execution chunk of n tokens at positions [start, start + n): `qkv` holds
  // their pre-RoPE projections (row i at qkv + i * qkv_stride: q (heads * head_dim), then k and
  // v (kv_heads * head_dim each)). Writes the attention output to out[n, heads * head_dim] and,
  // when `record` is non-null, appends the chunk's selection.
  // REQUIRES: start equals the number of tokens processed so far; n <= exc_block_size.
  // Errors: INVALID_ARGUMENT when the question span has not been processed by the time the
  // question vector must be formed; the errors of the block storage.
  absl::Status Process(const float* qkv, int64_t qkv_stride, int64_t n, int64_t start, float* out,
                       std::vector<ChunkSelection>* record);

  // Appends this layer's state to *out, everything but the block K/V (which stay in the block
  // storage under their owners): the layout configuration (mode, n_init, n_local, block_size,
  // repr_topk, exc_block_size, far_pending_global), the layer and its shape, the positions, the
  // sinks' K/V, the pending tokens' K, rotated K, V and local scores, each block's first
  // position, owner and representative vector, and the question vector if formed. Little-endian
  // binary behind a magic and a version. Always OK.
  absl::Status Save(std::string* out) const;
  // Restores a state written by Save() into this freshly constructed memory. The layout
  // configuration, the layer and the shape must match this memory's; the retrieval settings
  // (topk, question_weight, infllm vs qllm) may differ, but streaming and the block modes do
  // not mix. Blocks keep the owner they were saved with; new blocks get this memory's session.
  // A saved question vector is kept (Q never changes once formed), and the question span of
  // this memory then has no effect.
  // Errors: DATA_LOSS for a wrong magic or version, a truncated blob, or sizes and positions
  // that are inconsistent; FAILED_PRECONDITION naming the first layout field, the layer or the
  // shape that differs. The memory is unchanged on error.
  // REQUIRES: no token has been processed.
  absl::Status Load(std::string_view blob);

  int64_t tokens() const { return end_; }
  int32_t num_blocks() const { return static_cast<int32_t>(block_start_.size()); }
  int64_t init_size() const { return static_cast<int64_t>(init_k_.size()) / kv_dim_; }
  int64_t pending_size() const { return end_ - p0_; }
  bool has_question_vector() const { return !question_vector_.empty(); }
  const std::vector<float>& question_vector() const { return question_vector_; }
  // Bytes held in host memory by this layer (block K/V live in the storage, not here).
  int64_t MemoryBytes() const;

 private:
  void AppendPending(const float* qkv, int64_t stride, int64_t n, int64_t start);
  void Retrieve(const float* q_glob, int64_t n, std::vector<int32_t>* ids,
                std::vector<float>* scores) const;
  void Attend(const float* q_loc, const float* q_glob, int64_t n, int64_t start, int64_t ng,
              float* out);
  absl::Status Commit();
  void ComputeQuestionVector();
  absl::Status CutBlock();
  void PopPending(int64_t count);
  // Pointers to pending token t (t counted from the first pending token).
  float* pk(int64_t t) { return pk_.data() + (pb_ + t) * kv_dim_; }
  float* pkr(int64_t t) { return pkr_.data() + (pb_ + t) * kv_dim_; }
  float* pv(int64_t t) { return pv_.data() + (pb_ + t) * kv_dim_; }
  float* ps(int64_t t) { return ps_.data() + (pb_ + t) * heads_; }

  const MemoryConfig config_;
  const int32_t layer_;
  const uint64_t session_;
  const std::optional<QuestionSpan> question_;
  const bool late_question_;
  BlockStorage* const storage_;
  const double* const inv_freq_;

  // init: pre-RoPE keys and values of the attention sinks, [init_size, kv_dim].
  std::vector<float> init_k_, init_v_;
  // Pending tokens: positions [p0_, end_); arrays indexed from pb_.
  int64_t p0_ = 0, end_ = 0, pb_ = 0;
  std::vector<float> pk_, pkr_, pv_, ps_;  // Pre-RoPE K, K rotated at its position, V, scores.
  // Memory blocks: first position and owner (BlockId::session) of each, representative vectors
  // [B, q_dim].
  std::vector<int64_t> block_start_;
  std::vector<uint64_t> block_owner_;
  std::vector<float> reprs_;
  // Question: pre-RoPE queries of the span's tokens until Q is formed; then Q [q_dim].
  std::vector<float> question_q_;
  std::vector<float> question_vector_;
  bool init_ran_ = false;
  // Scratch reused across chunks.
  std::vector<float> global_k_, global_v_;
  std::vector<int64_t> glob_positions_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_CONTEXT_MEMORY_H_
