#include "cuda/device_layers.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/device_error.h"
#include "common/float16.h"
#include "common/status_macros.h"
#include "cuda/cast.h"
#include "cuda/embedding.h"
#include "cuda/memory_attention.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"
#include "cuda/rope_model.h"
#include "cuda/swiglu.h"

namespace qllm::cuda {
namespace {

absl::Status WithContext(const absl::Status& s, const std::string& context) {
  return AnnotateStatus(s, context);
}

// A device copy of host fp32 values. The upload is from pageable memory, which CUDA stages
// before returning, so `values` may go away afterwards.
absl::StatusOr<DeviceBuffer<float>> UploadFloat(const std::vector<float>& values, Stream stream) {
  ASSIGN_OR_RETURN(DeviceBuffer<float> d, DeviceBuffer<float>::Create(values.size()));
  RETURN_IF_ERROR(d.Upload(values, stream));
  return d;
}

// A device copy of `count` host fp32 values rounded to bf16 (round to nearest even).
absl::StatusOr<DeviceBuffer<uint16_t>> UploadBf16(const float* values, size_t count,
                                                  Stream stream) {
  std::vector<uint16_t> bf16(count);
  for (size_t i = 0; i < count; ++i) bf16[i] = FloatToBf16(values[i]);
  ASSIGN_OR_RETURN(DeviceBuffer<uint16_t> d, DeviceBuffer<uint16_t>::Create(count));
  RETURN_IF_ERROR(d.Upload(bf16, stream));
  return d;
}

}  // namespace

absl::Status CheckDeviceShapes(const model::ModelConfig& c) {
  if (c.head_dim > kMemoryAttentionMaxHeadDim || c.head_dim % 2 != 0) {
    return absl::UnimplementedError(absl::StrCat("device engine: head_dim ", c.head_dim,
                                                 " (must be even and at most ",
                                                 kMemoryAttentionMaxHeadDim, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceWeights>> DeviceWeights::Upload(
    const model::ModelWeights& weights, Stream s) {
  const model::ModelConfig& c = weights.config;
  RETURN_IF_ERROR(CheckDeviceShapes(c));
  auto w = std::make_unique<DeviceWeights>();
  w->config = c;
  w->layer_begin = weights.layer_begin;
  if (weights.has_embedding()) {
    ASSIGN_OR_RETURN(w->embedding, UploadFloat(weights.embedding, s));
  }
  if (weights.has_head()) {
    ASSIGN_OR_RETURN(w->final_norm, UploadFloat(weights.final_norm, s));
    ASSIGN_OR_RETURN(
        w->head, UploadBf16(weights.head_matrix(), size_t{1} * c.vocab_size * c.hidden_size, s));
  }
  const std::vector<double> inv_freq = RopeInverseFrequencies(RopeConfigOf(c));
  ASSIGN_OR_RETURN(w->inv_freq, DeviceBuffer<double>::Create(inv_freq.size()));
  RETURN_IF_ERROR(w->inv_freq.Upload(inv_freq, s));
  for (const model::LayerWeights& l : weights.layers) {
    DeviceLayerWeights d;
    ASSIGN_OR_RETURN(d.attn_norm, UploadFloat(l.attn_norm, s));
    ASSIGN_OR_RETURN(d.wqkv, UploadBf16(l.wqkv.data(), l.wqkv.size(), s));
    ASSIGN_OR_RETURN(d.wo, UploadBf16(l.wo.data(), l.wo.size(), s));
    ASSIGN_OR_RETURN(d.ffn_norm, UploadFloat(l.ffn_norm, s));
    ASSIGN_OR_RETURN(d.w13, UploadBf16(l.w13.data(), l.w13.size(), s));
    ASSIGN_OR_RETURN(d.w2, UploadBf16(l.w2.data(), l.w2.size(), s));
    w->layers.push_back(std::move(d));
  }
  return w;
}

absl::Status EnsureKvCapacity(std::span<DeviceSequenceLayer> layers, int64_t kv_dim, int64_t valid,
                              int64_t tokens, int64_t max_tokens, Stream stream) {
  if (tokens > max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device engine: ", tokens, " tokens exceed the KV cache limit of ", max_tokens));
  }
  if (layers.empty()) return absl::OkStatus();
  const int64_t capacity = static_cast<int64_t>(layers[0].k_cache.size()) / kv_dim;
  if (tokens <= capacity) return absl::OkStatus();
  const int64_t grown = std::min(max_tokens, std::max({tokens, 2 * capacity, int64_t{256}}));
  // Allocate everything first so that a failure leaves the caches as they were (and frees
  // only buffers nothing was enqueued on).
  std::vector<DeviceBuffer<float>> k(layers.size()), v(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    ASSIGN_OR_RETURN(k[i], DeviceBuffer<float>::Create(grown * kv_dim));
    ASSIGN_OR_RETURN(v[i], DeviceBuffer<float>::Create(grown * kv_dim));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    RETURN_IF_ERROR(k[i].CopyFrom(layers[i].k_cache, valid * kv_dim, stream));
    RETURN_IF_ERROR(v[i].CopyFrom(layers[i].v_cache, valid * kv_dim, stream));
  }
  // The copies must be done before the old buffers are freed; their errors show here, before
  // the caches are replaced.
  RETURN_IF_ERROR(internal::SynchronizeStream(stream));
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i].k_cache = std::move(k[i]);
    layers[i].v_cache = std::move(v[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PieceRunner>> PieceRunner::Create(const model::ModelConfig& c,
                                                                 int64_t max_piece, bool full_mode,
                                                                 bool memory_modes, bool head) {
  if (max_piece <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device engine: piece size ", max_piece, " must be positive"));
  }
  std::unique_ptr<PieceRunner> r(new PieceRunner());
  r->config_ = c;
  r->max_piece_ = max_piece;
  ASSIGN_OR_RETURN(r->stream_, CudaStream::Create());
  ASSIGN_OR_RETURN(r->gemm_, GemmLt::Create());
  if (full_mode) {
    ASSIGN_OR_RETURN(r->gemm_attention_, MemoryAttentionGemm::Create());
  }
  ASSIGN_OR_RETURN(r->gemm_workspace_,
                   DeviceBuffer<uint8_t>::Create(GemmLt::kDefaultWorkspaceBytes));
  const size_t n = max_piece, hd = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const size_t f = c.intermediate_size, vocab = c.vocab_size;
  ASSIGN_OR_RETURN(r->ids_, DeviceBuffer<int32_t>::Create(n));
  ASSIGN_OR_RETURN(r->positions_, DeviceBuffer<int64_t>::Create(n));
  ASSIGN_OR_RETURN(r->hidden_, DeviceBuffer<float>::Create(n * hd));
  ASSIGN_OR_RETURN(r->norm_, DeviceBuffer<float>::Create(n * hd));
  ASSIGN_OR_RETURN(r->gemm_in_, DeviceBuffer<uint16_t>::Create(n * std::max({hd, qd, f})));
  ASSIGN_OR_RETURN(r->q_, DeviceBuffer<float>::Create(full_mode ? n * qd : 0));
  ASSIGN_OR_RETURN(r->qkv_, DeviceBuffer<float>::Create(memory_modes ? n * (qd + 2 * kvd) : 0));
  ASSIGN_OR_RETURN(r->attn_, DeviceBuffer<float>::Create(n * qd));
  ASSIGN_OR_RETURN(r->proj_, DeviceBuffer<float>::Create(n * hd));
  ASSIGN_OR_RETURN(r->gate_up_, DeviceBuffer<float>::Create(n * 2 * f));
  ASSIGN_OR_RETURN(r->mlp_, DeviceBuffer<float>::Create(n * f));
  ASSIGN_OR_RETURN(r->logits_, DeviceBuffer<float>::Create(head ? n * vocab : 0));
  MemoryAttentionParams sizing;
  sizing.n = max_piece;
  sizing.heads = c.num_heads;
  ASSIGN_OR_RETURN(r->attn_workspace_, DeviceBuffer<float>::Create(
                                           MemoryAttentionWorkspaceBytes(sizing) / sizeof(float)));
  r->h_positions_.resize(n);
  return r;
}

absl::Status PieceRunner::Gemm(const uint16_t* a, const uint16_t* b, float* c, int64_t m, int64_t n,
                               int64_t k) {
  GemmLtParams p;
  p.a = a;
  p.b = b;
  p.c = c;
  p.m = m;
  p.n = n;
  p.k = k;
  p.lda = k;
  p.ldb = k;
  p.ldc = n;
  p.trans_b = true;  // Weights are [out_features, in_features].
  p.workspace = gemm_workspace_.data();
  p.workspace_bytes = gemm_workspace_.bytes();
  return gemm_->Launch(p, stream());
}

absl::Status PieceRunner::ToBf16(const float* x, int64_t rows, int64_t cols) {
  return LaunchCastToBf16({.x = x, .y = gemm_in_.data(), .n = rows * cols}, stream());
}

absl::Status PieceRunner::NormToBf16(const float* weight, int64_t rows, int64_t first_row) {
  RmsNormParams p;
  p.x = hidden_.data() + first_row * config_.hidden_size;
  p.weight = weight;
  p.y = norm_.data();
  p.rows = rows;
  p.dim = config_.hidden_size;
  p.eps = config_.rms_norm_eps;
  RETURN_IF_ERROR(LaunchRmsNorm(p, stream()));
  return ToBf16(norm_.data(), rows, config_.hidden_size);
}

absl::Status PieceRunner::Begin(const DeviceWeights& w, const int32_t* h_ids, const float* h_hidden,
                                int64_t n, int64_t pos0) {
  if (n <= 0 || n > max_piece_ || (h_ids == nullptr) == (h_hidden == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("device engine: a piece of ", n,
                                                   " tokens (at most ", max_piece_,
                                                   ") needs either token ids or activations"));
  }
  for (int64_t i = 0; i < n; ++i) h_positions_[i] = pos0 + i;
  // Pageable sources: CUDA stages them before returning, so the host staging can be reused
  // by the next piece while this one is still queued.
  RETURN_IF_ERROR(positions_.Upload(h_positions_.data(), n, stream()));
  if (h_hidden != nullptr) {
    return hidden_.Upload(h_hidden, static_cast<size_t>(n) * config_.hidden_size, stream());
  }
  if (!w.has_embedding()) {
    return absl::FailedPreconditionError("device engine: this shard has no token embedding");
  }
  RETURN_IF_ERROR(ids_.Upload(h_ids, n, stream()));
  EmbeddingParams e;
  e.tokens = ids_.data();
  e.table = w.embedding.data();
  e.out = hidden_.data();
  e.n = n;
  e.vocab = config_.vocab_size;
  e.dim = config_.hidden_size;
  return LaunchEmbedding(e, stream());
}

absl::Status PieceRunner::Attention(const DeviceLayerWeights& w, DeviceSequenceLayer& seq,
                                    int64_t n, int64_t pos0) {
  const int64_t hd = config_.hidden_size, qd = config_.q_dim(), kvd = config_.kv_dim();
  if (gemm_attention_ == nullptr || static_cast<int64_t>(seq.k_cache.size()) < (pos0 + n) * kvd) {
    return absl::InternalError("device engine: full attention without its cache or runner");
  }
  // Q, K and V from the rows of wqkv; K and V land in the cache at positions pos0 ...
  const uint16_t* wqkv = w.wqkv.data();
  float* k = seq.k_cache.data() + pos0 * kvd;
  float* v = seq.v_cache.data() + pos0 * kvd;
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), wqkv, q_.data(), n, qd, hd));
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), wqkv + qd * hd, k, n, kvd, hd));
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), wqkv + (qd + kvd) * hd, v, n, kvd, hd));

  RopeParams rope;
  rope.positions = positions_.data();
  rope.inv_freq = inv_freq_;
  rope.tokens = n;
  rope.head_dim = config_.head_dim;
  rope.x = q_.data();
  rope.heads = config_.num_heads;
  rope.row_stride = qd;
  RETURN_IF_ERROR(LaunchRope(rope, stream()));
  rope.x = k;
  rope.heads = config_.num_kv_heads;
  rope.row_stride = kvd;
  RETURN_IF_ERROR(LaunchRope(rope, stream()));

  // Causal attention over the cache [0, pos0 + n): the memory attention with the whole
  // sequence as its local window (key j is visible to query i iff j <= pos0 + i) and no
  // global keys. Both query inputs are the rotated queries; q_global is read but unused.
  MemoryAttentionParams a;
  a.q_local = q_.data();
  a.q_global = q_.data();
  a.local_k = seq.k_cache.data();
  a.local_v = seq.v_cache.data();
  a.out = attn_.data();
  a.n = n;
  a.start = pos0;
  a.num_local = pos0 + n;
  a.local_first = 0;
  a.num_global = 0;
  a.n_local = pos0 + n;
  a.heads = config_.num_heads;
  a.kv_heads = config_.num_kv_heads;
  a.head_dim = config_.head_dim;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config_.head_dim)));
  if (n >= CudaMemoryBackend::kGemmAttentionMinQueries) {
    return gemm_attention_->Launch(a, stream());
  }
  return LaunchMemoryAttention(a, attn_workspace_.data(), attn_workspace_.bytes(), stream());
}

absl::Status PieceRunner::MemoryAttention(const DeviceLayerWeights& w, DeviceSequenceLayer& seq,
                                          int64_t n, int64_t pos0,
                                          std::vector<worker::ChunkSelection>* record) {
  if (qkv_.empty()) {
    return absl::InternalError("device engine: memory attention without its buffers");
  }
  // One GEMM gives the rows LayerMemory::Process reads: q, k and v of each token, pre-RoPE.
  const int64_t width = config_.q_dim() + 2 * config_.kv_dim();
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), w.wqkv.data(), qkv_.data(), n, width, config_.hidden_size));
  return seq.memory->Process(qkv_.data(), width, n, pos0, attn_.data(), record);
}

absl::Status PieceRunner::Layer(const DeviceLayerWeights& w, DeviceSequenceLayer& seq, int64_t n,
                                int64_t pos0, std::vector<worker::ChunkSelection>* record) {
  const int64_t hd = config_.hidden_size, qd = config_.q_dim(), f = config_.intermediate_size;
  // Attention block.
  RETURN_IF_ERROR(NormToBf16(w.attn_norm.data(), n, 0));
  if (seq.memory != nullptr) {
    RETURN_IF_ERROR(MemoryAttention(w, seq, n, pos0, record));
  } else {
    RETURN_IF_ERROR(Attention(w, seq, n, pos0));
  }
  RETURN_IF_ERROR(ToBf16(attn_.data(), n, qd));
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), w.wo.data(), proj_.data(), n, hd, qd));
  RETURN_IF_ERROR(LaunchAdd({.x = proj_.data(), .y = hidden_.data(), .n = n * hd}, stream()));
  // MLP block.
  RETURN_IF_ERROR(NormToBf16(w.ffn_norm.data(), n, 0));
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), w.w13.data(), gate_up_.data(), n, 2 * f, hd));
  RETURN_IF_ERROR(LaunchSwiGlu(
      {.gate_up = gate_up_.data(), .out = mlp_.data(), .rows = n, .dim = f}, stream()));
  RETURN_IF_ERROR(ToBf16(mlp_.data(), n, f));
  RETURN_IF_ERROR(Gemm(gemm_in_.data(), w.w2.data(), proj_.data(), n, hd, f));
  return LaunchAdd({.x = proj_.data(), .y = hidden_.data(), .n = n * hd}, stream());
}

absl::Status PieceRunner::Layers(const DeviceWeights& w, std::span<DeviceSequenceLayer> seq,
                                 int64_t n, int64_t pos0,
                                 std::vector<worker::ChunkSelection>* record) {
  if (seq.size() != w.layers.size() || n <= 0 || n > max_piece_) {
    return absl::InternalError(absl::StrCat("device engine: ", seq.size(), " layer states for ",
                                            w.layers.size(), " layers, piece of ", n));
  }
  inv_freq_ = w.inv_freq.data();
  for (size_t l = 0; l < seq.size(); ++l) {
    RETURN_IF_ERROR(WithContext(Layer(w.layers[l], seq[l], n, pos0, record),
                                absl::StrCat("layer ", w.layer_begin + static_cast<int64_t>(l))));
  }
  return absl::OkStatus();
}

absl::Status PieceRunner::Head(const DeviceWeights& w, int64_t rows, int64_t first_row) {
  if (!w.has_head() || logits_.empty()) {
    return absl::FailedPreconditionError("device engine: this shard has no LM head");
  }
  RETURN_IF_ERROR(NormToBf16(w.final_norm.data(), rows, first_row));
  return Gemm(gemm_in_.data(), w.head.data(), logits_.data(), rows, config_.vocab_size,
              config_.hidden_size);
}

absl::Status PieceRunner::HeadOfHost(const DeviceWeights& w, const float* h_hidden, int64_t rows) {
  if (rows <= 0 || rows > max_piece_) {
    return absl::InvalidArgumentError(
        absl::StrCat("device engine: head of ", rows, " rows (at most ", max_piece_, ")"));
  }
  RETURN_IF_ERROR(
      hidden_.Upload(h_hidden, static_cast<size_t>(rows) * config_.hidden_size, stream()));
  return Head(w, rows, 0);
}

}  // namespace qllm::cuda
