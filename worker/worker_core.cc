#include "worker/worker_core.h"

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/device_error.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/fingerprint.h"
#include "worker/memstore_block_storage.h"

namespace qllm::worker {
namespace {

constexpr uint64_t kTenant = 0;
// Metadata tag of a layer's persisted state.
constexpr uint32_t kLayerStateTag = 1;

uint64_t RandomIncarnation() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ 1;
}

uint64_t DocumentOwner(uint64_t key) { return kDocumentOwnerBit | key; }

}  // namespace

WorkerCore::WorkerCore(WorkerOptions options)
    : options_(std::move(options)), incarnation_(RandomIncarnation()) {
  reaper_ = std::thread([this] { ReapIdleSessions(); });
}

WorkerCore::~WorkerCore() {
  {
    absl::MutexLock lock(&reaper_mu_);
    stop_ = true;
  }
  reaper_.join();
}

std::optional<ShardSpec> WorkerCore::shard() const {
  absl::MutexLock lock(&mu_);
  return spec_;
}

absl::StatusOr<ShardInfo> WorkerCore::LoadShard(const ShardSpec& spec) {
  RETURN_IF_ERROR(health());
  absl::MutexLock lock(&mu_);
  if (spec_.has_value()) {
    if (*spec_ == spec) return ShardInfo{shard_->config(), fingerprint_};
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", options_.worker_id, " already serves layers [", spec_->layer_begin,
                     ", ", spec_->layer_end, ") of ", spec_->model_dir));
  }
  if (spec.layer_begin < 0 || spec.layer_end <= spec.layer_begin) {
    return absl::InvalidArgumentError(absl::StrCat("empty or negative layer range [",
                                                   spec.layer_begin, ", ", spec.layer_end, ")"));
  }
  model::LoadOptions load;
  load.layer_begin = spec.layer_begin;
  load.layer_end = spec.layer_end;
  load.load_embedding = spec.load_embedding;
  load.load_head = spec.load_head;
  auto weights = model::LoadWeights(spec.model_dir, load);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<std::unique_ptr<ShardBackend>> loaded =
      options_.backend_factory == nullptr
          ? NewCpuShardBackend(std::make_unique<ModelShard>(*std::move(weights)))
          : options_.backend_factory(*std::move(weights));
  if (!loaded.ok()) return Observe(loaded.status());
  std::unique_ptr<ShardBackend> shard = std::move(*loaded);
  ASSIGN_OR_RETURN(std::string fingerprint, model::ModelFingerprint(spec.model_dir));
  if (!options_.store_dir.empty()) {
    memstore::BlockStoreOptions store_options;
    store_options.path = options_.store_dir;
    store_options.model_fingerprint = fingerprint;
    store_options.host_cache_bytes = options_.host_cache_bytes;
    ASSIGN_OR_RETURN(store_, memstore::BlockStore::Open(store_options));
    storage_ = std::make_unique<MemstoreBlockStorage>(store_.get(), kTenant);
  } else {
    storage_ = std::make_unique<InMemoryBlockStorage>();
  }
  shard_ = std::move(shard);
  fingerprint_ = fingerprint;
  spec_ = spec;
  loaded_.store(shard_.get());
  QLLM_LOG(INFO) << "worker " << options_.worker_id << " serves layers [" << spec.layer_begin
                 << ", " << spec.layer_end << ") of " << spec.model_dir << " on the "
                 << shard_->name() << " backend";
  return ShardInfo{shard_->config(), fingerprint_};
}

SessionOptions WorkerCore::MakeOptions(const SessionSpec& spec, uint64_t owner) const {
  SessionOptions options;
  options.memory = spec.memory;
  options.question = spec.question;
  options.late_question = spec.late_question;
  options.record_selections = spec.record_selections;
  options.storage = storage_.get();
  options.session_id = owner;
  return options;
}

absl::Status WorkerCore::Insert(const SessionSpec& spec, std::unique_ptr<ShardState> state,
                                uint64_t owner) {
  auto session = std::make_shared<Session>();
  session->state = std::move(state);
  session->spec = spec;
  session->storage_owner = owner;
  session->last_used = absl::Now();
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckRoom(spec.session_id));
  sessions_.emplace(spec.session_id, std::move(session));
  return absl::OkStatus();
}

absl::Status WorkerCore::CheckRoom(uint64_t session_id) const {
  if (sessions_.contains(session_id)) {
    return absl::AlreadyExistsError(absl::StrCat("session ", session_id, " is open"));
  }
  if (static_cast<int32_t>(sessions_.size()) >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("worker ", options_.worker_id, " has ",
                                                     sessions_.size(), " open sessions (max ",
                                                     options_.max_sessions, ")"));
  }
  return absl::OkStatus();
}

absl::Status WorkerCore::OpenSession(const SessionSpec& spec) {
  RETURN_IF_ERROR(health());
  const ShardBackend* shard = loaded_.load();
  if (shard == nullptr) return absl::FailedPreconditionError("no shard loaded");
  if (spec.session_id == 0 || (spec.session_id & kDocumentOwnerBit) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid session id ", spec.session_id));
  }
  {  // Fail before any work; Insert checks again.
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckRoom(spec.session_id));
  }
  uint64_t owner = spec.session_id;
  if (spec.ingest_document_key != 0) {
    if (store_ == nullptr) {
      return absl::FailedPreconditionError(
          "documents need a memory store: start the worker with --store_dir");
    }
    RETURN_IF_ERROR(shard->CanSaveSessions());
    if ((spec.ingest_document_key & kDocumentOwnerBit) != 0) {
      return absl::InvalidArgumentError("document key out of range");
    }
    owner = DocumentOwner(spec.ingest_document_key);
    // A leftover pending or committed copy under this key (a retried ingest) is replaced.
    if (absl::Status s = store_->DeleteDocument(kTenant, spec.ingest_document_key);
        !s.ok() && !absl::IsNotFound(s)) {
      return s;
    }
    RETURN_IF_ERROR(store_->BeginDocument(kTenant, spec.ingest_document_key));
  }
  const SessionOptions options = MakeOptions(spec, owner);
  auto state = shard->NewSession(options);
  absl::Status status = state.ok() ? Insert(spec, std::move(*state), owner) : state.status();
  if (!status.ok() && spec.ingest_document_key != 0) {
    store_->DeleteDocument(kTenant, spec.ingest_document_key).IgnoreError();
  }
  return Observe(status);
}

absl::StatusOr<std::shared_ptr<WorkerCore::Session>> WorkerCore::FindSession(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no open session ", id, " on worker ", options_.worker_id));
  }
  return it->second;
}

absl::Status WorkerCore::ReleaseSession(const std::shared_ptr<Session>& s) {
  {  // A chunk blocked on a link returns at once (UNAVAILABLE), on both ends of the link.
    absl::MutexLock links(&s->link_mu);
    s->closing = true;
    s->AbortLinks();
  }
  absl::MutexLock lock(&s->mu);  // Waits for a chunk in flight.
  s->state.reset();
  if (s->spec.ingest_document_key != 0) {
    if (!s->persisted) {
      absl::Status st = store_->DeleteDocument(kTenant, s->spec.ingest_document_key);
      if (!st.ok() && !absl::IsNotFound(st)) return st;
    }
    return absl::OkStatus();
  }
  return storage_->DeleteSession(s->storage_owner);
}

absl::Status WorkerCore::CloseSession(uint64_t session_id) {
  std::shared_ptr<Session> s;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return absl::OkStatus();
    s = std::move(it->second);
    sessions_.erase(it);
  }
  return ReleaseSession(s);
}

absl::Status WorkerCore::RunChunk(Activations* chunk) {
  RETURN_IF_ERROR(health());
  ASSIGN_OR_RETURN(std::shared_ptr<Session> s, FindSession(chunk->session_id));
  absl::MutexLock lock(&s->mu);
  return Observe(RunChunkLocked(s.get(), chunk));
}

absl::Status WorkerCore::RunChunkLocked(Session* s, Activations* chunk) {
  const ShardBackend* shard = loaded_.load();
  if (shard == nullptr) return absl::FailedPreconditionError("no shard loaded");
  if (s->state == nullptr) return absl::NotFoundError("session closed");
  std::shared_ptr<ActivationChannel> upstream, downstream;
  {
    absl::MutexLock links(&s->link_mu);
    upstream = s->upstream;
    downstream = s->downstream;
  }
  s->last_used = absl::Now();
  ShardState* state = s->state.get();
  if (chunk->position != state->position()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk at position ", chunk->position,
                                                   " but session ", chunk->session_id,
                                                   " is at position ", state->position()));
  }
  const int64_t n = chunk->tokens;
  const int64_t hidden_size = shard->config().hidden_size;
  if (n <= 0) return absl::InvalidArgumentError("empty chunk");
  if (shard->has_embedding()) {
    if (static_cast<int64_t>(chunk->ids.size()) != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("first stage needs ", n, " token ids, got ", chunk->ids.size()));
    }
    chunk->hidden.resize(n * hidden_size);
    RETURN_IF_ERROR(shard->Embed(chunk->ids, chunk->hidden.data()));
  } else if (upstream != nullptr) {
    if (!chunk->hidden.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("session ", chunk->session_id,
                       " receives its activations over its peer link; the chunk carries ",
                       chunk->hidden.size()));
    }
    chunk->hidden.resize(n * hidden_size);
    RETURN_IF_ERROR(upstream->Recv(chunk->hidden.data(), chunk->hidden.size(),
                                   absl::Now() + options_.peer_timeout));
  } else if (static_cast<int64_t>(chunk->hidden.size()) != n * hidden_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", n * hidden_size, " activations, got ", chunk->hidden.size()));
  }
  const size_t recorded = state->selections().size();
  RETURN_IF_ERROR(shard->Forward(state, chunk->hidden.data(), n));
  if (s->spec.record_selections) {
    const auto& all = state->selections();
    chunk->selections.insert(chunk->selections.end(), all.begin() + recorded, all.end());
  }
  if (shard->has_head()) {
    const int64_t rows = chunk->all_logits ? n : 1;
    chunk->logits.resize(rows * shard->config().vocab_size);
    RETURN_IF_ERROR(
        shard->Logits(chunk->hidden.data() + (n - rows) * hidden_size, rows, chunk->logits.data()));
    chunk->hidden.clear();
  } else if (downstream != nullptr) {
    RETURN_IF_ERROR(downstream->Send(chunk->hidden.data(), chunk->hidden.size(),
                                     absl::Now() + options_.peer_timeout));
    chunk->hidden.clear();
  }
  return absl::OkStatus();
}

std::string WorkerCore::backend_name() const {
  const ShardBackend* shard = loaded_.load();
  return shard == nullptr ? std::string() : std::string(shard->name());
}

std::string WorkerCore::peer_transport_name() const {
  return options_.peer_transport == nullptr ? std::string() : options_.peer_transport->name();
}

absl::StatusOr<const ShardBackend*> WorkerCore::LinkableShard() const {
  RETURN_IF_ERROR(health());
  if (options_.peer_transport == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", options_.worker_id, " has no peer transport (start it with --peer_transport)"));
  }
  const ShardBackend* shard = loaded_.load();
  if (shard == nullptr) return absl::FailedPreconditionError("no shard loaded");
  return shard;
}

absl::StatusOr<std::string> WorkerCore::CreateLink(uint64_t session_id) {
  ASSIGN_OR_RETURN(const ShardBackend* shard, LinkableShard());
  if (shard->has_head()) {
    return absl::FailedPreconditionError("the last stage has no next stage to link to");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Session> s, FindSession(session_id));
  absl::MutexLock links(&s->link_mu);  // NewLinkId does not wait for anybody.
  if (!s->issued_link.empty() || s->downstream != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("session ", session_id, " has a link to the next stage"));
  }
  auto id = options_.peer_transport->NewLinkId();
  if (!id.ok()) return Observe(id.status());
  s->issued_link = *id;
  return *id;
}

absl::Status WorkerCore::ConnectLink(uint64_t session_id, const std::string& link_id, LinkRole role,
                                     absl::Time deadline) {
  ASSIGN_OR_RETURN(const ShardBackend* shard, LinkableShard());
  const bool send = role == LinkRole::kSend;
  if (send && shard->has_head()) {
    return absl::FailedPreconditionError("the last stage sends nothing on");
  }
  if (!send && shard->has_embedding()) {
    return absl::FailedPreconditionError("the first stage receives token ids, not activations");
  }
  if (link_id.empty() || link_id.size() > kMaxLinkIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("link id of ", link_id.size(), " bytes (1 to ", kMaxLinkIdBytes, ")"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Session> s, FindSession(session_id));
  {
    absl::MutexLock links(&s->link_mu);
    if (s->closing) return absl::NotFoundError("session closed");
    if (send && s->issued_link != link_id) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session ", session_id, " sends on the link this worker issued (CreateLink)"));
    }
    if ((send ? s->downstream : s->upstream) != nullptr) {
      return absl::AlreadyExistsError(absl::StrCat("session ", session_id, " already has its ",
                                                   send ? "sending" : "receiving", " link"));
    }
  }
  auto channel = options_.peer_transport->Connect(link_id, role, deadline, &s->closing);
  if (!channel.ok()) return Observe(channel.status());
  std::shared_ptr<ActivationChannel> end = std::move(*channel);
  absl::MutexLock links(&s->link_mu);
  if (s->closing) {
    end->Abort();
    return absl::NotFoundError("session closed");
  }
  std::shared_ptr<ActivationChannel>& slot = send ? s->downstream : s->upstream;
  if (slot != nullptr) {
    end->Abort();
    return absl::AlreadyExistsError(absl::StrCat("session ", session_id, " already has its ",
                                                 send ? "sending" : "receiving", " link"));
  }
  slot = std::move(end);
  return absl::OkStatus();
}

absl::Status WorkerCore::health() const {
  absl::MutexLock lock(&health_mu_);
  return health_;
}

absl::Status WorkerCore::Observe(absl::Status status) {
  if (!IsDeviceLost(status)) return status;
  bool first = false;
  {
    absl::MutexLock lock(&health_mu_);
    if (health_.ok()) {
      health_ = absl::UnavailableError(absl::StrCat("worker ", options_.worker_id,
                                                    " is unhealthy: its device was lost (",
                                                    status.message(), ")"));
      first = true;
    }
  }
  if (first) {
    QLLM_LOG(ERROR) << "worker " << options_.worker_id << " turns unhealthy: " << status;
    if (options_.on_unhealthy) options_.on_unhealthy(status);
  }
  return status;
}

absl::Status WorkerCore::PersistDocument(uint64_t session_id, uint64_t document_key) {
  RETURN_IF_ERROR(health());
  ASSIGN_OR_RETURN(std::shared_ptr<Session> s, FindSession(session_id));
  absl::MutexLock lock(&s->mu);
  if (s->state == nullptr) return absl::NotFoundError("session closed");
  if (s->spec.ingest_document_key == 0 || s->spec.ingest_document_key != document_key) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", session_id, " does not ingest document ", document_key));
  }
  if (s->persisted) return absl::OkStatus();
  absl::StatusOr<std::vector<std::string>> blobs = shard_->SaveSession(*s->state);
  if (!blobs.ok()) return Observe(blobs.status());
  const memstore::OwnerId owner = memstore::OwnerId::Document(kTenant, document_key);
  for (size_t i = 0; i < blobs->size(); ++i) {
    RETURN_IF_ERROR(store_->PutMetadata(owner, static_cast<uint32_t>(shard_->layer_begin() + i),
                                        kLayerStateTag, (*blobs)[i]));
  }
  RETURN_IF_ERROR(store_->CommitDocument(kTenant, document_key));
  s->persisted = true;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> WorkerCore::RestoreDocument(uint64_t document_key,
                                                    const SessionSpec& spec) {
  RETURN_IF_ERROR(health());
  const ShardBackend* shard = loaded_.load();
  if (shard == nullptr) return absl::FailedPreconditionError("no shard loaded");
  if (store_ == nullptr) {
    return absl::FailedPreconditionError(
        "documents need a memory store: start the worker with --store_dir");
  }
  if (spec.ingest_document_key != 0 || spec.session_id == 0 ||
      (spec.session_id & kDocumentOwnerBit) != 0) {
    return absl::InvalidArgumentError("invalid session for a restore");
  }
  RETURN_IF_ERROR(shard->CanSaveSessions());
  {  // Fail before reading the states; Insert checks again.
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckRoom(spec.session_id));
  }
  RETURN_IF_ERROR(store_->OpenDocument(kTenant, document_key).status());
  const memstore::OwnerId owner = memstore::OwnerId::Document(kTenant, document_key);
  std::vector<std::string> blobs;
  for (int32_t layer = shard->layer_begin(); layer < shard->layer_end(); ++layer) {
    auto blob = store_->GetMetadata(owner, static_cast<uint32_t>(layer), kLayerStateTag);
    if (absl::IsNotFound(blob.status())) {
      return absl::DataLossError(
          absl::StrCat("document ", document_key, " has no state for layer ", layer));
    }
    RETURN_IF_ERROR(blob.status());
    blobs.push_back(std::move(*blob));
  }
  const SessionOptions options = MakeOptions(spec, spec.session_id);
  auto restored = shard->RestoreSession(options, blobs);
  if (!restored.ok()) return Observe(restored.status());
  std::unique_ptr<ShardState> state = std::move(*restored);
  const int64_t tokens = state->position();
  RETURN_IF_ERROR(Insert(spec, std::move(state), spec.session_id));
  return tokens;
}

absl::Status WorkerCore::DeleteDocument(uint64_t document_key) {
  if (store_ == nullptr) return absl::OkStatus();
  absl::Status s = store_->DeleteDocument(kTenant, document_key);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

std::vector<uint64_t> WorkerCore::ListDocuments() const {
  std::vector<uint64_t> keys;
  if (store_ == nullptr) return keys;
  for (const memstore::DocumentInfo& d : store_->ListDocuments(kTenant)) keys.push_back(d.doc_id);
  return keys;
}

WorkerStatsSnapshot WorkerCore::GetStats() const {
  WorkerStatsSnapshot out;
  {
    absl::MutexLock lock(&mu_);
    out.open_sessions = static_cast<int32_t>(sessions_.size());
  }
  if (store_ != nullptr) {
    const memstore::StoreStats stats = store_->GetStats();
    out.host_bytes = static_cast<int64_t>(stats.host.bytes);
    out.disk_bytes = static_cast<int64_t>(stats.disk.bytes);
    out.host_hit_rate = stats.host_hit_rate;
    out.documents = static_cast<int32_t>(store_->ListDocuments(kTenant).size());
  }
  return out;
}

void WorkerCore::AbortLinksAt(absl::Time when) {
  absl::MutexLock lock(&reaper_mu_);
  abort_links_at_ = when;
}

void WorkerCore::ReapIdleSessions() {
  absl::MutexLock lock(&reaper_mu_);
  while (!stop_) {
    reaper_mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1));
    if (stop_) break;
    if (absl::Now() >= abort_links_at_) {
      absl::MutexLock sessions_lock(&mu_);
      for (const auto& [id, s] : sessions_) {
        absl::MutexLock links(&s->link_mu);
        s->AbortLinks();
      }
    }
    const absl::Time cutoff = absl::Now() - options_.session_idle_timeout;
    std::vector<uint64_t> idle;
    {
      absl::MutexLock sessions_lock(&mu_);
      for (const auto& [id, s] : sessions_) {
        if (s->mu.TryLock()) {
          if (s->last_used < cutoff) idle.push_back(id);
          s->mu.Unlock();
        }
      }
    }
    for (uint64_t id : idle) {
      QLLM_LOG(WARNING) << "closing session " << id << " of worker " << options_.worker_id
                        << ": idle for " << options_.session_idle_timeout;
      if (absl::Status s = CloseSession(id); !s.ok()) {
        QLLM_LOG(WARNING) << "closing idle session " << id << ": " << s;
      }
    }
  }
}

}  // namespace qllm::worker
