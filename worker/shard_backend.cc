#include "worker/shard_backend.h"

#include <utility>

#include "common/status_macros.h"

namespace qllm::worker {
namespace {

class CpuState final : public ShardState {
 public:
  explicit CpuState(std::unique_ptr<ShardSession> session) : session_(std::move(session)) {}
  int64_t position() const override { return session_->position(); }
  const std::vector<ChunkSelection>& selections() const override { return session_->selections(); }
  ShardSession* session() const { return session_.get(); }

 private:
  const std::unique_ptr<ShardSession> session_;
};

class CpuShardBackend final : public ShardBackend {
 public:
  explicit CpuShardBackend(std::unique_ptr<ModelShard> shard) : shard_(std::move(shard)) {}

  std::string_view name() const override { return "cpu"; }
  const model::ModelConfig& config() const override { return shard_->config(); }
  int32_t layer_begin() const override { return shard_->layer_begin(); }
  int32_t layer_end() const override { return shard_->layer_end(); }
  bool has_embedding() const override { return shard_->has_embedding(); }
  bool has_head() const override { return shard_->has_head(); }

  absl::StatusOr<std::unique_ptr<ShardState>> NewSession(
      const SessionOptions& options) const override {
    ASSIGN_OR_RETURN(std::unique_ptr<ShardSession> session, shard_->NewSession(options));
    return std::make_unique<CpuState>(std::move(session));
  }
  absl::StatusOr<std::vector<std::string>> SaveSession(const ShardState& state) const override {
    return shard_->SaveSession(*static_cast<const CpuState&>(state).session());
  }
  absl::StatusOr<std::unique_ptr<ShardState>> RestoreSession(
      const SessionOptions& options, std::span<const std::string> blobs) const override {
    ASSIGN_OR_RETURN(std::unique_ptr<ShardSession> session, shard_->RestoreSession(options, blobs));
    return std::make_unique<CpuState>(std::move(session));
  }
  absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const override {
    return shard_->Embed(tokens, hidden);
  }
  absl::Status Forward(ShardState* state, float* hidden, int64_t n) const override {
    return shard_->Forward(static_cast<CpuState*>(state)->session(), hidden, n);
  }
  absl::Status Logits(const float* hidden, int64_t rows, float* logits) const override {
    return shard_->Logits(hidden, rows, logits);
  }

 private:
  const std::unique_ptr<ModelShard> shard_;
};

}  // namespace

std::unique_ptr<ShardBackend> NewCpuShardBackend(std::unique_ptr<ModelShard> shard) {
  return std::make_unique<CpuShardBackend>(std::move(shard));
}

}  // namespace qllm::worker
