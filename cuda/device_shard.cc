#include "cuda/device_shard.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/device_error.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "cuda/device.h"
#include "cuda/device_layer_memory.h"
#include "cuda/device_layers.h"
#include "worker/kv_cache.h"
#include "worker/model_shard.h"

namespace qllm::cuda {
namespace {

// What the backend and its sessions share; a session keeps it alive, so a session may outlive
// the backend object.
struct Core {
  CudaShardOptions options;
  model::ModelConfig config;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;
  // Held for every use of the device: runner's buffers and stream are shared by all sessions.
  absl::Mutex mu;
  std::unique_ptr<PieceRunner> runner ABSL_GUARDED_BY(mu);
  Stream stream = nullptr;                 // runner's stream, readable without mu.
  std::unique_ptr<DeviceWeights> weights;  // Read-only after creation.
};

class CudaState final : public worker::ShardState {
 public:
  CudaState(std::shared_ptr<Core> core, worker::SessionOptions options)
      : core_(std::move(core)), options_(std::move(options)) {}
  ~CudaState() override {
    // The device buffers below are freed after this body: on the right device.
    if (absl::Status s = UseDevice(core_->options.device); !s.ok()) {
      QLLM_LOG(WARNING) << "cuda shard: freeing a session: " << s;
    }
  }

  int64_t position() const override { return position_; }
  const std::vector<worker::ChunkSelection>& selections() const override { return selections_; }

  const std::shared_ptr<Core> core_;
  const worker::SessionOptions options_;
  int64_t position_ = 0;
  // Set when a memory-mode Forward failed half way: the memory holds a partial chunk.
  absl::Status broken_;
  std::vector<DeviceSequenceLayer> layers_;
  std::vector<worker::ChunkSelection> selections_;
};

class CudaShardBackend final : public worker::ShardBackend {
 public:
  explicit CudaShardBackend(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~CudaShardBackend() override {
    if (absl::Status s = UseDevice(core_->options.device); !s.ok()) {
      QLLM_LOG(WARNING) << "cuda shard: releasing the weights: " << s;
    }
  }

  std::string_view name() const override { return "cuda"; }
  const model::ModelConfig& config() const override { return core_->config; }
  int32_t layer_begin() const override { return core_->layer_begin; }
  int32_t layer_end() const override { return core_->layer_end; }
  bool has_embedding() const override { return core_->weights->has_embedding(); }
  bool has_head() const override { return core_->weights->has_head(); }

  absl::StatusOr<std::unique_ptr<worker::ShardState>> NewSession(
      const worker::SessionOptions& options) const override;
  absl::StatusOr<std::vector<std::string>> SaveSession(
      const worker::ShardState& state) const override;
  absl::StatusOr<std::unique_ptr<worker::ShardState>> RestoreSession(
      const worker::SessionOptions& options, std::span<const std::string> blobs) const override;
  absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const override;
  absl::Status Forward(worker::ShardState* state, float* hidden, int64_t n) const override;
  absl::Status Logits(const float* hidden, int64_t rows, float* logits) const override;

 private:
  // Runs the pieces of one Forward call; core_->mu held.
  absl::Status ForwardLocked(CudaState* s, float* hidden, int64_t n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(core_->mu);

  const std::shared_ptr<Core> core_;
};

absl::StatusOr<std::unique_ptr<worker::ShardState>> CudaShardBackend::NewSession(
    const worker::SessionOptions& options) const {
  const model::ModelConfig& c = core_->config;
  RETURN_IF_ERROR(worker::ValidateSessionOptions(options, c));
  const bool memory = options.memory.uses_memory();
  if (memory && options.memory.exc_block_size > core_->options.max_chunk) {
    return absl::InvalidArgumentError(absl::StrCat("exc_block_size ", options.memory.exc_block_size,
                                                   " exceeds the cuda worker's largest chunk of ",
                                                   core_->options.max_chunk, " tokens"));
  }
  auto state = std::make_unique<CudaState>(core_, options);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  // The allocations run without the lock, so that other sessions' chunks go on meanwhile; the
  // memories' initialization is enqueued on the shared stream (CUDA streams take work from
  // any thread), behind whatever is queued there.
  const Stream stream = core_->stream;
  const int num_layers = core_->layer_end - core_->layer_begin;
  state->layers_.resize(num_layers);
  if (memory) {
    const worker::LayerShape shape{c.num_heads, c.num_kv_heads, c.head_dim};
    for (int l = 0; l < num_layers; ++l) {
      ASSIGN_OR_RETURN(
          state->layers_[l].memory,
          DeviceLayerMemory::Create(options.memory, shape, core_->layer_begin + l, options.question,
                                    options.late_question, core_->weights->inv_freq.data(), stream,
                                    {.max_blocks = core_->options.max_blocks,
                                     .storage = options.storage,
                                     .session = options.session_id}));
    }
    // See the initialization's errors here.
    absl::MutexLock lock(&core_->mu);
    RETURN_IF_ERROR(core_->runner->Synchronize());
  }
  return state;
}

absl::StatusOr<std::vector<std::string>> CudaShardBackend::SaveSession(
    const worker::ShardState& state) const {
  const auto* s = dynamic_cast<const CudaState*>(&state);
  if (s == nullptr || s->core_ != core_) {
    return absl::InvalidArgumentError("the session does not belong to this cuda shard");
  }
  if (!s->broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the session failed earlier (", s->broken_.message(), "); nothing to save"));
  }
  const int64_t kvd = core_->config.kv_dim();
  const int64_t tokens = s->position_;
  const size_t floats = static_cast<size_t>(tokens * kvd);
  // The headers and, in full mode, room for a worker::KvCache blob's rows, before the lock.
  std::vector<std::string> blobs(s->layers_.size());
  std::vector<size_t> rows_at(blobs.size());
  for (size_t l = 0; l < blobs.size(); ++l) {
    const int64_t layer = core_->layer_begin + static_cast<int64_t>(l);
    worker::AppendLayerBlobHeader(s->options_.memory.mode, layer, tokens, &blobs[l]);
    if (s->layers_[l].memory != nullptr) continue;
    worker::KvCache::AppendBlobHeader(kvd, tokens, &blobs[l]);
    rows_at[l] = blobs[l].size();
    blobs[l].resize(rows_at[l] + 2 * floats * sizeof(float));
  }
  absl::MutexLock lock(&core_->mu);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  const Stream stream = core_->runner->stream();
  auto save = [&]() -> absl::Status {
    for (size_t l = 0; l < blobs.size(); ++l) {
      const int64_t layer = core_->layer_begin + static_cast<int64_t>(l);
      const DeviceSequenceLayer& d = s->layers_[l];
      if (d.memory != nullptr) {
        // The same blob as worker::LayerMemory::Save (the engine waits for the stream).
        RETURN_IF_ERROR(worker::InLayer(layer, d.memory->Save(&blobs[l])));
        continue;
      }
      if (tokens == 0) continue;
      // Full mode: the rows downloaded straight into the blob.
      RETURN_IF_ERROR(internal::CheckRange(0, floats, d.k_cache.size(), "saved keys"));
      RETURN_IF_ERROR(internal::CheckRange(0, floats, d.v_cache.size(), "saved values"));
      char* rows = blobs[l].data() + rows_at[l];
      RETURN_IF_ERROR(internal::CopyAsync(rows, d.k_cache.data(), floats * sizeof(float),
                                          internal::CopyKind::kDeviceToHost, stream));
      RETURN_IF_ERROR(internal::CopyAsync(rows + floats * sizeof(float), d.v_cache.data(),
                                          floats * sizeof(float), internal::CopyKind::kDeviceToHost,
                                          stream));
    }
    return core_->runner->Synchronize();
  };
  if (absl::Status st = save(); !st.ok()) {
    // No copy into the blobs may still run once they go away.
    core_->runner->Synchronize().IgnoreError();
    return st;
  }
  return blobs;
}

absl::StatusOr<std::unique_ptr<worker::ShardState>> CudaShardBackend::RestoreSession(
    const worker::SessionOptions& options, std::span<const std::string> blobs) const {
  const size_t num_layers = static_cast<size_t>(core_->layer_end - core_->layer_begin);
  ASSIGN_OR_RETURN(
      const worker::SavedSession saved,
      worker::ParseSessionBlobs(blobs, core_->layer_begin, num_layers, options.memory.mode));
  // Options first, as ModelShard::RestoreSession checks them (NewSession checks them again).
  RETURN_IF_ERROR(worker::ValidateSessionOptions(options, core_->config));
  const int64_t kvd = core_->config.kv_dim();
  const int64_t position = saved.position;
  const bool full = !options.memory.uses_memory();
  // Full mode: the saved rows, checked in place before anything is allocated or locked.
  std::vector<worker::KvCache::BlobRows> rows;
  if (full) {
    for (size_t l = 0; l < num_layers; ++l) {
      const int64_t layer = core_->layer_begin + static_cast<int64_t>(l);
      absl::StatusOr<worker::KvCache::BlobRows> r =
          worker::KvCache::ParseBlob(saved.payloads[l], kvd);
      if (!r.ok()) return worker::InLayer(layer, r.status());
      RETURN_IF_ERROR(worker::CheckRestoredTokens(layer, r->size, position));
      rows.push_back(*r);
    }
    RETURN_IF_ERROR(worker::CheckRestoredQuestion(options, position));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<worker::ShardState> created, NewSession(options));
  auto* s = static_cast<CudaState*>(created.get());
  absl::MutexLock lock(&core_->mu);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  const Stream stream = core_->runner->stream();
  if (full) {  // Every layer's rows to the device, straight from the blobs.
    if (position > 0) {
      RETURN_IF_ERROR(
          EnsureKvCapacity(s->layers_, kvd, 0, position, core_->options.max_tokens, stream));
    }
    const size_t floats = static_cast<size_t>(position * kvd), bytes = floats * sizeof(float);
    for (size_t l = 0; l < num_layers && position > 0; ++l) {
      RETURN_IF_ERROR(internal::CheckRange(0, floats, s->layers_[l].k_cache.size(), "keys"));
      RETURN_IF_ERROR(internal::CheckRange(0, floats, s->layers_[l].v_cache.size(), "values"));
      RETURN_IF_ERROR(internal::CopyAsync(s->layers_[l].k_cache.data(), rows[l].keys, bytes,
                                          internal::CopyKind::kHostToDevice, stream));
      RETURN_IF_ERROR(internal::CopyAsync(s->layers_[l].v_cache.data(), rows[l].values, bytes,
                                          internal::CopyKind::kHostToDevice, stream));
    }
  } else {
    for (size_t l = 0; l < num_layers; ++l) {
      const int64_t layer = core_->layer_begin + static_cast<int64_t>(l);
      DeviceSequenceLayer& d = s->layers_[l];
      RETURN_IF_ERROR(worker::InLayer(layer, d.memory->Load(saved.payloads[l])));
      RETURN_IF_ERROR(worker::CheckRestoredTokens(layer, d.memory->tokens(), position));
    }
    RETURN_IF_ERROR(worker::CheckRestoredQuestion(options, position));
  }
  // The uploads read the blobs, which are the caller's: wait for them.
  RETURN_IF_ERROR(core_->runner->Synchronize());
  s->position_ = position;
  return created;
}

absl::Status CudaShardBackend::Embed(std::span<const int32_t> tokens, float* hidden) const {
  const model::ModelConfig& c = core_->config;
  if (!has_embedding()) {
    return absl::FailedPreconditionError("this shard has no token embedding");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " outside [0, ", c.vocab_size, ")"));
    }
  }
  absl::MutexLock lock(&core_->mu);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  PieceRunner& r = *core_->runner;
  const int64_t n = static_cast<int64_t>(tokens.size());
  for (int64_t begin = 0; begin < n; begin += r.max_piece()) {
    const int64_t len = std::min(r.max_piece(), n - begin);
    RETURN_IF_ERROR(r.Begin(*core_->weights, tokens.data() + begin, nullptr, len, 0));
    // Pageable destination: the copy is complete when Download returns.
    RETURN_IF_ERROR(r.hidden().Download(hidden + begin * c.hidden_size,
                                        static_cast<size_t>(len) * c.hidden_size, r.stream()));
  }
  return r.Synchronize();
}

absl::Status CudaShardBackend::Forward(worker::ShardState* state, float* hidden, int64_t n) const {
  auto* s = dynamic_cast<CudaState*>(state);
  if (s == nullptr || s->core_ != core_) {
    return absl::InvalidArgumentError("the session does not belong to this cuda shard");
  }
  if (n <= 0 || hidden == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("forward of ", n, " tokens"));
  }
  if (!s->broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the session's context memory holds a partial chunk after an earlier error (",
                     s->broken_.message(), "); open a new session"));
  }
  absl::MutexLock lock(&core_->mu);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  absl::Status status = ForwardLocked(s, hidden, n);
  // In the memory modes any failure inside the pieces may leave part of a chunk in the
  // memories (the arguments were checked above, before anything was enqueued).
  if (!status.ok() && s->options_.memory.uses_memory()) s->broken_ = status;
  return status;
}

absl::Status CudaShardBackend::ForwardLocked(CudaState* s, float* hidden, int64_t n) const {
  const model::ModelConfig& c = core_->config;
  PieceRunner& r = *core_->runner;
  const bool memory = s->options_.memory.uses_memory();
  const int64_t piece = memory ? s->options_.memory.exc_block_size : r.max_piece();
  std::vector<worker::ChunkSelection>* record =
      s->options_.record_selections ? &s->selections_ : nullptr;
  if (!memory) {
    RETURN_IF_ERROR(EnsureKvCapacity(s->layers_, c.kv_dim(), s->position_, s->position_ + n,
                                     core_->options.max_tokens, r.stream()));
  }
  const size_t recorded = s->selections_.size();
  for (int64_t begin = 0; begin < n; begin += piece) {
    const int64_t len = std::min(piece, n - begin);
    float* h = hidden + begin * c.hidden_size;
    const int64_t pos0 = s->position_ + begin;
    absl::Status st = r.Begin(*core_->weights, nullptr, h, len, pos0);
    if (st.ok()) st = r.Layers(*core_->weights, s->layers_, len, pos0, record);
    if (st.ok()) {
      st = r.hidden().Download(h, static_cast<size_t>(len) * c.hidden_size, r.stream());
    }
    if (!st.ok()) {
      s->selections_.resize(recorded);  // A failed call records nothing.
      // Nothing enqueued for the piece may still run once the caller frees or reuses what it
      // reads. A lost device seen only now (st a host-side error) is the one to report.
      if (absl::Status d = r.Synchronize(); IsDeviceLost(d) && !IsDeviceLost(st)) {
        return AnnotateStatus(d, absl::StrCat("after \"", st.message(), "\""));
      }
      return st;
    }
  }
  if (absl::Status st = r.Synchronize(); !st.ok()) {
    s->selections_.resize(recorded);
    return st;
  }
  s->position_ += n;
  return absl::OkStatus();
}

absl::Status CudaShardBackend::Logits(const float* hidden, int64_t rows, float* logits) const {
  if (!has_head()) return absl::FailedPreconditionError("this shard has no LM head");
  if (rows <= 0 || hidden == nullptr || logits == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("logits of ", rows, " rows"));
  }
  const model::ModelConfig& c = core_->config;
  absl::MutexLock lock(&core_->mu);
  RETURN_IF_ERROR(UseDevice(core_->options.device));
  PieceRunner& r = *core_->runner;
  for (int64_t begin = 0; begin < rows; begin += r.max_piece()) {
    const int64_t len = std::min(r.max_piece(), rows - begin);
    RETURN_IF_ERROR(r.HeadOfHost(*core_->weights, hidden + begin * c.hidden_size, len));
    RETURN_IF_ERROR(r.logits().Download(logits + begin * c.vocab_size,
                                        static_cast<size_t>(len) * c.vocab_size, r.stream()));
  }
  return r.Synchronize();
}

}  // namespace

absl::StatusOr<std::unique_ptr<worker::ShardBackend>> NewCudaShardBackend(
    const model::ModelWeights& weights, const CudaShardOptions& options) {
  if (options.max_tokens <= 0 || options.max_chunk <= 0 || options.max_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda shard: max_tokens ", options.max_tokens, ", max_chunk ", options.max_chunk,
        " and max_blocks ", options.max_blocks, " must be positive"));
  }
  const int visible = VisibleDeviceCount();
  if (visible == 0) {
    return absl::InvalidArgumentError(
        "cuda shard: no CUDA device is visible to this process (use --backend=cpu)");
  }
  RETURN_IF_ERROR(CheckDeviceShapes(weights.config));
  RETURN_IF_ERROR(UseDevice(options.device));
  auto core = std::make_shared<Core>();
  core->options = options;
  core->config = weights.config;
  core->layer_begin = weights.layer_begin;
  core->layer_end = weights.layer_end;
  {
    absl::MutexLock lock(&core->mu);
    ASSIGN_OR_RETURN(core->runner,
                     PieceRunner::Create(weights.config, options.max_chunk, /*full_mode=*/true,
                                         /*memory_modes=*/true, weights.has_head()));
    core->stream = core->runner->stream();
    ASSIGN_OR_RETURN(core->weights, DeviceWeights::Upload(weights, core->runner->stream()));
    // The uploads are complete (and their errors seen) before the backend is handed out.
    RETURN_IF_ERROR(core->runner->Synchronize());
  }
  return std::make_unique<CudaShardBackend>(std::move(core));
}

}  // namespace qllm::cuda
