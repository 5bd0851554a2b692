#include "cuda/device_model.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/status_macros.h"
#include "cuda/cast.h"
#include "cuda/device.h"
#include "cuda/device_layer_memory.h"
#include "cuda/embedding.h"
#include "cuda/gemm_lt.h"
#include "cuda/memory_attention.h"
#include "cuda/memory_attention_gemm.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"
#include "cuda/rope_model.h"
#include "cuda/sampling.h"
#include "cuda/swiglu.h"

namespace qllm::cuda {
namespace {

// The settings of `s` for the device sampler; logits and out are the caller's.
SampleParams SampleParamsOf(const DeviceSampling& s, int32_t vocab) {
  SampleParams p;
  p.vocab = vocab;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.u01 = s.u01;
  return p;
}

absl::Status WithContext(const absl::Status& s, const std::string& context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
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

// One layer's weights and KV cache on the device.
struct DeviceLayer {
  DeviceBuffer<float> attn_norm;  // [hidden]
  DeviceBuffer<uint16_t> wqkv;    // bf16 [q_dim + 2 * kv_dim, hidden]: q rows, k rows, v rows
  DeviceBuffer<uint16_t> wo;      // bf16 [hidden, q_dim]
  DeviceBuffer<float> ffn_norm;   // [hidden]
  DeviceBuffer<uint16_t> w13;     // bf16 [2 * intermediate, hidden]: gate rows, then up rows
  DeviceBuffer<uint16_t> w2;      // bf16 [hidden, intermediate]
  DeviceBuffer<float> k_cache;    // [max_tokens, kv_dim], keys rotated at their positions
  DeviceBuffer<float> v_cache;    // [max_tokens, kv_dim]
  // Memory modes: the layer's context memory (k_cache and v_cache stay empty).
  std::unique_ptr<DeviceLayerMemory> memory;
};

}  // namespace

struct DeviceModel::Impl {
  model::ModelConfig config;
  DeviceModelOptions options;
  int32_t layer_begin = 0;
  int64_t position = 0;  // Valid tokens in every layer's KV cache.
  bool use_memory = false;
  int64_t piece = 0;  // Most tokens per Piece: max_chunk, or exc_block_size in memory modes.

  CudaStream stream;
  std::unique_ptr<GemmLt> gemm;
  // Full mode: the attention of pieces of >= kGemmAttentionMinQueries tokens (SGEMM path).
  std::unique_ptr<MemoryAttentionGemm> gemm_attention;
  DeviceBuffer<uint8_t> gemm_workspace;  // [GemmLt::kDefaultWorkspaceBytes]

  DeviceBuffer<float> embedding;   // [vocab, hidden]
  DeviceBuffer<float> final_norm;  // [hidden]
  DeviceBuffer<uint16_t> head;     // bf16 [vocab, hidden]
  DeviceBuffer<double> inv_freq;   // [head_dim / 2]
  std::vector<DeviceLayer> layers;

  // Activations of one piece of at most max_chunk tokens (n below).
  DeviceBuffer<int32_t> ids;        // [n]
  DeviceBuffer<int64_t> positions;  // [n]
  DeviceBuffer<float> hidden;       // [n, hidden]: the residual stream
  DeviceBuffer<float> norm;         // [n, hidden]
  DeviceBuffer<uint16_t> gemm_in;   // bf16 [n, max(hidden, q_dim, intermediate)]
  DeviceBuffer<float> q;            // [n, q_dim], rotated
  DeviceBuffer<float> qkv;          // Memory modes: [n, q_dim + 2 * kv_dim], pre-RoPE
  DeviceBuffer<float> attn;         // [n, q_dim]
  DeviceBuffer<float> proj;         // [n, hidden]: o_proj / down_proj output
  DeviceBuffer<float> gate_up;      // [n, 2 * intermediate]
  DeviceBuffer<float> mlp;          // [n, intermediate]
  DeviceBuffer<float> logits;       // [n, vocab]
  DeviceBuffer<float> attn_workspace;
  DeviceBuffer<uint8_t> sample_workspace;  // SampleWorkspaceBytes(vocab)
  DeviceBuffer<int32_t> token;             // [1] the sampled token

  std::vector<int64_t> h_positions;  // Host staging of `positions`.

  // c[m, n] = a[m, k] . b[n, k]^T with bf16 inputs and fp32 output, all dense.
  absl::Status Gemm(const uint16_t* a, const uint16_t* b, float* c, int64_t m, int64_t n,
                    int64_t k);
  // gemm_in[rows, cols] = bf16(x[rows, cols]).
  absl::Status ToBf16(const float* x, int64_t rows, int64_t cols);
  // norm = RMSNorm(hidden[first_row, first_row + rows)) with `weight`, then gemm_in = bf16(norm).
  absl::Status NormToBf16(const float* weight, int64_t rows, int64_t first_row = 0);
  absl::Status Attention(const DeviceLayer& layer, int64_t n, int64_t pos0);
  absl::Status MemoryAttention(DeviceLayer& layer, int64_t n, int64_t pos0,
                               std::vector<worker::ChunkSelection>* record);
  absl::Status Layer(DeviceLayer& layer, int64_t n, int64_t pos0,
                     std::vector<worker::ChunkSelection>* record);
  // Runs n <= piece tokens at pos0 .. pos0 + n - 1 of a Forward call with `forward`. Every
  // piece but the last of a last-token (or sampling) call stops before the head; otherwise the
  // copy of the logits into logits_host (if not null: all rows, or the last one) is enqueued,
  // and on the last piece of a sampling call the sampled token's copy.
  absl::Status Piece(const int32_t* h_ids, int64_t n, int64_t pos0, bool final, float* logits_host,
                     const ForwardOptions& forward);
};

absl::Status DeviceModel::Impl::Gemm(const uint16_t* a, const uint16_t* b, float* c, int64_t m,
                                     int64_t n, int64_t k) {
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
  p.workspace = gemm_workspace.data();
  p.workspace_bytes = gemm_workspace.bytes();
  return gemm->Launch(p, stream.get());
}

absl::Status DeviceModel::Impl::ToBf16(const float* x, int64_t rows, int64_t cols) {
  return LaunchCastToBf16({.x = x, .y = gemm_in.data(), .n = rows * cols}, stream.get());
}

absl::Status DeviceModel::Impl::NormToBf16(const float* weight, int64_t rows, int64_t first_row) {
  RmsNormParams p;
  p.x = hidden.data() + first_row * config.hidden_size;
  p.weight = weight;
  p.y = norm.data();
  p.rows = rows;
  p.dim = config.hidden_size;
  p.eps = config.rms_norm_eps;
  RETURN_IF_ERROR(LaunchRmsNorm(p, stream.get()));
  return ToBf16(norm.data(), rows, config.hidden_size);
}

absl::Status DeviceModel::Impl::Attention(const DeviceLayer& layer, int64_t n, int64_t pos0) {
  const int64_t hd = config.hidden_size, qd = config.q_dim(), kvd = config.kv_dim();
  // Q, K and V from the rows of wqkv; K and V land in the cache at positions pos0 ...
  const uint16_t* w = layer.wqkv.data();
  float* k = layer.k_cache.data() + pos0 * kvd;
  float* v = layer.v_cache.data() + pos0 * kvd;
  RETURN_IF_ERROR(Gemm(gemm_in.data(), w, q.data(), n, qd, hd));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), w + qd * hd, k, n, kvd, hd));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), w + (qd + kvd) * hd, v, n, kvd, hd));

  RopeParams rope;
  rope.positions = positions.data();
  rope.inv_freq = inv_freq.data();
  rope.tokens = n;
  rope.head_dim = config.head_dim;
  rope.x = q.data();
  rope.heads = config.num_heads;
  rope.row_stride = qd;
  RETURN_IF_ERROR(LaunchRope(rope, stream.get()));
  rope.x = k;
  rope.heads = config.num_kv_heads;
  rope.row_stride = kvd;
  RETURN_IF_ERROR(LaunchRope(rope, stream.get()));

  // Causal attention over the cache [0, pos0 + n): the memory attention with the whole
  // sequence as its local window (key j is visible to query i iff j <= pos0 + i) and no
  // global keys. Both query inputs are the rotated queries; q_global is read but unused.
  MemoryAttentionParams a;
  a.q_local = q.data();
  a.q_global = q.data();
  a.local_k = layer.k_cache.data();
  a.local_v = layer.v_cache.data();
  a.out = attn.data();
  a.n = n;
  a.start = pos0;
  a.num_local = pos0 + n;
  a.local_first = 0;
  a.num_global = 0;
  a.n_local = pos0 + n;
  a.heads = config.num_heads;
  a.kv_heads = config.num_kv_heads;
  a.head_dim = config.head_dim;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim)));
  if (n >= CudaMemoryBackend::kGemmAttentionMinQueries) {
    return gemm_attention->Launch(a, stream.get());
  }
  return LaunchMemoryAttention(a, attn_workspace.data(), attn_workspace.bytes(), stream.get());
}

absl::Status DeviceModel::Impl::MemoryAttention(DeviceLayer& layer, int64_t n, int64_t pos0,
                                                std::vector<worker::ChunkSelection>* record) {
  // One GEMM gives the rows LayerMemory::Process reads: q, k and v of each token, pre-RoPE.
  const int64_t width = config.q_dim() + 2 * config.kv_dim();
  RETURN_IF_ERROR(
      Gemm(gemm_in.data(), layer.wqkv.data(), qkv.data(), n, width, config.hidden_size));
  return layer.memory->Process(qkv.data(), width, n, pos0, attn.data(), record);
}

absl::Status DeviceModel::Impl::Layer(DeviceLayer& layer, int64_t n, int64_t pos0,
                                      std::vector<worker::ChunkSelection>* record) {
  const int64_t hd = config.hidden_size, qd = config.q_dim(), f = config.intermediate_size;
  // Attention block.
  RETURN_IF_ERROR(NormToBf16(layer.attn_norm.data(), n));
  RETURN_IF_ERROR(use_memory ? MemoryAttention(layer, n, pos0, record) : Attention(layer, n, pos0));
  RETURN_IF_ERROR(ToBf16(attn.data(), n, qd));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), layer.wo.data(), proj.data(), n, hd, qd));
  RETURN_IF_ERROR(LaunchAdd({.x = proj.data(), .y = hidden.data(), .n = n * hd}, stream.get()));
  // MLP block.
  RETURN_IF_ERROR(NormToBf16(layer.ffn_norm.data(), n));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), layer.w13.data(), gate_up.data(), n, 2 * f, hd));
  RETURN_IF_ERROR(LaunchSwiGlu({.gate_up = gate_up.data(), .out = mlp.data(), .rows = n, .dim = f},
                               stream.get()));
  RETURN_IF_ERROR(ToBf16(mlp.data(), n, f));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), layer.w2.data(), proj.data(), n, hd, f));
  return LaunchAdd({.x = proj.data(), .y = hidden.data(), .n = n * hd}, stream.get());
}

absl::Status DeviceModel::Impl::Piece(const int32_t* h_ids, int64_t n, int64_t pos0, bool final,
                                      float* logits_host, const ForwardOptions& forward) {
  const DeviceSampling* sample = final ? forward.sample : nullptr;
  const bool last_only = forward.last_only || forward.sample != nullptr;
  for (int64_t i = 0; i < n; ++i) h_positions[i] = pos0 + i;
  // Pageable sources: CUDA stages them before returning, so the host staging can be reused
  // by the next piece while this one is still queued.
  RETURN_IF_ERROR(ids.Upload(h_ids, n, stream.get()));
  RETURN_IF_ERROR(positions.Upload(h_positions.data(), n, stream.get()));
  EmbeddingParams e;
  e.tokens = ids.data();
  e.table = embedding.data();
  e.out = hidden.data();
  e.n = n;
  e.vocab = config.vocab_size;
  e.dim = config.hidden_size;
  RETURN_IF_ERROR(LaunchEmbedding(e, stream.get()));
  for (size_t l = 0; l < layers.size(); ++l) {
    RETURN_IF_ERROR(WithContext(Layer(layers[l], n, pos0, forward.record),
                                absl::StrCat("layer ", layer_begin + static_cast<int64_t>(l))));
  }
  if (last_only && !final) return absl::OkStatus();  // A prefill piece before the last.
  const int64_t rows = last_only ? 1 : n;
  RETURN_IF_ERROR(NormToBf16(final_norm.data(), rows, n - rows));
  RETURN_IF_ERROR(Gemm(gemm_in.data(), head.data(), logits.data(), rows, config.vocab_size,
                       config.hidden_size));
  if (sample != nullptr) {
    SampleParams p = SampleParamsOf(*sample, config.vocab_size);
    p.logits = logits.data() + (rows - 1) * config.vocab_size;
    p.out = token.data();
    RETURN_IF_ERROR(
        LaunchSample(p, sample_workspace.data(), sample_workspace.bytes(), stream.get()));
    RETURN_IF_ERROR(token.Download(forward.sample_token, 1, stream.get()));
  }
  if (logits_host == nullptr) return absl::OkStatus();
  return logits.Download(logits_host, static_cast<size_t>(rows) * config.vocab_size, stream.get());
}

DeviceModel::DeviceModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceModel::~DeviceModel() = default;
DeviceModel::DeviceModel(DeviceModel&&) noexcept = default;
DeviceModel& DeviceModel::operator=(DeviceModel&&) noexcept = default;

const model::ModelConfig& DeviceModel::config() const { return impl_->config; }
const DeviceModelOptions& DeviceModel::options() const { return impl_->options; }
int64_t DeviceModel::position() const { return impl_->position; }

absl::StatusOr<std::unique_ptr<DeviceModel>> DeviceModel::Create(
    const model::ModelWeights& weights, const DeviceModelOptions& options) {
  const model::ModelConfig& c = weights.config;
  if (options.max_tokens <= 0 || options.max_chunk <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("device model: max_tokens ", options.max_tokens,
                                                   " and max_chunk ", options.max_chunk,
                                                   " must be positive"));
  }
  if (!weights.has_embedding() || !weights.has_head()) {
    return absl::FailedPreconditionError(
        "device model: the weights must include the token embedding and the LM head");
  }
  if (c.head_dim > kMemoryAttentionMaxHeadDim || c.head_dim % 2 != 0) {
    return absl::UnimplementedError(absl::StrCat("device model: head_dim ", c.head_dim,
                                                 " (must be even and at most ",
                                                 kMemoryAttentionMaxHeadDim, ")"));
  }
  const bool use_memory = options.memory.uses_memory();
  if (use_memory) {
    RETURN_IF_ERROR(options.memory.ValidateForModel(c.rope_theta));
    if (options.max_blocks < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("device model: max_blocks ", options.max_blocks, " must be >= 0"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->config = c;
  impl->options = options;
  impl->layer_begin = weights.layer_begin;
  impl->use_memory = use_memory;
  impl->piece = use_memory ? std::min<int64_t>(options.max_chunk, options.memory.exc_block_size)
                           : options.max_chunk;
  ASSIGN_OR_RETURN(impl->stream, CudaStream::Create());
  ASSIGN_OR_RETURN(impl->gemm, GemmLt::Create());
  if (!use_memory) {
    ASSIGN_OR_RETURN(impl->gemm_attention, MemoryAttentionGemm::Create());
  }
  ASSIGN_OR_RETURN(impl->gemm_workspace,
                   DeviceBuffer<uint8_t>::Create(GemmLt::kDefaultWorkspaceBytes));
  const Stream s = impl->stream.get();

  const size_t hd = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.intermediate_size;
  const size_t vocab = c.vocab_size;
  ASSIGN_OR_RETURN(impl->embedding, UploadFloat(weights.embedding, s));
  ASSIGN_OR_RETURN(impl->final_norm, UploadFloat(weights.final_norm, s));
  ASSIGN_OR_RETURN(impl->head, UploadBf16(weights.head_matrix(), vocab * hd, s));
  const std::vector<double> inv_freq = RopeInverseFrequencies(RopeConfigOf(c));
  ASSIGN_OR_RETURN(impl->inv_freq, DeviceBuffer<double>::Create(inv_freq.size()));
  RETURN_IF_ERROR(impl->inv_freq.Upload(inv_freq, s));

  const size_t max_tokens = use_memory ? 0 : options.max_tokens, chunk = impl->piece;
  for (const model::LayerWeights& w : weights.layers) {
    DeviceLayer d;
    ASSIGN_OR_RETURN(d.attn_norm, UploadFloat(w.attn_norm, s));
    ASSIGN_OR_RETURN(d.wqkv, UploadBf16(w.wqkv.data(), w.wqkv.size(), s));
    ASSIGN_OR_RETURN(d.wo, UploadBf16(w.wo.data(), w.wo.size(), s));
    ASSIGN_OR_RETURN(d.ffn_norm, UploadFloat(w.ffn_norm, s));
    ASSIGN_OR_RETURN(d.w13, UploadBf16(w.w13.data(), w.w13.size(), s));
    ASSIGN_OR_RETURN(d.w2, UploadBf16(w.w2.data(), w.w2.size(), s));
    ASSIGN_OR_RETURN(d.k_cache, DeviceBuffer<float>::Create(max_tokens * kvd));
    ASSIGN_OR_RETURN(d.v_cache, DeviceBuffer<float>::Create(max_tokens * kvd));
    if (use_memory) {
      const worker::LayerShape shape{c.num_heads, c.num_kv_heads, c.head_dim};
      const int32_t layer = weights.layer_begin + static_cast<int32_t>(impl->layers.size());
      ASSIGN_OR_RETURN(d.memory,
                       DeviceLayerMemory::Create(options.memory, shape, layer, options.question,
                                                 options.late_question, impl->inv_freq.data(), s,
                                                 {.max_blocks = options.max_blocks,
                                                  .storage = options.block_storage,
                                                  .session = options.session}));
    }
    impl->layers.push_back(std::move(d));
  }

  ASSIGN_OR_RETURN(impl->ids, DeviceBuffer<int32_t>::Create(chunk));
  ASSIGN_OR_RETURN(impl->positions, DeviceBuffer<int64_t>::Create(chunk));
  ASSIGN_OR_RETURN(impl->hidden, DeviceBuffer<float>::Create(chunk * hd));
  ASSIGN_OR_RETURN(impl->norm, DeviceBuffer<float>::Create(chunk * hd));
  ASSIGN_OR_RETURN(impl->gemm_in, DeviceBuffer<uint16_t>::Create(chunk * std::max({hd, qd, f})));
  ASSIGN_OR_RETURN(impl->q, DeviceBuffer<float>::Create(chunk * qd));
  ASSIGN_OR_RETURN(impl->qkv, DeviceBuffer<float>::Create(use_memory ? chunk * (qd + 2 * kvd) : 0));
  ASSIGN_OR_RETURN(impl->attn, DeviceBuffer<float>::Create(chunk * qd));
  ASSIGN_OR_RETURN(impl->proj, DeviceBuffer<float>::Create(chunk * hd));
  ASSIGN_OR_RETURN(impl->gate_up, DeviceBuffer<float>::Create(chunk * 2 * f));
  ASSIGN_OR_RETURN(impl->mlp, DeviceBuffer<float>::Create(chunk * f));
  ASSIGN_OR_RETURN(impl->logits, DeviceBuffer<float>::Create(chunk * vocab));
  MemoryAttentionParams sizing;
  sizing.n = impl->piece;
  sizing.heads = c.num_heads;
  ASSIGN_OR_RETURN(
      impl->attn_workspace,
      DeviceBuffer<float>::Create(MemoryAttentionWorkspaceBytes(sizing) / sizeof(float)));
  ASSIGN_OR_RETURN(const size_t sample_bytes, SampleWorkspaceBytes(c.vocab_size));
  ASSIGN_OR_RETURN(impl->sample_workspace, DeviceBuffer<uint8_t>::Create(sample_bytes));
  ASSIGN_OR_RETURN(impl->token, DeviceBuffer<int32_t>::Create(1));
  impl->h_positions.resize(chunk);
  // The uploads are complete (and their errors seen) before the model is handed out.
  RETURN_IF_ERROR(impl->stream.Synchronize());
  return std::unique_ptr<DeviceModel>(new DeviceModel(std::move(impl)));
}

int64_t DeviceModel::MemoryDeviceBytes() const {
  int64_t bytes = 0;
  for (const DeviceLayer& l : impl_->layers) {
    if (l.memory != nullptr) bytes += l.memory->Bytes();
  }
  return bytes;
}

absl::Status DeviceModel::Forward(const int32_t* ids, int n, int start_pos, float* logits_host,
                                  const ForwardOptions& forward) {
  Impl& m = *impl_;
  const bool sampling = forward.sample != nullptr;
  if (n <= 0 || ids == nullptr || (logits_host == nullptr && !sampling) ||
      (sampling && forward.sample_token == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device model: forward of ", n, " tokens needs ids and logits (or a sampled token)"));
  }
  if (sampling) {
    RETURN_IF_ERROR(SampleParamsOf(*forward.sample, m.config.vocab_size).ValidateSettings());
  }
  if (start_pos < 0 || start_pos > m.position) {
    return absl::InvalidArgumentError(
        absl::StrCat("device model: start_pos ", start_pos, " outside [0, ", m.position, "]"));
  }
  if (m.use_memory && start_pos != 0 && start_pos != m.position) {
    return absl::InvalidArgumentError(
        absl::StrCat("device model: the context memory continues at ", m.position,
                     " or starts a new document at 0; it cannot rewind to ", start_pos));
  }
  if (!m.use_memory && static_cast<int64_t>(start_pos) + n > m.options.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat("device model: ", start_pos, " + ", n,
                                                     " tokens exceed the KV cache of ",
                                                     m.options.max_tokens));
  }
  // The embedding kernel writes zeros for bad ids; they are rejected here instead.
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= m.config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("device model: token id ", ids[i],
                                                     " at index ", i, " outside [0, ",
                                                     m.config.vocab_size, ")"));
    }
  }
  m.position = start_pos;  // Tokens from start_pos on are overwritten below.
  if (m.use_memory && start_pos == 0) {
    for (DeviceLayer& l : m.layers) RETURN_IF_ERROR(l.memory->Reset());
  }
  const int64_t vocab = m.config.vocab_size;
  const bool last_only = forward.last_only || sampling;
  for (int64_t begin = 0; begin < n; begin += m.piece) {
    const int64_t len = std::min<int64_t>(m.piece, n - begin);
    const bool final = begin + len == n;
    float* logits = logits_host == nullptr || last_only ? logits_host : logits_host + begin * vocab;
    RETURN_IF_ERROR(m.Piece(ids + begin, len, start_pos + begin, final, logits, forward));
  }
  RETURN_IF_ERROR(m.stream.Synchronize());
  m.position = static_cast<int64_t>(start_pos) + n;
  return absl::OkStatus();
}

}  // namespace qllm::cuda
