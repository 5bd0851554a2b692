#include "worker/rpc_convert.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qllm::worker {

absl::StatusOr<MemoryConfig> MemoryConfigFromProto(const v1::MemoryParams& params,
                                                   const MemoryConfig& base) {
  MemoryConfig c = base;
  switch (params.mode()) {
    case v1::MemoryParams::MODE_UNSPECIFIED:
      break;
    case v1::MemoryParams::MODE_FULL:
      c.mode = AttentionMode::kFull;
      break;
    case v1::MemoryParams::MODE_STREAMING:
      c.mode = AttentionMode::kStreaming;
      break;
    case v1::MemoryParams::MODE_INFLLM:
      c.mode = AttentionMode::kInfLlm;
      break;
    case v1::MemoryParams::MODE_QLLM:
      c.mode = AttentionMode::kQllm;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("memory.mode: unknown value ", static_cast<int>(params.mode())));
  }
  if (params.has_n_init()) c.n_init = params.n_init();
  if (params.has_n_local()) c.n_local = params.n_local();
  if (params.has_block_size()) c.block_size = params.block_size();
  if (params.has_topk()) c.topk = params.topk();
  if (params.has_repr_topk()) c.repr_topk = params.repr_topk();
  if (params.has_exc_block_size()) c.exc_block_size = params.exc_block_size();
  if (params.has_question_weight()) {
    if (!std::isfinite(params.question_weight())) {
      return absl::InvalidArgumentError("memory.question_weight must be finite");
    }
    c.question_weight = params.question_weight();
  }
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("memory: ", s.message()));
  }
  return c;
}

v1::MemoryParams MemoryConfigToProto(const MemoryConfig& c) {
  v1::MemoryParams p;
  switch (c.mode) {
    case AttentionMode::kFull:
      p.set_mode(v1::MemoryParams::MODE_FULL);
      break;
    case AttentionMode::kStreaming:
      p.set_mode(v1::MemoryParams::MODE_STREAMING);
      break;
    case AttentionMode::kInfLlm:
      p.set_mode(v1::MemoryParams::MODE_INFLLM);
      break;
    case AttentionMode::kQllm:
      p.set_mode(v1::MemoryParams::MODE_QLLM);
      break;
  }
  p.set_n_init(c.n_init);
  p.set_n_local(c.n_local);
  p.set_block_size(c.block_size);
  p.set_topk(c.topk);
  p.set_repr_topk(c.repr_topk);
  p.set_exc_block_size(c.exc_block_size);
  p.set_question_weight(c.question_weight);
  return p;
}

v1::OpenSessionRequest SessionSpecToProto(const SessionSpec& spec) {
  v1::OpenSessionRequest r;
  r.set_session_id(spec.session_id);
  *r.mutable_memory() = MemoryConfigToProto(spec.memory);
  if (spec.question.has_value()) {
    r.set_question_begin(spec.question->begin);
    r.set_question_end(spec.question->end);
  }
  r.set_record_selections(spec.record_selections);
  r.set_late_question(spec.late_question);
  r.set_ingest_document_key(spec.ingest_document_key);
  return r;
}

absl::StatusOr<SessionSpec> SessionSpecFromProto(const v1::OpenSessionRequest& r,
                                                 const MemoryConfig& base) {
  SessionSpec spec;
  spec.session_id = r.session_id();
  ASSIGN_OR_RETURN(spec.memory, MemoryConfigFromProto(r.memory(), base));
  if (r.question_end() != 0) spec.question = QuestionSpan{r.question_begin(), r.question_end()};
  spec.record_selections = r.record_selections();
  spec.late_question = r.late_question();
  spec.ingest_document_key = r.ingest_document_key();
  return spec;
}

void SelectionToProto(const ChunkSelection& s, v1::BlockSelection* out) {
  out->set_layer(s.layer);
  out->set_chunk_begin(s.chunk_begin);
  out->set_chunk_end(s.chunk_end);
  out->set_candidates(s.candidates);
  out->mutable_blocks()->Add(s.blocks.begin(), s.blocks.end());
  out->mutable_scores()->Add(s.scores.begin(), s.scores.end());
  out->mutable_block_starts()->Add(s.block_starts.begin(), s.block_starts.end());
}

ChunkSelection SelectionFromProto(const v1::BlockSelection& s) {
  ChunkSelection out;
  out.layer = s.layer();
  out.chunk_begin = s.chunk_begin();
  out.chunk_end = s.chunk_end();
  out.candidates = s.candidates();
  out.blocks.assign(s.blocks().begin(), s.blocks().end());
  out.scores.assign(s.scores().begin(), s.scores().end());
  out.block_starts.assign(s.block_starts().begin(), s.block_starts().end());
  return out;
}

v1::LoadShardRequest ShardSpecToProto(const ShardSpec& spec) {
  v1::LoadShardRequest r;
  r.set_model_dir(spec.model_dir);
  r.set_layer_begin(spec.layer_begin);
  r.set_layer_end(spec.layer_end);
  r.set_load_embedding(spec.load_embedding);
  r.set_load_head(spec.load_head);
  return r;
}

v1::ModelInfo ModelInfoToProto(const model::ModelConfig& config, const std::string& fingerprint) {
  v1::ModelInfo m;
  m.set_architecture(config.architecture);
  m.set_num_layers(config.num_layers);
  m.set_hidden_size(config.hidden_size);
  m.set_num_attention_heads(config.num_heads);
  m.set_num_key_value_heads(config.num_kv_heads);
  m.set_head_dim(config.head_dim);
  m.set_vocab_size(config.vocab_size);
  m.set_fingerprint(fingerprint);
  return m;
}

ShardSpec ShardSpecFromProto(const v1::LoadShardRequest& r) {
  return ShardSpec{r.model_dir(), r.layer_begin(), r.layer_end(), r.load_embedding(),
                   r.load_head()};
}

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace qllm::worker
