#include "cuda/device_model.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "cuda/device.h"
#include "cuda/device_layer_memory.h"
#include "cuda/device_layers.h"
#include "cuda/sampling.h"

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

}  // namespace

struct DeviceModel::Impl {
  model::ModelConfig config;
  DeviceModelOptions options;
  int64_t position = 0;  // Valid tokens in every layer's KV cache.
  bool use_memory = false;
  int64_t piece = 0;  // Most tokens per Piece: max_chunk, or exc_block_size in memory modes.

  std::unique_ptr<DeviceWeights> weights;
  std::unique_ptr<PieceRunner> runner;
  std::vector<DeviceSequenceLayer> seq;    // The sequence's state in every layer.
  DeviceBuffer<uint8_t> sample_workspace;  // SampleWorkspaceBytes(vocab)
  DeviceBuffer<int32_t> token;             // [1] the sampled token

  // Runs n <= piece tokens at pos0 .. pos0 + n - 1 of a Forward call with `forward`. Every
  // piece but the last of a last-token (or sampling) call stops before the head; otherwise the
  // copy of the logits into logits_host (if not null: all rows, or the last one) is enqueued,
  // and on the last piece of a sampling call the sampled token's copy.
  absl::Status Piece(const int32_t* h_ids, int64_t n, int64_t pos0, bool final, float* logits_host,
                     const ForwardOptions& forward);
};

absl::Status DeviceModel::Impl::Piece(const int32_t* h_ids, int64_t n, int64_t pos0, bool final,
                                      float* logits_host, const ForwardOptions& forward) {
  const DeviceSampling* sample = final ? forward.sample : nullptr;
  const bool last_only = forward.last_only || forward.sample != nullptr;
  PieceRunner& r = *runner;
  RETURN_IF_ERROR(r.Begin(*weights, h_ids, nullptr, n, pos0));
  RETURN_IF_ERROR(r.Layers(*weights, seq, n, pos0, forward.record));
  if (last_only && !final) return absl::OkStatus();  // A prefill piece before the last.
  const int64_t rows = last_only ? 1 : n;
  RETURN_IF_ERROR(r.Head(*weights, rows, n - rows));
  if (sample != nullptr) {
    SampleParams p = SampleParamsOf(*sample, config.vocab_size);
    p.logits = r.logits().data() + (rows - 1) * config.vocab_size;
    p.out = token.data();
    RETURN_IF_ERROR(LaunchSample(p, sample_workspace.data(), sample_workspace.bytes(), r.stream()));
    RETURN_IF_ERROR(token.Download(forward.sample_token, 1, r.stream()));
  }
  if (logits_host == nullptr) return absl::OkStatus();
  return r.logits().Download(logits_host, static_cast<size_t>(rows) * config.vocab_size,
                             r.stream());
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
  RETURN_IF_ERROR(CheckDeviceShapes(c));
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
  impl->use_memory = use_memory;
  impl->piece = use_memory ? std::min<int64_t>(options.max_chunk, options.memory.exc_block_size)
                           : options.max_chunk;
  ASSIGN_OR_RETURN(impl->runner, PieceRunner::Create(c, impl->piece, !use_memory, use_memory,
                                                     /*head=*/true));
  const Stream s = impl->runner->stream();
  ASSIGN_OR_RETURN(impl->weights, DeviceWeights::Upload(weights, s));

  const size_t max_tokens = use_memory ? 0 : options.max_tokens, kvd = c.kv_dim();
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    DeviceSequenceLayer d;
    ASSIGN_OR_RETURN(d.k_cache, DeviceBuffer<float>::Create(max_tokens * kvd));
    ASSIGN_OR_RETURN(d.v_cache, DeviceBuffer<float>::Create(max_tokens * kvd));
    if (use_memory) {
      const worker::LayerShape shape{c.num_heads, c.num_kv_heads, c.head_dim};
      const int32_t layer = weights.layer_begin + static_cast<int32_t>(i);
      ASSIGN_OR_RETURN(d.memory, DeviceLayerMemory::Create(options.memory, shape, layer,
                                                           options.question, options.late_question,
                                                           impl->weights->inv_freq.data(), s,
                                                           {.max_blocks = options.max_blocks,
                                                            .storage = options.block_storage,
                                                            .session = options.session}));
    }
    impl->seq.push_back(std::move(d));
  }
  ASSIGN_OR_RETURN(const size_t sample_bytes, SampleWorkspaceBytes(c.vocab_size));
  ASSIGN_OR_RETURN(impl->sample_workspace, DeviceBuffer<uint8_t>::Create(sample_bytes));
  ASSIGN_OR_RETURN(impl->token, DeviceBuffer<int32_t>::Create(1));
  // The uploads are complete (and their errors seen) before the model is handed out.
  RETURN_IF_ERROR(impl->runner->Synchronize());
  return std::unique_ptr<DeviceModel>(new DeviceModel(std::move(impl)));
}

int64_t DeviceModel::MemoryDeviceBytes() const {
  int64_t bytes = 0;
  for (const DeviceSequenceLayer& l : impl_->seq) {
    if (l.memory != nullptr) bytes += l.memory->Bytes();
  }
  return bytes;
}

void DeviceModel::SetOverlapLoads(bool on) {
  for (DeviceSequenceLayer& l : impl_->seq) {
    if (l.memory != nullptr) l.memory->set_overlap_loads(on);
  }
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
    for (DeviceSequenceLayer& l : m.seq) RETURN_IF_ERROR(l.memory->Reset());
  }
  const int64_t vocab = m.config.vocab_size;
  const bool last_only = forward.last_only || sampling;
  for (int64_t begin = 0; begin < n; begin += m.piece) {
    const int64_t len = std::min<int64_t>(m.piece, n - begin);
    const bool final = begin + len == n;
    float* logits = logits_host == nullptr || last_only ? logits_host : logits_host + begin * vocab;
    RETURN_IF_ERROR(m.Piece(ids + begin, len, start_pos + begin, final, logits, forward));
  }
  RETURN_IF_ERROR(m.runner->Synchronize());
  m.position = static_cast<int64_t>(start_pos) + n;
  return absl::OkStatus();
}

}  // namespace qllm::cuda
