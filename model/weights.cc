#include "model/weights.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"

namespace qllm::model {
namespace {

// Reads a [rows, cols] matrix into `out` starting at row `row_offset`.
absl::Status ReadRows(Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t cols,
                      int64_t row_offset, std::vector<float>* out) {
  return ckpt.ReadFloat(name, {rows, cols}, out->data() + row_offset * cols);
}

absl::Status LoadLayer(Checkpoint& ckpt, int32_t layer, LayerWeights* w) {
  const ModelConfig& c = ckpt.config();
  const int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  w->attn_norm.resize(d);
  RETURN_IF_ERROR(ckpt.ReadFloat(p + "input_layernorm.weight", {d}, w->attn_norm.data()));
  w->ffn_norm.resize(d);
  RETURN_IF_ERROR(ckpt.ReadFloat(p + "post_attention_layernorm.weight", {d}, w->ffn_norm.data()));
  w->wqkv.resize((q + 2 * kv) * d);
  RETURN_IF_ERROR(ReadRows(ckpt, p + "self_attn.q_proj.weight", q, d, 0, &w->wqkv));
  RETURN_IF_ERROR(ReadRows(ckpt, p + "self_attn.k_proj.weight", kv, d, q, &w->wqkv));
  RETURN_IF_ERROR(ReadRows(ckpt, p + "self_attn.v_proj.weight", kv, d, q + kv, &w->wqkv));
  w->wo.resize(d * q);
  RETURN_IF_ERROR(ReadRows(ckpt, p + "self_attn.o_proj.weight", d, q, 0, &w->wo));
  w->w13.resize(2 * f * d);
  RETURN_IF_ERROR(ReadRows(ckpt, p + "mlp.gate_proj.weight", f, d, 0, &w->w13));
  RETURN_IF_ERROR(ReadRows(ckpt, p + "mlp.up_proj.weight", f, d, f, &w->w13));
  w->w2.resize(d * f);
  RETURN_IF_ERROR(ReadRows(ckpt, p + "mlp.down_proj.weight", d, f, 0, &w->w2));
  return absl::OkStatus();
}

}  // namespace

const float* ModelWeights::head_matrix() const {
  if (!has_head()) return nullptr;
  if (!lm_head.empty()) return lm_head.data();
  return embedding.data();
}

absl::StatusOr<ModelWeights> LoadWeights(const std::string& dir, const LoadOptions& options) {
  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(dir));
  const ModelConfig& c = ckpt->config();
  ModelWeights w;
  w.config = c;
  w.layer_begin = options.layer_begin;
  w.layer_end = options.layer_end < 0 ? c.num_layers : options.layer_end;
  if (w.layer_begin < 0 || w.layer_begin > w.layer_end || w.layer_end > c.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer range [", w.layer_begin, ", ",
                                                   w.layer_end, ") is outside the model's ",
                                                   c.num_layers, " layers"));
  }
  const int64_t d = c.hidden_size, v = c.vocab_size;
  if (options.load_embedding) {
    w.embedding.resize(v * d);
    RETURN_IF_ERROR(ckpt->ReadFloat("model.embed_tokens.weight", {v, d}, w.embedding.data()));
  }
  w.layers.resize(w.layer_end - w.layer_begin);
  for (int32_t l = w.layer_begin; l < w.layer_end; ++l) {
    RETURN_IF_ERROR(LoadLayer(*ckpt, l, &w.layers[l - w.layer_begin]));
  }
  if (options.load_head) {
    w.final_norm.resize(d);
    RETURN_IF_ERROR(ckpt->ReadFloat("model.norm.weight", {d}, w.final_norm.data()));
    if (!c.tie_word_embeddings) {
      w.lm_head.resize(v * d);
      RETURN_IF_ERROR(ckpt->ReadFloat("lm_head.weight", {v, d}, w.lm_head.data()));
    } else if (!options.load_embedding) {
      w.lm_head.resize(v * d);
      RETURN_IF_ERROR(ckpt->ReadFloat("model.embed_tokens.weight", {v, d}, w.lm_head.data()));
    }
  }
  return w;
}

}  // namespace qllm::model
