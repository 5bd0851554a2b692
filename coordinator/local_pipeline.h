// A pipeline of in-process model shards: stage 0 embeds tokens, each stage runs its layers,
// the last stage computes logits. The single-process engine is a pipeline of one shard.
#ifndef QLLM_COORDINATOR_LOCAL_PIPELINE_H_
#define QLLM_COORDINATOR_LOCAL_PIPELINE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model_shard.h"

namespace qllm::coordinator {

// One request's state across all stages. Used by one thread at a time.
struct PipelineSession {
  std::vector<std::unique_ptr<worker::ShardSession>> stages;
  std::vector<float> hidden;
  int64_t position() const { return stages.front()->position(); }
  // Block selections of every layer of every stage, in stage order.
  std::vector<worker::ChunkSelection> Selections() const;
};

class LocalPipeline {
 public:
  // `shards` must cover layers [0, num_layers) in order, the first holding the embedding and
  // the last the head. The shards must outlive this object. Errors: INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<LocalPipeline>> Create(
      std::vector<const worker::ModelShard*> shards);

  const model::ModelConfig& config() const { return shards_.front()->config(); }
  // A full-attention session.
  std::unique_ptr<PipelineSession> NewSession() const;
  // A session with the given attention options on every stage (see ModelShard::NewSession).
  absl::StatusOr<std::unique_ptr<PipelineSession>> NewSession(
      const worker::SessionOptions& options) const;

  // Runs `tokens` (one chunk) through every stage. When `logits` is non-null it receives the
  // logits of every token ([tokens.size(), vocab]) if `all_logits`, else of the last token only.
  absl::Status RunChunk(PipelineSession* session, std::span<const int32_t> tokens, bool all_logits,
                        std::vector<float>* logits) const;

  // Runs `tokens` in chunks of at most `chunk_size` (the bound on activation memory).
  // INVALID_ARGUMENT when the session has a question span that the first call does not cover.
  absl::Status Prefill(PipelineSession* session, std::span<const int32_t> tokens,
                       int64_t chunk_size, bool all_logits, std::vector<float>* logits) const;

 private:
  explicit LocalPipeline(std::vector<const worker::ModelShard*> shards)
      : shards_(std::move(shards)) {}

  const std::vector<const worker::ModelShard*> shards_;
};

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_LOCAL_PIPELINE_H_
