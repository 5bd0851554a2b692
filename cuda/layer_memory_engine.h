// The Q-LLM context memory of one attention layer as a sequence of ops on a backend: the
// orchestration behind DeviceLayerMemory (cuda/device_layer_memory.h), written once as a
// template over where the arrays live and how the ops run.
//   - CudaMemoryBackend (cuda/device_layer_memory.h): device arrays, the CUDA twins enqueued on
//     a stream. This is DeviceLayerMemory.
//   - HostMemoryBackend (cuda/host_layer_memory.h): host arrays, the CPU twins run at once. It
//     lets every build test the orchestration (offsets, counts, order of the steps) against
//     worker::LayerMemory, the engine's CPU path, without a GPU.
// It is worker::LayerMemory (worker/context_memory.h) step for step of
// ../shared/docs/qllm-algorithm.md, with every array in backend memory and every step an op, so
// a chunk runs from its projections to its attention output without a host round trip:
//   1. queries rotated at their positions and at n_local - 1 (Rope);
//   2. pending tokens appended (CopyRows; Rope for the rotated keys);
//   3. retrieval: qbar (MeanRows), block scores and top-k (BlockTopK) into backend ids, which
//      GatherBlocks reads to assemble the global keys (sinks, the selected blocks, and pending
//      tokens older than the window);
//   4. the two-stage attention with one joint softmax and the local-score accumulation
//      (MemoryAttention);
//   5. commit: sinks, question vector and representative vectors (TopMean), blocks cut into the
//      block pool.
// The host only keeps counts (tokens, pending, sinks, blocks), which follow from the chunk sizes
// alone. Recording the selection (for evidence) is the one step that waits for the backend.
//
// Where blocks live (LayerMemoryEngineOptions::storage):
//   - pool (no storage): every block stays in a per-layer pool of `max_blocks` blocks in
//     backend memory and selection never leaves the backend; a document that needs more blocks
//     fails with RESOURCE_EXHAUSTED.
//   - tiered (a worker::BlockStorage: host memory or the RocksDB memstore): the algorithm's fast
//     tier. Each cut block is copied to the host and stored under BlockId{session, layer, b};
//     backend memory holds a cache of max_cached_block blocks (Backend::BlockCache, LRU). Each
//     chunk's selection is copied to the host (one wait per layer and chunk, on an event),
//     misses are loaded from the storage and uploaded (on the device: on a copy stream that
//     the compute stream waits for), and the attention gathers from the cache slots. The
//     attention is split around that wait (cuda/memory_attention.h, "Split attention"): the
//     local window, sinks and pending tokens are enqueued before it, so the device attends
//     them while the host loads; the selected blocks after, then a merge and the local scores
//     from the merged statistics (options.overlap_loads = false: one joint attention after the
//     loads). Documents are bounded by the storage and by max_blocks representative vectors,
//     not by the blocks' K and V in device memory.
// In streaming mode (topk 0) blocks are cut but nothing is stored, since nothing is ever
// retrieved.
//
// A Backend provides Buffer<T> and HostBuffer<T> (static Create(size) -> StatusOr, data(),
// bytes(); Buffer also Download(host, count, stream)) and static ops with the signatures of the
// Launch* functions of cuda/memory_ops.h, rope.h, block_topk.h and memory_attention.h:
// CopyRows, FillPositions, MeanRows, TopMean, GatherBlocks, Rope, BlockTopKWorkspaceBytes,
// BlockTopK, BlockTopKToHost, MemoryAttention, MemoryAttentionLocalScores, MergeAttention,
// plus an Event type (CudaEvent's Create, Record, Synchronize), Zero(float*, count, stream),
// CopyToHost(float* host, const float* src, count, stream), Synchronize(stream), and a
// BlockCache type with the interface of DeviceBlockCache (cuda/device_block_cache.h: Create,
// Ensure, Release, d_k, d_v, num_slots). Buffer<int32_t> also has Upload(host, count, stream).
// Not thread-safe.
#ifndef QLLM_CUDA_LAYER_MEMORY_ENGINE_H_
#define QLLM_CUDA_LAYER_MEMORY_ENGINE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/device_error.h"
#include "common/status_macros.h"
#include "cuda/block_cache_lru.h"
#include "cuda/block_topk.h"
#include "cuda/device_block_cache.h"
#include "cuda/memory_attention.h"
#include "cuda/memory_ops.h"
#include "cuda/rope.h"
#include "cuda/stream.h"
#include "worker/block_storage.h"
#include "worker/context_memory.h"
#include "worker/memory_config.h"

namespace qllm::cuda {

// Reads a layer's blocks for the block cache from a worker::BlockStorage (BlockKey owner =
// BlockId session).
class StorageBlockLoader final : public BlockLoader {
 public:
  explicit StorageBlockLoader(worker::BlockStorage* storage) : storage_(storage) {}
  absl::Status Load(std::span<const BlockKey> keys, size_t floats_per_block, float* h_k,
                    float* h_v) override {
    const std::vector<worker::BlockId> ids = Ids(keys);
    return storage_->MultiGet(ids, floats_per_block, h_k, h_v);
  }
  void Prefetch(std::span<const BlockKey> keys) override { storage_->Prefetch(Ids(keys)); }

 private:
  static std::vector<worker::BlockId> Ids(std::span<const BlockKey> keys) {
    std::vector<worker::BlockId> ids;
    ids.reserve(keys.size());
    for (const BlockKey& k : keys) ids.push_back(worker::BlockId{k.owner, k.layer, k.block});
    return ids;
  }
  worker::BlockStorage* const storage_;
};

struct LayerMemoryEngineOptions {
  // Blocks a layer may hold: their representative vectors (heads * head_dim floats each) are
  // always in backend memory, in an array that starts with room for initial_repr_blocks and
  // doubles as blocks are cut, up to max_blocks; in pool mode their K and V too (2 *
  // block_size * kv_dim floats each, allocated for max_blocks up front). Defaults: 1024 and 64
  // (initial_repr_blocks must be > 0).
  int64_t max_blocks = 1024;
  int64_t initial_repr_blocks = 64;
  // Tiered mode when set (see the top of this file): where blocks are stored, under owner
  // `session`; must outlive the memory. The cache holds config.max_cached_block blocks, which
  // must be at least topk. Default: null (pool mode).
  worker::BlockStorage* storage = nullptr;
  uint64_t session = 0;
  // Tiered mode: a chunk's attention is split (cuda/memory_attention.h) so that its local
  // window, sinks and pending tokens are attended while the host loads the selected blocks'
  // misses; false waits for the loads and attends everything at once (the same results up to
  // fp32 rounding; for benchmarks of the overlap). Default: true.
  bool overlap_loads = true;
};

template <typename Backend>
class LayerMemoryEngine : private worker::LayerMemoryDims {
 public:
  // Allocates the layer's arrays. Every op runs on `stream`, which must outlive this object, as
  // must `inv_freq` (backend memory, head_dim / 2 RoPE frequencies as RopeInverseFrequencies
  // returns them).
  // Errors: INVALID_ARGUMENT for a config that fails Validate(), full mode, a bad shape, a
  // question span that is empty or negative, or max_blocks < 0; UNIMPLEMENTED for block_size or
  // a question longer than kTopMeanMaxRows (cuda/memory_ops.h), or a head_dim above
  // kMemoryAttentionMaxHeadDim; RESOURCE_EXHAUSTED when the backend is out of memory;
  // UNAVAILABLE without a usable device.
  static absl::StatusOr<std::unique_ptr<LayerMemoryEngine>> Create(
      const worker::MemoryConfig& config, const worker::LayerShape& shape, int32_t layer,
      std::optional<worker::QuestionSpan> question, bool late_question, const double* inv_freq,
      Stream stream, const LayerMemoryEngineOptions& options = {});

  ~LayerMemoryEngine();
  LayerMemoryEngine(const LayerMemoryEngine&) = delete;
  LayerMemoryEngine& operator=(const LayerMemoryEngine&) = delete;

  // worker::LayerMemory::Process on the backend: qkv (backend memory) holds the chunk's
  // pre-RoPE projections (row i at qkv + i * stride: q, then k, then v), out (backend memory)
  // receives the attention output [n, heads * head_dim]. Enqueues only, except when `record`
  // is non-null: then it waits for the chunk's selection and appends it.
  // Errors: INVALID_ARGUMENT for null pointers, n outside [1, exc_block_size], a stride below
  // q_dim + 2 * kv_dim, start != tokens(), or a question span that has not been processed when
  // the question vector must be formed; RESOURCE_EXHAUSTED when a block does not fit the pool;
  // UNAVAILABLE on a sticky device error; INTERNAL otherwise. After an error other than
  // INVALID_ARGUMENT the memory is unusable (Reset() makes it usable again).
  absl::Status Process(const float* qkv, int64_t stride, int64_t n, int64_t start, float* out,
                       std::vector<worker::ChunkSelection>* record);

  // Forgets every token: the memory is as freshly created (the arrays are kept). Tiered: the
  // session's blocks are deleted from the storage and the cache is emptied.
  // Errors: the storage's, or the backend's when the cache cannot be recreated.
  absl::Status Reset();

  int64_t tokens() const { return end_; }
  int32_t num_blocks() const { return static_cast<int32_t>(block_start_.size()); }
  int64_t init_size() const { return init_size_; }
  int64_t pending_size() const { return end_ - p0_; }
  bool has_question_vector() const { return has_question_vector_; }
  // Copies the question vector [heads * head_dim] to the host (waits for the stream).
  // FAILED_PRECONDITION before it is formed.
  absl::StatusOr<std::vector<float>> QuestionVector() const;
  // worker::LayerMemory::Save's blob (worker::EncodeLayerMemoryState), so a worker::LayerMemory
  // can Load it and vice versa. Waits for the stream. Block K/V are not in the blob: they stay
  // in the storage under their owners, so a memory with blocks must be in the tiered mode (or
  // streaming, which never reads them). Errors: FAILED_PRECONDITION in pool mode with blocks;
  // the backend's.
  absl::Status Save(std::string* out) const;
  // Restores a blob written by Save or by worker::LayerMemory::Save into this memory, with
  // LayerMemory::Load's checks; restored blocks keep their saved owner (their K/V must be in
  // this memory's storage under it), new ones get options.session. A saved question vector is
  // kept; without one, a question span must start at or after the restored position.
  // Errors: those of worker::DecodeLayerMemoryState (DATA_LOSS, FAILED_PRECONDITION);
  // FAILED_PRECONDITION when tokens() > 0 or, in pool mode, when the state has blocks;
  // RESOURCE_EXHAUSTED for more than max_blocks blocks; INVALID_ARGUMENT for a question span
  // that starts before the restored position. The memory is unchanged on error.
  absl::Status Load(std::string_view blob);

  // Bytes of backend memory this layer allocated.
  int64_t Bytes() const;

  // LayerMemoryEngineOptions::overlap_loads from the next chunk on.
  void set_overlap_loads(bool on) { overlap_loads_ = on; }

 private:
  template <typename T>
  using Buffer = typename Backend::template Buffer<T>;
  template <typename T>
  using HostBuffer = typename Backend::template HostBuffer<T>;
  struct Buffers;

  LayerMemoryEngine(const worker::MemoryConfig& config, const worker::LayerShape& shape,
                    int32_t layer, std::optional<worker::QuestionSpan> question, bool late_question,
                    const double* inv_freq, Stream stream, const LayerMemoryEngineOptions& options);

  template <typename T>
  static absl::Status Alloc(Buffer<T>* buf, int64_t count, int64_t* bytes) {
    ASSIGN_OR_RETURN(*buf, Buffer<T>::Create(static_cast<size_t>(count)));
    *bytes += count * static_cast<int64_t>(sizeof(T));
    return absl::OkStatus();
  }
  static int64_t QuestionTokens(const std::optional<worker::QuestionSpan>& q) {
    return q.has_value() ? q->end - q->begin : 0;
  }

  // Tiered mode: a fresh, empty block cache (its bytes are counted in Bytes()).
  absl::Status CreateCache();
  // Room for `blocks` <= max_blocks representative vectors: the array is reallocated at
  // max(blocks, twice its size), capped at max_blocks, and the vectors copied (waits for the
  // stream); the top-k workspace grows with it. RESOURCE_EXHAUSTED when the backend is out of
  // memory; the memory is unchanged on error.
  absl::Status EnsureReprBlocks(int64_t blocks);
  absl::Status AppendPending(const float* qkv, int64_t stride, int64_t n, int64_t start);
  // The attention parameters every call of a chunk shares (queries, local keys, shape); the
  // global keys, local scores and row statistics are the caller's.
  MemoryAttentionParams AttentionParams(int64_t n, int64_t start, float* out);
  // Copies `rows` K and V rows into global_k / global_v from row `first` on.
  absl::Status CopyGlobalRows(const float* k, const float* v, int64_t rows, int64_t first);
  // The pending tokens (unrotated keys) as global keys from row `first` on, at their real
  // positions, and global_pos of the rows before them kAlwaysVisible.
  absl::Status PendingAsGlobal(int64_t first);
  // Tiered mode, after the selection's copy to the host and selection_ready (Process records
  // it behind the copy): waits for it, makes the `sel` selected blocks resident in the cache and
  // gathers them into global_k / global_v from row `first` on.
  absl::Status LoadSelected(int64_t sel, int64_t first);
  // Steps 3-4 with one MemoryAttention call over every key: sinks, the `sel` selected blocks
  // (from the pool, ids in backend memory of `num` blocks, or tiered through LoadSelected),
  // pending tokens as global keys.
  absl::Status JointAttention(int64_t n, int64_t start, int64_t sel, int64_t num, float* out);
  // Steps 3-4 in the tiered mode with `sel` > 0 blocks selected, as a split attention
  // (cuda/memory_attention.h): part A (local window, sinks, pending tokens) is enqueued before
  // the host waits for the selection and loads the misses, part B (the selected blocks from
  // the cache) after; then the merge and the local scores from the merged statistics.
  absl::Status TieredAttention(int64_t n, int64_t start, int64_t sel, float* out);
  absl::Status Commit();
  absl::Status ComputeQuestionVector();
  absl::Status CutBlock();
  absl::Status Rotate(float* x, int64_t rows, int64_t heads, int64_t row_stride, int64_t first,
                      int64_t step);
  // Pointers to pending row t (counted from the first pending token).
  float* pk(int64_t t) const;
  float* pkr(int64_t t) const;
  float* pv(int64_t t) const;
  float* ps(int64_t t) const;

  const worker::MemoryConfig config_;
  const int32_t layer_;
  const std::optional<worker::QuestionSpan> question_;
  const bool late_question_;
  const double* const inv_freq_;
  const Stream stream_;
  const LayerMemoryEngineOptions options_;

  const int64_t pending_rows_;  // Capacity of the pending arrays in rows.
  int64_t repr_blocks_ = 0;     // Capacity of Buffers::reprs in blocks.
  const int64_t global_rows_;   // Capacity of the chunk's global keys in rows.
  const bool tiered_;           // Blocks in options_.storage, a cache in backend memory.
  bool overlap_loads_;          // Tiered: split attention around the loads.

  std::unique_ptr<Buffers> buf_;
  int64_t init_size_ = 0;
  int64_t p0_ = 0, end_ = 0, pb_ = 0;
  std::vector<int64_t> block_start_;
  std::vector<uint64_t> block_owner_;  // BlockId session of each block (tiered mode reads).
  bool has_question_vector_ = false;
  bool init_ran_ = false;
};

template <typename Backend>
struct LayerMemoryEngine<Backend>::Buffers {
  Buffer<float> init_k, init_v;      // [n_init, kv_dim], pre-RoPE
  Buffer<float> pk, pkr, pv;         // [pending_rows, kv_dim]
  Buffer<float> ps;                  // [pending_rows, heads]
  Buffer<float> pool_k, pool_v;      // [max_blocks, block_size * kv_dim], pre-RoPE
  Buffer<float> reprs;               // [repr_blocks_, q_dim], grown by EnsureReprBlocks
  Buffer<float> question_q;          // [question tokens, q_dim], pre-RoPE
  Buffer<float> question_rot;        // the same rotated at n_local - 1
  Buffer<float> question_vec;        // [q_dim]
  Buffer<float> q_loc, q_glob;       // [exc_block_size, q_dim]
  Buffer<float> qbar;                // [q_dim]
  Buffer<int64_t> positions;         // RoPE positions of the op at hand
  Buffer<float> global_k, global_v;  // [global_rows, kv_dim]
  Buffer<int64_t> global_pos;        // [global_rows]
  Buffer<uint8_t> topk_workspace;    // BlockTopKWorkspaceBytes(repr_blocks_)
  Buffer<int32_t> ids;               // [topk] selected block ids, best first
  Buffer<float> scores;              // [topk] their scores
  HostBuffer<int32_t> h_ids;         // [topk] host copies for the record
  HostBuffer<float> h_scores;        // [topk]
  Buffer<float> attn_workspace;      // MemoryAttentionWorkspaceBytes
  // Tiered mode: split attention's row statistics ([2 * exc_block_size * heads] each: part A's,
  // then the merged ones; part B's), part B's output, and the event after the selection's copy.
  Buffer<float> stats, stats_b;
  Buffer<float> out_b;  // [exc_block_size, q_dim]
  typename Backend::Event selection_ready;
  // Tiered mode: the fast tier, the slots of the selected blocks, and host staging for a cut
  // block's K and V.
  std::unique_ptr<typename Backend::BlockCache> cache;
  Buffer<int32_t> slot_ids;     // [topk]
  HostBuffer<int32_t> h_slots;  // [topk] their host staging (pinned: the upload stays async)
  std::vector<float> h_block;
  int64_t bytes = 0;
};

template <typename Backend>
LayerMemoryEngine<Backend>::LayerMemoryEngine(const worker::MemoryConfig& config,
                                              const worker::LayerShape& shape, int32_t layer,
                                              std::optional<worker::QuestionSpan> question,
                                              bool late_question, const double* inv_freq,
                                              Stream stream,
                                              const LayerMemoryEngineOptions& options)
    : worker::LayerMemoryDims(config, shape),
      config_(config),
      layer_(layer),
      question_(question),
      late_question_(late_question),
      inv_freq_(inv_freq),
      stream_(stream),
      options_(options),
      // After a commit at most n_local + block_size - 1 tokens are pending; a chunk adds at most
      // exc_block_size; the dead rows before pb_ are compacted away once they outnumber the
      // live ones (see AppendPending).
      pending_rows_(2 * (static_cast<int64_t>(config.n_local) + config.block_size) +
                    config.exc_block_size),
      global_rows_(static_cast<int64_t>(config.n_init) +
                   static_cast<int64_t>(topk_) * config.block_size + pending_rows_),
      tiered_(options.storage != nullptr && topk_ > 0),
      overlap_loads_(options.overlap_loads) {}

template <typename Backend>
LayerMemoryEngine<Backend>::~LayerMemoryEngine() = default;

template <typename Backend>
absl::StatusOr<std::unique_ptr<LayerMemoryEngine<Backend>>> LayerMemoryEngine<Backend>::Create(
    const worker::MemoryConfig& config, const worker::LayerShape& shape, int32_t layer,
    std::optional<worker::QuestionSpan> question, bool late_question, const double* inv_freq,
    Stream stream, const LayerMemoryEngineOptions& options) {
  RETURN_IF_ERROR(config.Validate());
  if (!config.uses_memory()) {
    return absl::InvalidArgumentError("layer memory: full attention has no memory");
  }
  if (shape.heads <= 0 || shape.kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.heads % shape.kv_heads != 0 || shape.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer memory: heads ", shape.heads, ", kv_heads ", shape.kv_heads, ", head_dim ",
        shape.head_dim, " (need kv_heads dividing heads and an even head_dim)"));
  }
  if (shape.head_dim > kMemoryAttentionMaxHeadDim) {
    return absl::UnimplementedError(absl::StrCat("layer memory: head_dim ", shape.head_dim,
                                                 " above ", kMemoryAttentionMaxHeadDim));
  }
  if (inv_freq == nullptr || options.max_blocks < 0 || options.initial_repr_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer memory: inv_freq is required, max_blocks (", options.max_blocks,
        ") must be >= 0 and initial_repr_blocks (", options.initial_repr_blocks, ") > 0"));
  }
  if (question.has_value() && (question->begin < 0 || question->end <= question->begin)) {
    return absl::InvalidArgumentError(absl::StrCat("layer memory: question span [", question->begin,
                                                   ", ", question->end, ") is empty or negative"));
  }
  if (config.block_size > kTopMeanMaxRows || QuestionTokens(question) > kTopMeanMaxRows) {
    return absl::UnimplementedError(absl::StrCat("layer memory: block_size ", config.block_size,
                                                 " and question of ", QuestionTokens(question),
                                                 " tokens must be at most ", kTopMeanMaxRows));
  }
  std::unique_ptr<LayerMemoryEngine> m(new LayerMemoryEngine(
      config, shape, layer, question, late_question, inv_freq, stream, options));
  auto buf = std::make_unique<Buffers>();
  int64_t* bytes = &buf->bytes;
  const int64_t kvd = m->kv_dim_, qd = m->q_dim_, exc = config.exc_block_size;
  if (m->tiered_ && config.max_cached_block < config.topk) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer memory: max_cached_block ", config.max_cached_block,
                     " must be at least topk ", config.topk, " (a chunk pins its selection)"));
  }
  const int64_t blocks = m->topk_ > 0 ? options.max_blocks : 0;
  const int64_t pool_blocks = m->tiered_ ? 0 : blocks;
  const int64_t nq = QuestionTokens(question);
  const int64_t pend = m->pending_rows_, glob = m->global_rows_;
  RETURN_IF_ERROR(Alloc(&buf->init_k, config.n_init * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->init_v, config.n_init * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->pk, pend * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->pkr, pend * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->pv, pend * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->ps, pend * m->heads_, bytes));
  RETURN_IF_ERROR(Alloc(&buf->pool_k, pool_blocks * config.block_size * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->pool_v, pool_blocks * config.block_size * kvd, bytes));
  m->repr_blocks_ = std::min(blocks, options.initial_repr_blocks);
  RETURN_IF_ERROR(Alloc(&buf->reprs, m->repr_blocks_ * qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->question_q, nq * qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->question_rot, nq * qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->question_vec, qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->q_loc, exc * qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->q_glob, exc * qd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->qbar, qd, bytes));
  // Rotate's positions: a chunk's queries and keys, or the question's tokens.
  RETURN_IF_ERROR(Alloc(&buf->positions, std::max(exc, nq), bytes));
  RETURN_IF_ERROR(Alloc(&buf->global_k, glob * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->global_v, glob * kvd, bytes));
  RETURN_IF_ERROR(Alloc(&buf->global_pos, glob, bytes));
  if (m->topk_ > 0) {
    ASSIGN_OR_RETURN(const size_t ws,
                     Backend::BlockTopKWorkspaceBytes(std::max<int64_t>(m->repr_blocks_, 1)));
    RETURN_IF_ERROR(Alloc(&buf->topk_workspace, static_cast<int64_t>(ws), bytes));
    RETURN_IF_ERROR(Alloc(&buf->ids, m->topk_, bytes));
    RETURN_IF_ERROR(Alloc(&buf->scores, m->topk_, bytes));
    ASSIGN_OR_RETURN(buf->h_ids, HostBuffer<int32_t>::Create(m->topk_));
    ASSIGN_OR_RETURN(buf->h_scores, HostBuffer<float>::Create(m->topk_));
  }
  MemoryAttentionParams sizing;
  sizing.n = exc;
  sizing.heads = m->heads_;
  RETURN_IF_ERROR(Alloc(&buf->attn_workspace,
                        static_cast<int64_t>(MemoryAttentionWorkspaceBytes(sizing) / sizeof(float)),
                        bytes));
  m->buf_ = std::move(buf);
  if (m->tiered_) {
    RETURN_IF_ERROR(m->CreateCache());
    Buffers& b = *m->buf_;
    RETURN_IF_ERROR(Alloc(&b.slot_ids, m->topk_, &b.bytes));
    ASSIGN_OR_RETURN(b.h_slots, HostBuffer<int32_t>::Create(m->topk_));
    RETURN_IF_ERROR(Alloc(&b.stats, 2 * exc * m->heads_, &b.bytes));
    RETURN_IF_ERROR(Alloc(&b.stats_b, 2 * exc * m->heads_, &b.bytes));
    RETURN_IF_ERROR(Alloc(&b.out_b, exc * qd, &b.bytes));
    ASSIGN_OR_RETURN(b.selection_ready, Backend::Event::Create());
    b.h_block.resize(2 * config.block_size * kvd);
  }
  return m;
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Reset() {
  init_size_ = 0;
  p0_ = end_ = pb_ = 0;
  block_start_.clear();
  block_owner_.clear();
  has_question_vector_ = false;
  init_ran_ = false;
  if (!tiered_) return absl::OkStatus();
  // The cache is keyed by (session, layer, block): a new document's block 0 must not hit the
  // old one's.
  buf_->cache.reset();
  RETURN_IF_ERROR(options_.storage->DeleteSession(options_.session));
  return CreateCache();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::CreateCache() {
  DeviceBlockCacheOptions o;
  o.num_slots = config_.max_cached_block;
  o.floats_per_block = static_cast<size_t>(config_.block_size) * kv_dim_;
  ASSIGN_OR_RETURN(buf_->cache, Backend::BlockCache::Create(o));
  return absl::OkStatus();
}

template <typename Backend>
int64_t LayerMemoryEngine<Backend>::Bytes() const {
  const int64_t cache = buf_->cache == nullptr
                            ? 0
                            : 2 * static_cast<int64_t>(buf_->cache->num_slots()) *
                                  config_.block_size * kv_dim_ *
                                  static_cast<int64_t>(sizeof(float));
  return buf_->bytes + cache;
}

template <typename Backend>
float* LayerMemoryEngine<Backend>::pk(int64_t t) const {
  return buf_->pk.data() + (pb_ + t) * kv_dim_;
}
template <typename Backend>
float* LayerMemoryEngine<Backend>::pkr(int64_t t) const {
  return buf_->pkr.data() + (pb_ + t) * kv_dim_;
}
template <typename Backend>
float* LayerMemoryEngine<Backend>::pv(int64_t t) const {
  return buf_->pv.data() + (pb_ + t) * kv_dim_;
}
template <typename Backend>
float* LayerMemoryEngine<Backend>::ps(int64_t t) const {
  return buf_->ps.data() + (pb_ + t) * heads_;
}

template <typename Backend>
absl::StatusOr<std::vector<float>> LayerMemoryEngine<Backend>::QuestionVector() const {
  if (!has_question_vector_) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer_, ": the question vector is not formed yet"));
  }
  std::vector<float> q(q_dim_);
  RETURN_IF_ERROR(buf_->question_vec.Download(q.data(), q.size(), stream_));
  RETURN_IF_ERROR(Backend::Synchronize(stream_));
  return q;
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Rotate(float* x, int64_t rows, int64_t heads,
                                                int64_t row_stride, int64_t first, int64_t step) {
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Backend::FillPositions(
      {.out = buf_->positions.data(), .n = rows, .first = first, .step = step}, stream_));
  RopeParams p;
  p.x = x;
  p.positions = buf_->positions.data();
  p.inv_freq = inv_freq_;
  p.tokens = rows;
  p.heads = heads;
  p.head_dim = head_dim_;
  p.row_stride = row_stride;
  return Backend::Rope(p, stream_);
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Process(const float* qkv, int64_t stride, int64_t n,
                                                 int64_t start, float* out,
                                                 std::vector<worker::ChunkSelection>* record) {
  if (qkv == nullptr || out == nullptr || n <= 0 || n > config_.exc_block_size ||
      stride < q_dim_ + 2 * kv_dim_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", layer_, ": chunk of ", n, " tokens (must be 1..", config_.exc_block_size,
        "), stride ", stride, " (must be >= ", q_dim_ + 2 * kv_dim_, ") and pointers"));
  }
  if (start != end_) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer_, ": chunk at ", start, " after ", end_, " tokens"));
  }
  Buffers& b = *buf_;
  // 1. Queries at their own positions (local keys) and at n_local - 1 (global keys).
  for (float* q : {b.q_loc.data(), b.q_glob.data()}) {
    RETURN_IF_ERROR(Backend::CopyRows({.src = qkv,
                                       .dst = q,
                                       .rows = n,
                                       .cols = q_dim_,
                                       .src_stride = stride,
                                       .dst_stride = q_dim_},
                                      stream_));
  }
  RETURN_IF_ERROR(Rotate(b.q_loc.data(), n, heads_, q_dim_, start, 1));
  RETURN_IF_ERROR(Rotate(b.q_glob.data(), n, heads_, q_dim_, n_local_ - 1, 0));
  RETURN_IF_ERROR(AppendPending(qkv, stride, n, start));

  // 2. Retrieval, once per chunk, before attention.
  const int64_t num = num_blocks();
  const int64_t sel = topk_ > 0 ? std::min<int64_t>(topk_, num) : 0;
  if (sel > 0) {
    RETURN_IF_ERROR(Backend::MeanRows(
        {.x = b.q_glob.data(), .out = b.qbar.data(), .rows = n, .dim = q_dim_, .stride = q_dim_},
        stream_));
    BlockTopKParams t;
    t.reprs = b.reprs.data();
    t.qbar = b.qbar.data();
    t.question = has_question_vector_ && w_ != 0.0f ? b.question_vec.data() : nullptr;
    t.question_weight = w_;
    t.num_blocks = num;
    t.q_dim = q_dim_;
    t.topk = topk_;
    t.ids = b.ids.data();
    t.scores = b.scores.data();
    if (record != nullptr || tiered_) {
      RETURN_IF_ERROR(Backend::BlockTopKToHost(t, b.topk_workspace.data(), b.topk_workspace.bytes(),
                                               b.h_ids.data(), b.h_scores.data(), stream_));
      // Tiered: the host waits for the selection on this event, not on the whole stream.
      if (tiered_) RETURN_IF_ERROR(b.selection_ready.Record(stream_));
    } else {
      RETURN_IF_ERROR(
          Backend::BlockTopK(t, b.topk_workspace.data(), b.topk_workspace.bytes(), stream_));
    }
  }
  if (tiered_ && sel > 0 && overlap_loads_) {
    RETURN_IF_ERROR(TieredAttention(n, start, sel, out));
  } else {
    RETURN_IF_ERROR(JointAttention(n, start, sel, num, out));
  }

  if (record != nullptr) {
    RETURN_IF_ERROR(Backend::Synchronize(stream_));
    worker::ChunkSelection s;
    s.layer = layer_;
    s.chunk_begin = start;
    s.chunk_end = start + n;
    s.candidates = static_cast<int32_t>(num);
    for (int64_t i = 0; i < sel; ++i) {
      const int32_t id = b.h_ids[i];
      s.blocks.push_back(id);
      s.scores.push_back(b.h_scores[i]);
      s.block_starts.push_back(id >= 0 && id < num ? block_start_[id] : -1);
    }
    record->push_back(std::move(s));
  }
  // 5-6. Commit.
  return Commit();
}

template <typename Backend>
MemoryAttentionParams LayerMemoryEngine<Backend>::AttentionParams(int64_t n, int64_t start,
                                                                  float* out) {
  Buffers& b = *buf_;
  MemoryAttentionParams a;
  a.q_local = b.q_loc.data();
  a.q_global = b.q_glob.data();
  a.local_k = pkr(0);
  a.local_v = pv(0);
  a.out = out;
  a.n = n;
  a.start = start;
  a.num_local = end_ - p0_;
  a.local_first = p0_;
  a.n_local = n_local_;
  a.heads = heads_;
  a.kv_heads = kv_heads_;
  a.head_dim = head_dim_;
  a.scale = scale_;
  return a;
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::CopyGlobalRows(const float* k, const float* v,
                                                        int64_t rows, int64_t first) {
  Buffers& b = *buf_;
  for (auto [src, dst] : {std::pair{k, b.global_k.data()}, std::pair{v, b.global_v.data()}}) {
    RETURN_IF_ERROR(Backend::CopyRows({.src = src,
                                       .dst = dst + first * kv_dim_,
                                       .rows = rows,
                                       .cols = kv_dim_,
                                       .src_stride = kv_dim_,
                                       .dst_stride = kv_dim_},
                                      stream_));
  }
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::PendingAsGlobal(int64_t first) {
  Buffers& b = *buf_;
  const int64_t P = end_ - p0_;
  RETURN_IF_ERROR(CopyGlobalRows(pk(0), pv(0), P, first));
  RETURN_IF_ERROR(Backend::FillPositions(
      {.out = b.global_pos.data(), .n = first, .first = kAlwaysVisible, .step = 0}, stream_));
  return Backend::FillPositions(
      {.out = b.global_pos.data() + first, .n = P, .first = p0_, .step = 1}, stream_);
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::LoadSelected(int64_t sel, int64_t first) {
  Buffers& b = *buf_;
  // The selection on the host, its blocks made resident in the cache (misses read from the
  // storage and uploaded on the cache's copy stream, which the stream waits for), then gathered
  // from their slots.
  RETURN_IF_ERROR(b.selection_ready.Synchronize());
  std::vector<BlockKey> keys;
  for (int64_t i = 0; i < sel; ++i) {
    keys.push_back(BlockKey{block_owner_[b.h_ids[i]], layer_, b.h_ids[i]});
  }
  StorageBlockLoader loader(options_.storage);
  ASSIGN_OR_RETURN(const std::vector<int32_t> slots, b.cache->Ensure(keys, &loader, stream_));
  // From pinned memory: a pageable source may make the copy wait for the stream, i.e. for part
  // A of the attention. The previous chunk's upload from h_slots is done: selection_ready
  // came after it on the stream.
  std::copy(slots.begin(), slots.end(), b.h_slots.data());
  RETURN_IF_ERROR(b.slot_ids.Upload(b.h_slots.data(), slots.size(), stream_));
  GatherBlocksParams g;
  g.ids = b.slot_ids.data();
  g.pool_k = b.cache->d_k(0);
  g.pool_v = b.cache->d_v(0);
  g.num_blocks = b.cache->num_slots();
  g.dst_k = b.global_k.data() + first * kv_dim_;
  g.dst_v = b.global_v.data() + first * kv_dim_;
  g.count = sel;
  g.block_elems = config_.block_size * kv_dim_;
  RETURN_IF_ERROR(Backend::GatherBlocks(g, stream_));
  // The gathered copies are what the attention reads; the slots may be reused once the gather
  // has run, which Release orders on the stream.
  return b.cache->Release(stream_);
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::JointAttention(int64_t n, int64_t start, int64_t sel,
                                                        int64_t num, float* out) {
  Buffers& b = *buf_;
  // Global keys: sinks, the selected blocks (always visible), then the pending tokens at their
  // real positions (visible once older than the window).
  const int64_t bs = config_.block_size;
  const int64_t P = end_ - p0_;
  const int64_t fixed = init_size_ + sel * bs;
  const int64_t ng = fixed + (pending_global_ ? P : 0);
  RETURN_IF_ERROR(CopyGlobalRows(b.init_k.data(), b.init_v.data(), init_size_, 0));
  if (tiered_ && sel > 0) {
    RETURN_IF_ERROR(LoadSelected(sel, init_size_));
  } else if (sel > 0) {
    GatherBlocksParams g;
    g.ids = b.ids.data();
    g.pool_k = b.pool_k.data();
    g.pool_v = b.pool_v.data();
    g.num_blocks = num;
    g.dst_k = b.global_k.data() + init_size_ * kv_dim_;
    g.dst_v = b.global_v.data() + init_size_ * kv_dim_;
    g.count = sel;
    g.block_elems = bs * kv_dim_;
    RETURN_IF_ERROR(Backend::GatherBlocks(g, stream_));
  }
  if (pending_global_) RETURN_IF_ERROR(PendingAsGlobal(fixed));
  // 3-4. Two-stage attention with one joint softmax, and local-score accumulation.
  MemoryAttentionParams a = AttentionParams(n, start, out);
  a.global_k = ng > 0 ? b.global_k.data() : nullptr;
  a.global_v = ng > 0 ? b.global_v.data() : nullptr;
  a.global_pos = pending_global_ ? b.global_pos.data() : nullptr;
  a.local_scores = ps(0);
  a.num_global = ng;
  return Backend::MemoryAttention(a, b.attn_workspace.data(), b.attn_workspace.bytes(), stream_);
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::TieredAttention(int64_t n, int64_t start, int64_t sel,
                                                         float* out) {
  Buffers& b = *buf_;
  // Part A, enqueued before the host waits: the keys already in backend memory. Global keys
  // [sinks | pending tokens at their positions], then (part B) the selected blocks.
  const int64_t P = end_ - p0_;
  const int64_t ga = init_size_ + (pending_global_ ? P : 0);
  RETURN_IF_ERROR(CopyGlobalRows(b.init_k.data(), b.init_v.data(), init_size_, 0));
  if (pending_global_) RETURN_IF_ERROR(PendingAsGlobal(init_size_));
  MemoryAttentionParams a = AttentionParams(n, start, out);
  a.global_k = ga > 0 ? b.global_k.data() : nullptr;
  a.global_v = ga > 0 ? b.global_v.data() : nullptr;
  a.global_pos = pending_global_ ? b.global_pos.data() : nullptr;
  a.num_global = ga;
  a.row_stats = b.stats.data();
  RETURN_IF_ERROR(
      Backend::MemoryAttention(a, b.attn_workspace.data(), b.attn_workspace.bytes(), stream_));

  // Meanwhile, on the host: the selection, its blocks loaded, gathered after part A's keys.
  RETURN_IF_ERROR(LoadSelected(sel, ga));

  // Part B: the selected blocks, visible to every query, no local keys.
  MemoryAttentionParams pb = AttentionParams(n, start, b.out_b.data());
  pb.local_k = pb.local_v = nullptr;
  pb.num_local = 0;
  pb.global_k = b.global_k.data() + ga * kv_dim_;
  pb.global_v = b.global_v.data() + ga * kv_dim_;
  pb.num_global = sel * config_.block_size;
  pb.row_stats = b.stats_b.data();
  RETURN_IF_ERROR(
      Backend::MemoryAttention(pb, b.attn_workspace.data(), b.attn_workspace.bytes(), stream_));
  RETURN_IF_ERROR(Backend::MergeAttention({.out = out,
                                           .stats = b.stats.data(),
                                           .out_b = b.out_b.data(),
                                           .stats_b = b.stats_b.data(),
                                           .n = n,
                                           .heads = heads_,
                                           .head_dim = head_dim_},
                                          stream_));
  // Step 4 from the joint softmax's statistics, which the merge left in b.stats.
  a.local_scores = ps(0);
  return Backend::MemoryAttentionLocalScores(a, stream_);
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::AppendPending(const float* qkv, int64_t stride, int64_t n,
                                                       int64_t start) {
  Buffers& b = *buf_;
  const int64_t count = end_ - p0_;
  if (pb_ > 0 && pb_ >= count) {  // Compact: the live rows move to the front (no overlap).
    for (Buffer<float>* a : {&b.pk, &b.pkr, &b.pv}) {
      RETURN_IF_ERROR(Backend::CopyRows({.src = a->data() + pb_ * kv_dim_,
                                         .dst = a->data(),
                                         .rows = count,
                                         .cols = kv_dim_,
                                         .src_stride = kv_dim_,
                                         .dst_stride = kv_dim_},
                                        stream_));
    }
    RETURN_IF_ERROR(Backend::CopyRows({.src = b.ps.data() + pb_ * heads_,
                                       .dst = b.ps.data(),
                                       .rows = count,
                                       .cols = heads_,
                                       .src_stride = heads_,
                                       .dst_stride = heads_},
                                      stream_));
    pb_ = 0;
  }
  if (pb_ + count + n > pending_rows_) {
    return absl::InternalError(absl::StrCat("layer ", layer_, ": ", pb_ + count + n,
                                            " pending rows exceed the capacity ", pending_rows_));
  }
  CopyRowsParams c{.rows = n, .cols = kv_dim_, .src_stride = stride, .dst_stride = kv_dim_};
  c.src = qkv + q_dim_;
  c.dst = pk(count);
  RETURN_IF_ERROR(Backend::CopyRows(c, stream_));
  c.dst = pkr(count);
  RETURN_IF_ERROR(Backend::CopyRows(c, stream_));
  c.src = qkv + q_dim_ + kv_dim_;
  c.dst = pv(count);
  RETURN_IF_ERROR(Backend::CopyRows(c, stream_));
  RETURN_IF_ERROR(Backend::Zero(ps(count), n * heads_, stream_));
  // The question's pre-RoPE queries, while Q is not formed.
  if (question_.has_value() && !has_question_vector_) {
    const int64_t lo = std::max(start, question_->begin);
    const int64_t hi = std::min(start + n, question_->end);
    if (lo < hi) {
      RETURN_IF_ERROR(
          Backend::CopyRows({.src = qkv + (lo - start) * stride,
                             .dst = b.question_q.data() + (lo - question_->begin) * q_dim_,
                             .rows = hi - lo,
                             .cols = q_dim_,
                             .src_stride = stride,
                             .dst_stride = q_dim_},
                            stream_));
    }
  }
  RETURN_IF_ERROR(Rotate(pkr(count), n, kv_heads_, kv_dim_, start, 1));
  end_ += n;
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Commit() {
  // Step 5 as worker::PlanCommit decides it (the CPU memory's own rules).
  ASSIGN_OR_RETURN(const worker::CommitPlan plan,
                   worker::PlanCommit(config_, question_, late_question_, has_question_vector_,
                                      init_ran_, init_size_, p0_, end_));
  if (plan.question_first) RETURN_IF_ERROR(ComputeQuestionVector());
  if (plan.move > 0) {
    const int64_t move = plan.move;
    if (plan.question_at_sinks) RETURN_IF_ERROR(ComputeQuestionVector());
    init_ran_ = true;
    for (auto [src, dst] :
         {std::pair{pk(0), buf_->init_k.data()}, std::pair{pv(0), buf_->init_v.data()}}) {
      RETURN_IF_ERROR(Backend::CopyRows({.src = src,
                                         .dst = dst + init_size_ * kv_dim_,
                                         .rows = move,
                                         .cols = kv_dim_,
                                         .src_stride = kv_dim_,
                                         .dst_stride = kv_dim_},
                                        stream_));
    }
    init_size_ += move;
    pb_ += move;
    p0_ += move;
  }
  // c. Cut blocks while the tokens older than the window number at least block_size.
  while ((end_ - p0_) - config_.block_size >= n_local_) RETURN_IF_ERROR(CutBlock());
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::ComputeQuestionVector() {
  const int64_t qs = question_->begin, nq = question_->end - question_->begin;
  if (qs < p0_) {
    return absl::InternalError(absl::StrCat("layer ", layer_, ": question token ", qs,
                                            " left pending (first pending ", p0_, ")"));
  }
  Buffers& b = *buf_;
  RETURN_IF_ERROR(Backend::CopyRows({.src = b.question_q.data(),
                                     .dst = b.question_rot.data(),
                                     .rows = nq,
                                     .cols = q_dim_,
                                     .src_stride = q_dim_,
                                     .dst_stride = q_dim_},
                                    stream_));
  RETURN_IF_ERROR(Rotate(b.question_rot.data(), nq, heads_, q_dim_, n_local_ - 1, 0));
  TopMeanParams t;
  t.scores = ps(qs - p0_);
  t.vectors = b.question_rot.data();
  t.out = b.question_vec.data();
  t.rows = nq;
  t.heads = heads_;
  t.group = 1;
  t.head_dim = head_dim_;
  t.k = config_.repr_topk;
  t.score_stride = heads_;
  t.vector_stride = q_dim_;
  RETURN_IF_ERROR(Backend::TopMean(t, stream_));
  has_question_vector_ = true;
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::EnsureReprBlocks(int64_t blocks) {
  if (blocks <= repr_blocks_) return absl::OkStatus();
  const int64_t grown = std::min(options_.max_blocks, std::max(blocks, 2 * repr_blocks_));
  Buffers& b = *buf_;
  auto failed = [&](const absl::Status& s) {
    return AnnotateStatus(
        s, absl::StrCat("layer ", layer_, ": growing the memory to ", grown, " blocks"));
  };
  absl::StatusOr<Buffer<float>> reprs = Buffer<float>::Create(static_cast<size_t>(grown * q_dim_));
  if (!reprs.ok()) return failed(reprs.status());
  absl::StatusOr<size_t> ws_bytes = Backend::BlockTopKWorkspaceBytes(grown);
  if (!ws_bytes.ok()) return failed(ws_bytes.status());
  absl::StatusOr<Buffer<uint8_t>> ws = Buffer<uint8_t>::Create(*ws_bytes);
  if (!ws.ok()) return failed(ws.status());
  RETURN_IF_ERROR(Backend::CopyRows({.src = b.reprs.data(),
                                     .dst = reprs->data(),
                                     .rows = num_blocks(),
                                     .cols = q_dim_,
                                     .src_stride = q_dim_,
                                     .dst_stride = q_dim_},
                                    stream_));
  // The old array goes once the copy (and everything before it that reads it) has run.
  RETURN_IF_ERROR(Backend::Synchronize(stream_));
  b.bytes += (grown - repr_blocks_) * q_dim_ * static_cast<int64_t>(sizeof(float)) +
             static_cast<int64_t>(ws->bytes()) - static_cast<int64_t>(b.topk_workspace.bytes());
  b.reprs = std::move(*reprs);
  b.topk_workspace = std::move(*ws);
  repr_blocks_ = grown;
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::CutBlock() {
  const int64_t bs = config_.block_size;
  const int64_t id = num_blocks();
  if (topk_ > 0) {  // Streaming never retrieves, so it stores nothing.
    if (id >= options_.max_blocks) {
      return absl::ResourceExhaustedError(
          absl::StrCat("layer ", layer_, ": the memory holds at most ", options_.max_blocks,
                       " blocks of ", bs, " tokens; the document needs more (raise max_blocks)"));
    }
    // Before anything changes: a failed allocation leaves the memory as it was.
    RETURN_IF_ERROR(EnsureReprBlocks(id + 1));
    Buffers& b = *buf_;
    if (tiered_) {
      // To the storage: K and V of the block's rows (dense: pending rows are kv_dim apart).
      const int64_t fpb = bs * kv_dim_;
      RETURN_IF_ERROR(Backend::CopyToHost(b.h_block.data(), pk(0), fpb, stream_));
      RETURN_IF_ERROR(Backend::CopyToHost(b.h_block.data() + fpb, pv(0), fpb, stream_));
      RETURN_IF_ERROR(Backend::Synchronize(stream_));
      RETURN_IF_ERROR(
          options_.storage->Put(worker::BlockId{options_.session, layer_, static_cast<int32_t>(id)},
                                std::span<const float>(b.h_block.data(), fpb),
                                std::span<const float>(b.h_block.data() + fpb, fpb)));
    } else {
      for (auto [src, dst] :
           {std::pair{pk(0), b.pool_k.data()}, std::pair{pv(0), b.pool_v.data()}}) {
        RETURN_IF_ERROR(Backend::CopyRows({.src = src,
                                           .dst = dst + id * bs * kv_dim_,
                                           .rows = bs,
                                           .cols = kv_dim_,
                                           .src_stride = kv_dim_,
                                           .dst_stride = kv_dim_},
                                          stream_));
      }
    }
    // R_b[h]: mean pre-RoPE key (kv head h / G) of the block's repr_topk highest-scoring tokens.
    TopMeanParams t;
    t.scores = ps(0);
    t.vectors = pk(0);
    t.out = b.reprs.data() + id * q_dim_;
    t.rows = bs;
    t.heads = heads_;
    t.group = group_;
    t.head_dim = head_dim_;
    t.k = config_.repr_topk;
    t.score_stride = heads_;
    t.vector_stride = kv_dim_;
    RETURN_IF_ERROR(Backend::TopMean(t, stream_));
  }
  block_start_.push_back(p0_);
  block_owner_.push_back(options_.session);
  pb_ += bs;
  p0_ += bs;
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Save(std::string* out) const {
  const int64_t blocks = num_blocks();
  if (blocks > 0 && topk_ > 0 && !tiered_) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer_,
                     ": the block pool keeps block K/V in device memory only; saving a "
                     "memory with blocks needs the tiered mode (a block storage)"));
  }
  const Buffers& b = *buf_;
  const int64_t pending = end_ - p0_;
  auto download = [&](const Buffer<float>& buf, int64_t offset, int64_t count,
                      std::vector<float>* host) -> absl::Status {
    host->assign(count, 0.0f);
    if (count == 0) return absl::OkStatus();
    return Backend::CopyToHost(host->data(), buf.data() + offset, count, stream_);
  };
  std::vector<float> init_k, init_v, pk, pkr, pv, ps, reprs, question;
  RETURN_IF_ERROR(download(b.init_k, 0, init_size_ * kv_dim_, &init_k));
  RETURN_IF_ERROR(download(b.init_v, 0, init_size_ * kv_dim_, &init_v));
  RETURN_IF_ERROR(download(b.pk, pb_ * kv_dim_, pending * kv_dim_, &pk));
  RETURN_IF_ERROR(download(b.pkr, pb_ * kv_dim_, pending * kv_dim_, &pkr));
  RETURN_IF_ERROR(download(b.pv, pb_ * kv_dim_, pending * kv_dim_, &pv));
  RETURN_IF_ERROR(download(b.ps, pb_ * heads_, pending * heads_, &ps));
  // Streaming computes no representative vectors (it never retrieves): zeros.
  RETURN_IF_ERROR(download(b.reprs, 0, topk_ > 0 ? blocks * q_dim_ : 0, &reprs));
  reprs.resize(blocks * q_dim_, 0.0f);
  if (has_question_vector_) RETURN_IF_ERROR(download(b.question_vec, 0, q_dim_, &question));
  RETURN_IF_ERROR(Backend::Synchronize(stream_));
  worker::LayerMemoryStateView st;
  st.end = end_;
  st.p0 = p0_;
  st.n_init = init_size_;
  st.init_ran = init_ran_;
  st.init_k = init_k;
  st.init_v = init_v;
  st.pk = pk;
  st.pkr = pkr;
  st.pv = pv;
  st.ps = ps;
  st.block_start = block_start_;
  st.block_owner = block_owner_;
  st.reprs = reprs;
  st.question_vector = question;
  worker::EncodeLayerMemoryState(config_, layer_,
                                 {static_cast<int32_t>(heads_), static_cast<int32_t>(kv_heads_),
                                  static_cast<int32_t>(head_dim_)},
                                 st, out);
  return absl::OkStatus();
}

template <typename Backend>
absl::Status LayerMemoryEngine<Backend>::Load(std::string_view blob) {
  if (end_ != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layer ", layer_, ": load into a memory that has processed ", end_, " tokens"));
  }
  ASSIGN_OR_RETURN(
      worker::LayerMemoryState st,
      worker::DecodeLayerMemoryState(config_, layer_,
                                     {static_cast<int32_t>(heads_), static_cast<int32_t>(kv_heads_),
                                      static_cast<int32_t>(head_dim_)},
                                     blob));
  const int64_t blocks = static_cast<int64_t>(st.block_start.size());
  if (blocks > 0 && topk_ > 0 && !tiered_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layer ", layer_, ": the saved state has ", blocks,
        " blocks, whose K/V are in a block storage; restoring it needs the tiered mode"));
  }
  if (blocks > options_.max_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat("layer ", layer_, ": the saved state has ",
                                                     blocks, " blocks, above max_blocks ",
                                                     options_.max_blocks));
  }
  if (st.question_vector.empty() && question_.has_value() && question_->begin < st.end) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer_, ": the question span starts at ", question_->begin,
                     ", before the restored position ", st.end));
  }
  if (topk_ > 0) RETURN_IF_ERROR(EnsureReprBlocks(blocks));
  Buffers& b = *buf_;
  auto upload = [&](Buffer<float>& buf, const std::vector<float>& host) -> absl::Status {
    if (host.empty()) return absl::OkStatus();
    return buf.Upload(host.data(), host.size(), stream_);
  };
  RETURN_IF_ERROR(upload(b.init_k, st.init_k));
  RETURN_IF_ERROR(upload(b.init_v, st.init_v));
  RETURN_IF_ERROR(upload(b.pk, st.pk));
  RETURN_IF_ERROR(upload(b.pkr, st.pkr));
  RETURN_IF_ERROR(upload(b.pv, st.pv));
  RETURN_IF_ERROR(upload(b.ps, st.ps));
  if (topk_ > 0) RETURN_IF_ERROR(upload(b.reprs, st.reprs));
  if (!st.question_vector.empty()) RETURN_IF_ERROR(upload(b.question_vec, st.question_vector));
  RETURN_IF_ERROR(Backend::Synchronize(stream_));
  init_size_ = st.n_init;
  p0_ = st.p0;
  end_ = st.end;
  pb_ = 0;
  init_ran_ = st.init_ran;
  block_start_ = std::move(st.block_start);
  block_owner_ = std::move(st.block_owner);
  has_question_vector_ = !st.question_vector.empty();
  return absl::OkStatus();
}

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_LAYER_MEMORY_ENGINE_H_
