#include "worker/model_shard.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/device_error.h"
#include "common/status_macros.h"
#include "cuda/attention.h"
#include "cuda/embedding.h"
#include "cuda/gemm.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"
#include "cuda/rope_model.h"
#include "cuda/swiglu.h"

namespace qllm::worker {
namespace {

void Grow(std::vector<float>* v, int64_t n) {
  if (static_cast<int64_t>(v->size()) < n) v->resize(n);
}

absl::Status RmsNorm(const float* x, const std::vector<float>& w, float eps, float* y,
                     int64_t rows) {
  cuda::RmsNormParams p;
  p.x = x;
  p.weight = w.data();
  p.y = y;
  p.rows = rows;
  p.dim = static_cast<int64_t>(w.size());
  p.eps = eps;
  return cuda::RmsNormRef(p);
}

// Header of each layer's saved state (SaveSession), followed by the KvCache or LayerMemory blob.
static_assert(std::endian::native == std::endian::little, "saved sessions are little-endian");
constexpr char kSessionMagic[8] = {'Q', 'L', 'L', 'M', 'S', 'E', 'S', 'S'};
constexpr uint32_t kSessionVersion = 1;
struct LayerBlobHeader {
  char magic[8];
  uint32_t version;
  int32_t mode;  // AttentionMode of the saved session; kFull means a KvCache blob follows.
  int64_t layer;
  int64_t position;  // Tokens the session had processed.
};
static_assert(sizeof(LayerBlobHeader) == 32);

}  // namespace

absl::Status InLayer(int64_t layer, const absl::Status& s) {
  return AnnotateStatus(s, absl::StrCat("layer ", layer));
}

void AppendLayerBlobHeader(AttentionMode mode, int64_t layer, int64_t position, std::string* out) {
  LayerBlobHeader h;
  std::memcpy(h.magic, kSessionMagic, sizeof(h.magic));
  h.version = kSessionVersion;
  h.mode = static_cast<int32_t>(mode);
  h.layer = layer;
  h.position = position;
  out->append(reinterpret_cast<const char*>(&h), sizeof(h));
}

namespace {

// One layer's blob: its position and payload, after the header checks of ParseSessionBlobs.
absl::StatusOr<std::pair<int64_t, std::string_view>> ParseLayerBlob(std::string_view blob,
                                                                    int64_t layer,
                                                                    AttentionMode session_mode) {
  LayerBlobHeader h;
  if (blob.size() < sizeof(h) || std::memcmp(blob.data(), kSessionMagic, sizeof(h.magic)) != 0) {
    return InLayer(layer, absl::DataLossError("not a saved session layer (bad magic)"));
  }
  std::memcpy(&h, blob.data(), sizeof(h));
  blob.remove_prefix(sizeof(h));
  if (h.version != kSessionVersion || h.mode < static_cast<int32_t>(AttentionMode::kFull) ||
      h.mode > static_cast<int32_t>(AttentionMode::kQllm) || h.position < 0) {
    return InLayer(
        layer, absl::DataLossError(absl::StrCat("damaged saved session header: version ", h.version,
                                                ", mode ", h.mode, ", position ", h.position)));
  }
  if (h.layer != layer) {
    return InLayer(layer, absl::FailedPreconditionError(
                              absl::StrCat("the saved state is of layer ", h.layer)));
  }
  const AttentionMode saved = static_cast<AttentionMode>(h.mode);
  if ((saved != AttentionMode::kFull) != (session_mode != AttentionMode::kFull)) {
    return InLayer(layer,
                   absl::FailedPreconditionError(absl::StrCat(
                       "state was saved in ", AttentionModeName(saved), " mode, this session uses ",
                       AttentionModeName(session_mode), " mode")));
  }
  return std::pair<int64_t, std::string_view>(h.position, blob);
}

}  // namespace

absl::StatusOr<SavedSession> ParseSessionBlobs(std::span<const std::string> blobs,
                                               int64_t layer_begin, size_t num_layers,
                                               AttentionMode session_mode) {
  if (blobs.size() != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(blobs.size(), " saved layer states for a shard of ", num_layers, " layers"));
  }
  SavedSession saved;
  for (size_t l = 0; l < num_layers; ++l) {
    const int64_t layer = layer_begin + static_cast<int64_t>(l);
    ASSIGN_OR_RETURN(const auto parsed, ParseLayerBlob(blobs[l], layer, session_mode));
    if (l > 0 && parsed.first != saved.position) {
      return InLayer(layer, absl::DataLossError(absl::StrCat(
                                "damaged saved session header: position ", parsed.first,
                                " where the layers before say ", saved.position)));
    }
    saved.position = parsed.first;
    saved.payloads.push_back(parsed.second);
  }
  return saved;
}

absl::Status CheckRestoredTokens(int64_t layer, int64_t tokens, int64_t position) {
  if (tokens == position) return absl::OkStatus();
  return InLayer(layer, absl::DataLossError(absl::StrCat("state of ", tokens,
                                                         " tokens saved at position ", position)));
}

absl::Status CheckRestoredQuestion(const SessionOptions& options, int64_t position) {
  if (!options.question.has_value()) return absl::OkStatus();
  if (!options.late_question) {
    return absl::InvalidArgumentError(
        "a question for a restored session needs late_question (the sinks are filled)");
  }
  if (options.question->begin < position) {
    return absl::InvalidArgumentError(
        absl::StrCat("the question span [", options.question->begin, ", ", options.question->end,
                     ") starts before the restored position ", position));
  }
  return absl::OkStatus();
}

ShardSession::ShardSession(int num_layers, int64_t kv_dim, SessionOptions options)
    : options_(std::move(options)) {
  if (options_.memory.uses_memory()) return;  // The context memories are added by the shard.
  caches_.reserve(num_layers);
  for (int i = 0; i < num_layers; ++i) caches_.emplace_back(kv_dim);
}

int64_t ShardSession::KvBytes() const {
  int64_t total = 0;
  for (const KvCache& c : caches_) total += c.MemoryBytes();
  for (const auto& m : memories_) total += m->MemoryBytes();
  return total;
}

absl::StatusOr<std::unique_ptr<ModelShard>> ModelShard::Load(const std::string& model_dir,
                                                             const model::LoadOptions& options) {
  ASSIGN_OR_RETURN(model::ModelWeights weights, model::LoadWeights(model_dir, options));
  return std::make_unique<ModelShard>(std::move(weights));
}

ModelShard::ModelShard(model::ModelWeights weights)
    : weights_(std::move(weights)),
      inv_freq_(cuda::RopeInverseFrequencies(cuda::RopeConfigOf(weights_.config))) {}

std::unique_ptr<ShardSession> ModelShard::NewSession() const {
  return std::unique_ptr<ShardSession>(
      new ShardSession(static_cast<int>(weights_.layers.size()), config().kv_dim(), {}));
}

absl::Status ValidateSessionOptions(const SessionOptions& options,
                                    const model::ModelConfig& config) {
  RETURN_IF_ERROR(options.memory.ValidateForModel(config.rope_theta));
  if (options.question.has_value() &&
      (options.question->begin < 0 || options.question->begin >= options.question->end)) {
    return absl::InvalidArgumentError(absl::StrCat("question span [", options.question->begin, ", ",
                                                   options.question->end,
                                                   ") is empty or negative"));
  }
  if (options.late_question && options.memory.uses_memory() && options.question.has_value() &&
      options.question->end - options.question->begin > options.memory.n_local) {
    return absl::InvalidArgumentError(
        absl::StrCat("with late_question the question span [", options.question->begin, ", ",
                     options.question->end, ") must be at most n_local (", options.memory.n_local,
                     ") tokens long"));
  }
  if (options.memory.mode == AttentionMode::kQllm && !options.question.has_value()) {
    return absl::InvalidArgumentError("qllm mode needs the question's token span");
  }
  if (options.memory.uses_memory() && options.storage == nullptr) {
    return absl::InvalidArgumentError("a context-memory session needs a block storage");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShardSession>> ModelShard::NewSession(
    const SessionOptions& options) const {
  RETURN_IF_ERROR(ValidateSessionOptions(options, config()));
  const int num_layers = static_cast<int>(weights_.layers.size());
  std::unique_ptr<ShardSession> s(new ShardSession(num_layers, config().kv_dim(), options));
  if (options.memory.uses_memory()) {
    const LayerShape shape{config().num_heads, config().num_kv_heads, config().head_dim};
    for (int l = 0; l < num_layers; ++l) {
      s->memories_.push_back(std::make_unique<LayerMemory>(
          options.memory, shape, weights_.layer_begin + l, options.session_id, options.question,
          options.late_question, options.storage, inv_freq_.data()));
    }
  }
  return s;
}

absl::StatusOr<std::vector<std::string>> ModelShard::SaveSession(
    const ShardSession& session) const {
  const size_t num_layers = weights_.layers.size();
  const bool memory = session.options_.memory.uses_memory();
  if ((memory ? session.memories_.size() : session.caches_.size()) != num_layers) {
    return absl::InvalidArgumentError("the session does not belong to a shard of this size");
  }
  std::vector<std::string> blobs(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    AppendLayerBlobHeader(session.options_.memory.mode,
                          weights_.layer_begin + static_cast<int64_t>(l), session.position_,
                          &blobs[l]);
    RETURN_IF_ERROR(memory ? session.memories_[l]->Save(&blobs[l])
                           : session.caches_[l].Save(&blobs[l]));
  }
  return blobs;
}

absl::StatusOr<std::unique_ptr<ShardSession>> ModelShard::RestoreSession(
    const SessionOptions& options, std::span<const std::string> blobs) const {
  const size_t num_layers = weights_.layers.size();
  ASSIGN_OR_RETURN(const SavedSession saved,
                   ParseSessionBlobs(blobs, weights_.layer_begin, num_layers, options.memory.mode));
  ASSIGN_OR_RETURN(std::unique_ptr<ShardSession> s, NewSession(options));
  const bool memory = options.memory.uses_memory();
  const int64_t position = saved.position;
  for (size_t l = 0; l < num_layers; ++l) {
    const int64_t layer = weights_.layer_begin + static_cast<int64_t>(l);
    const std::string_view blob = saved.payloads[l];
    absl::Status st = memory ? s->memories_[l]->Load(blob) : s->caches_[l].Load(blob);
    if (!st.ok()) return InLayer(layer, st);
    RETURN_IF_ERROR(CheckRestoredTokens(
        layer, memory ? s->memories_[l]->tokens() : s->caches_[l].size(), position));
  }
  RETURN_IF_ERROR(CheckRestoredQuestion(options, position));
  s->position_ = position;
  return s;
}

absl::Status ModelShard::Embed(std::span<const int32_t> tokens, float* hidden) const {
  if (!has_embedding()) {
    return absl::FailedPreconditionError("this shard does not hold the token embedding");
  }
  cuda::EmbeddingParams p;
  p.tokens = tokens.data();
  p.table = weights_.embedding.data();
  p.out = hidden;
  p.n = static_cast<int64_t>(tokens.size());
  p.vocab = config().vocab_size;
  p.dim = config().hidden_size;
  return cuda::EmbeddingRef(p);
}

absl::Status ModelShard::Forward(ShardSession* s, float* hidden, int64_t n) const {
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat("forward of ", n, " tokens"));
  if (!s->options_.memory.uses_memory()) return ForwardChunk(s, hidden, n);
  const int64_t exc = s->options_.memory.exc_block_size;
  for (int64_t begin = 0; begin < n; begin += exc) {
    RETURN_IF_ERROR(
        ForwardChunk(s, hidden + begin * config().hidden_size, std::min(exc, n - begin)));
  }
  return absl::OkStatus();
}

absl::Status ModelShard::ForwardChunk(ShardSession* s, float* hidden, int64_t n) const {
  const model::ModelConfig& c = config();
  const int64_t qkv_dim = c.q_dim() + 2 * c.kv_dim();
  Grow(&s->norm_, n * c.hidden_size);
  Grow(&s->qkv_, n * qkv_dim);
  Grow(&s->attn_, n * c.q_dim());
  Grow(&s->proj_, n * c.hidden_size);
  Grow(&s->gate_up_, n * 2 * static_cast<int64_t>(c.intermediate_size));
  Grow(&s->act_, n * static_cast<int64_t>(c.intermediate_size));
  s->positions_.resize(n);
  for (int64_t i = 0; i < n; ++i) s->positions_[i] = s->position_ + i;
  for (int l = 0; l < static_cast<int>(weights_.layers.size()); ++l) {
    absl::Status st = ForwardLayer(l, s, hidden, n);
    if (!st.ok()) return InLayer(weights_.layer_begin + l, st);
  }
  s->position_ += n;
  return absl::OkStatus();
}

absl::Status ModelShard::ForwardLayer(int l, ShardSession* s, float* hidden, int64_t n) const {
  const model::ModelConfig& c = config();
  const model::LayerWeights& w = weights_.layers[l];
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t qkv_dim = qd + 2 * kvd, f = c.intermediate_size;

  // Attention block.
  RETURN_IF_ERROR(RmsNorm(hidden, w.attn_norm, c.rms_norm_eps, s->norm_.data(), n));
  RETURN_IF_ERROR(cuda::MatMulNT(s->norm_.data(), w.wqkv.data(), s->qkv_.data(), n, qkv_dim, d));
  if (!s->memories_.empty()) {
    RETURN_IF_ERROR(
        s->memories_[l]->Process(s->qkv_.data(), qkv_dim, n, s->position_, s->attn_.data(),
                                 s->options_.record_selections ? &s->selections_ : nullptr));
  } else {
    RETURN_IF_ERROR(FullAttention(l, s, n));
  }
  RETURN_IF_ERROR(cuda::MatMulNT(s->attn_.data(), w.wo.data(), s->proj_.data(), n, d, qd));
  RETURN_IF_ERROR(cuda::AddRef({.x = s->proj_.data(), .y = hidden, .n = n * d}));

  // MLP block.
  RETURN_IF_ERROR(RmsNorm(hidden, w.ffn_norm, c.rms_norm_eps, s->norm_.data(), n));
  RETURN_IF_ERROR(cuda::MatMulNT(s->norm_.data(), w.w13.data(), s->gate_up_.data(), n, 2 * f, d));
  RETURN_IF_ERROR(
      cuda::SwiGluRef({.gate_up = s->gate_up_.data(), .out = s->act_.data(), .rows = n, .dim = f}));
  RETURN_IF_ERROR(cuda::MatMulNT(s->act_.data(), w.w2.data(), s->proj_.data(), n, d, f));
  return cuda::AddRef({.x = s->proj_.data(), .y = hidden, .n = n * d});
}

absl::Status ModelShard::FullAttention(int l, ShardSession* s, int64_t n) const {
  const model::ModelConfig& c = config();
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), qkv_dim = qd + 2 * kvd;
  cuda::RopeParams rope;
  rope.positions = s->positions_.data();
  rope.inv_freq = inv_freq_.data();
  rope.tokens = n;
  rope.head_dim = c.head_dim;
  rope.row_stride = qkv_dim;
  rope.x = s->qkv_.data();
  rope.heads = c.num_heads;
  RETURN_IF_ERROR(cuda::RopeRef(rope));
  rope.x = s->qkv_.data() + qd;
  rope.heads = c.num_kv_heads;
  RETURN_IF_ERROR(cuda::RopeRef(rope));
  KvCache& cache = s->caches_[l];
  cache.Append(s->qkv_.data() + qd, s->qkv_.data() + qd + kvd, n, qkv_dim);

  cuda::CausalAttentionParams ap;
  ap.q = s->qkv_.data();
  ap.k = cache.keys();
  ap.v = cache.values();
  ap.out = s->attn_.data();
  ap.n_q = n;
  ap.n_kv = cache.size();
  ap.q_offset = cache.size() - n;
  ap.heads = c.num_heads;
  ap.kv_heads = c.num_kv_heads;
  ap.head_dim = c.head_dim;
  ap.q_stride = qkv_dim;
  ap.kv_stride = kvd;
  ap.out_stride = qd;
  ap.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  return cuda::CausalAttentionRef(ap);
}

absl::Status ModelShard::Logits(const float* hidden, int64_t rows, float* logits) const {
  if (!has_head()) return absl::FailedPreconditionError("this shard does not hold the LM head");
  const model::ModelConfig& c = config();
  std::vector<float> normed(rows * c.hidden_size);
  RETURN_IF_ERROR(RmsNorm(hidden, weights_.final_norm, c.rms_norm_eps, normed.data(), rows));
  return cuda::MatMulNT(normed.data(), weights_.head_matrix(), logits, rows, c.vocab_size,
                        c.hidden_size);
}

}  // namespace qllm::worker
