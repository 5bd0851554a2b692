#include "coordinator/local_pipeline.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qllm::coordinator {

absl::StatusOr<std::unique_ptr<LocalPipeline>> LocalPipeline::Create(
    std::vector<const worker::ModelShard*> shards) {
  if (shards.empty()) return absl::InvalidArgumentError("pipeline needs at least one shard");
  if (!shards.front()->has_embedding()) {
    return absl::InvalidArgumentError("the first stage must hold the token embedding");
  }
  if (!shards.back()->has_head()) {
    return absl::InvalidArgumentError("the last stage must hold the LM head");
  }
  int32_t next = 0;
  for (const worker::ModelShard* s : shards) {
    if (s->layer_begin() != next) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage layers start at ", s->layer_begin(), ", expected ", next));
    }
    next = s->layer_end();
  }
  if (next != shards.front()->config().num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("stages cover layers [0, ", next, ") of ",
                                                   shards.front()->config().num_layers));
  }
  return std::unique_ptr<LocalPipeline>(new LocalPipeline(std::move(shards)));
}

std::unique_ptr<PipelineSession> LocalPipeline::NewSession() const {
  auto session = std::make_unique<PipelineSession>();
  for (const worker::ModelShard* s : shards_) session->stages.push_back(s->NewSession());
  return session;
}

absl::StatusOr<std::unique_ptr<PipelineSession>> LocalPipeline::NewSession(
    const worker::SessionOptions& options) const {
  auto session = std::make_unique<PipelineSession>();
  for (const worker::ModelShard* s : shards_) {
    ASSIGN_OR_RETURN(auto stage, s->NewSession(options));
    session->stages.push_back(std::move(stage));
  }
  return session;
}

std::vector<worker::ChunkSelection> PipelineSession::Selections() const {
  std::vector<worker::ChunkSelection> all;
  for (const auto& stage : stages) {
    all.insert(all.end(), stage->selections().begin(), stage->selections().end());
  }
  return all;
}

absl::Status LocalPipeline::RunChunk(PipelineSession* session, std::span<const int32_t> tokens,
                                     bool all_logits, std::vector<float>* logits) const {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t d = config().hidden_size;
  session->hidden.resize(n * d);
  RETURN_IF_ERROR(shards_.front()->Embed(tokens, session->hidden.data()));
  for (size_t i = 0; i < shards_.size(); ++i) {
    RETURN_IF_ERROR(shards_[i]->Forward(session->stages[i].get(), session->hidden.data(), n));
  }
  if (logits == nullptr) return absl::OkStatus();
  const int64_t rows = all_logits ? n : 1;
  logits->resize(rows * config().vocab_size);
  const float* first_row = session->hidden.data() + (n - rows) * d;
  return shards_.back()->Logits(first_row, rows, logits->data());
}

absl::Status LocalPipeline::Prefill(PipelineSession* session, std::span<const int32_t> tokens,
                                    int64_t chunk_size, bool all_logits,
                                    std::vector<float>* logits) const {
  if (chunk_size <= 0) return absl::InvalidArgumentError("chunk_size must be positive");
  if (tokens.empty()) return absl::InvalidArgumentError("prefill of an empty token sequence");
  const auto& question = session->stages.front()->options().question;
  if (question.has_value() && session->position() == 0 &&
      question->end > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the question span [", question->begin, ", ", question->end,
                     ") must lie inside the first prefill call (", tokens.size(), " tokens)"));
  }
  if (logits != nullptr) logits->clear();
  std::vector<float> chunk_logits;
  for (size_t begin = 0; begin < tokens.size(); begin += chunk_size) {
    const size_t len = std::min<size_t>(chunk_size, tokens.size() - begin);
    const bool last = begin + len == tokens.size();
    const bool want = logits != nullptr && (all_logits || last);
    RETURN_IF_ERROR(
        RunChunk(session, tokens.subspan(begin, len), all_logits, want ? &chunk_logits : nullptr));
    if (want) logits->insert(logits->end(), chunk_logits.begin(), chunk_logits.end());
  }
  return absl::OkStatus();
}

}  // namespace qllm::coordinator
