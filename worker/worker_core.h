// The worker's engine, independent of any transport: one loaded layer shard, the sessions that
// run chunks through it, and the memory store that holds their blocks and the documents'
// persisted layer states. The gRPC service (worker_service.h) and the in-process transport of
// the coordinator both drive this class.
#ifndef QLLM_WORKER_WORKER_CORE_H_
#define QLLM_WORKER_WORKER_CORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "memstore/block_store.h"
#include "worker/block_storage.h"
#include "worker/model_shard.h"
#include "worker/peer_transport.h"
#include "worker/shard_backend.h"

namespace qllm::worker {

struct WorkerOptions {
  // Reported by Register; defaults to "worker".
  std::string worker_id = "worker";
  // Directory of the worker's memory store (RocksDB). Empty: blocks stay in process memory and
  // documents are unsupported (FAILED_PRECONDITION).
  std::string store_dir;
  // Host-memory tier of the memory store.
  size_t host_cache_bytes = size_t{1} << 30;
  // Sessions open at once; more is RESOURCE_EXHAUSTED.
  int32_t max_sessions = 256;
  // A session untouched this long is closed (its coordinator is presumed gone).
  absl::Duration session_idle_timeout = absl::Minutes(10);
  // Peer links of sessions to the adjacent stages' workers (worker/peer_transport.h); null:
  // none, the coordinator relays activations. Channels must take host memory.
  std::shared_ptr<PeerTransport> peer_transport;
  // How long a chunk waits on its link: for the upstream stage's activations, or for the
  // downstream stage to take this stage's output. Past it the link is aborted.
  absl::Duration peer_timeout = absl::Minutes(5);
  // Called once, when the worker turns unhealthy (a lost device, common/device_error.h), with
  // the error; e.g. to set the gRPC health status to NOT_SERVING.
  std::function<void(const absl::Status&)> on_unhealthy;
  // Makes the backend that runs the loaded layers (worker/shard_backend.h); null: the CPU
  // engine. E.g. the CUDA engine for `--backend=cuda`.
  ShardBackendFactory backend_factory;
};

// Which part of which checkpoint a worker serves.
struct ShardSpec {
  std::string model_dir;
  int32_t layer_begin = 0;
  int32_t layer_end = 0;
  bool load_embedding = false;
  bool load_head = false;
  friend bool operator==(const ShardSpec&, const ShardSpec&) = default;
};

struct ShardInfo {
  model::ModelConfig config;
  std::string fingerprint;
};

// How to open a session (see SessionOptions).
struct SessionSpec {
  uint64_t session_id = 0;
  MemoryConfig memory;
  std::optional<QuestionSpan> question;
  bool late_question = false;
  bool record_selections = false;
  // Non-zero: the session ingests this document; its blocks go into the pending document.
  uint64_t ingest_document_key = 0;
};

// One chunk on its way through the pipeline. The first stage reads `ids`, later stages read
// `hidden` [tokens, hidden_size]; every stage but the last writes `hidden`, the last writes
// `logits` ([tokens, vocab] when all_logits, else [1, vocab]). Each stage appends its
// layers' block selections (when the session records them).
struct Activations {
  uint64_t session_id = 0;
  int64_t position = 0;
  int32_t tokens = 0;
  bool all_logits = false;
  std::vector<int32_t> ids;
  std::vector<float> hidden;
  std::vector<float> logits;
  std::vector<ChunkSelection> selections;
};

struct WorkerStatsSnapshot {
  int32_t open_sessions = 0;
  int64_t host_bytes = 0;
  int64_t disk_bytes = 0;
  double host_hit_rate = 0;
  int32_t documents = 0;
};

class WorkerCore {
 public:
  explicit WorkerCore(WorkerOptions options);
  ~WorkerCore();
  WorkerCore(const WorkerCore&) = delete;
  WorkerCore& operator=(const WorkerCore&) = delete;

  const WorkerOptions& options() const { return options_; }
  // Random per construction: tells a coordinator that the worker restarted.
  uint64_t incarnation() const { return incarnation_; }
  // The loaded shard, if any.
  std::optional<ShardSpec> shard() const;

  // Loads the shard and opens the memory store. Idempotent for the same spec.
  // Errors: FAILED_PRECONDITION when another shard is loaded, INVALID_ARGUMENT for an empty or
  // out-of-range layer range, the loader's, the backend factory's and the store's errors.
  absl::StatusOr<ShardInfo> LoadShard(const ShardSpec& spec);

  // Errors: FAILED_PRECONDITION without a shard, ALREADY_EXISTS for a session id in use,
  // RESOURCE_EXHAUSTED at max_sessions, INVALID_ARGUMENT for bad options, FAILED_PRECONDITION
  // for an ingest without a memory store, UNIMPLEMENTED for an ingest on a backend that cannot
  // save sessions (ShardBackend::CanSaveSessions).
  absl::Status OpenSession(const SessionSpec& spec);
  // Frees the session's state and blocks; an unpersisted ingest's document is discarded.
  // Unknown ids are OK (idempotent).
  absl::Status CloseSession(uint64_t session_id);

  // Runs one chunk through the shard's layers (see Activations). A session with a receiving
  // link takes its input activations from the link (chunk->hidden must be empty); one with a
  // sending link hands its output to the link and returns none. Errors: NOT_FOUND for an
  // unknown session, INVALID_ARGUMENT for a position other than the session's, a size
  // mismatch or bad token ids, the engine's errors, the link's (UNAVAILABLE once aborted,
  // DEADLINE_EXCEEDED past peer_timeout).
  absl::Status RunChunk(Activations* chunk);

  // Peer links (worker/peer_transport.h). The transport's name, empty without one.
  std::string peer_transport_name() const;
  // The loaded shard's backend ("cpu", "cuda"; ShardBackend::name), empty before LoadShard.
  std::string backend_name() const;
  // Issues the id of the link from session `session_id` to the next stage (this worker will
  // hold its send end). Errors: FAILED_PRECONDITION without a transport or on the last stage
  // (it sends nothing on), NOT_FOUND for an unknown session, ALREADY_EXISTS when the session
  // has a sending link, the transport's errors.
  absl::StatusOr<std::string> CreateLink(uint64_t session_id);
  // Joins link `link_id` as `role`; blocks until the transport says the end is usable (NCCL:
  // both ends joined) or `deadline`. A sending end must use the id CreateLink issued here.
  // Errors: FAILED_PRECONDITION without a transport, for a receiving end on the first stage or
  // a sending end on the last; INVALID_ARGUMENT for another id than the issued one or a
  // malformed id; ALREADY_EXISTS when the session has that end; NOT_FOUND for an unknown or
  // meanwhile closed session; the transport's errors.
  absl::Status ConnectLink(uint64_t session_id, const std::string& link_id, LinkRole role,
                           absl::Time deadline);

  // Aborts every session's links once `when` has passed (checked about once a second). A chunk
  // blocked on a link does not notice its RPC's cancellation: a draining server calls this with
  // its drain deadline so that shutdown does not wait for peer_timeout.
  void AbortLinksAt(absl::Time when);

  // OK while healthy. After a lost device (an engine error marked by common/device_error.h)
  // the UNAVAILABLE error that made the worker unhealthy: every later call that would use the
  // engine fails with it (closing sessions and the documents' listing and deletion still
  // work), and the process stays up for its supervisor to replace.
  absl::Status health() const;

  // Commits the ingest session's states as its document (one synced write). The session stays
  // open (closing it afterwards keeps the document). Errors: NOT_FOUND, FAILED_PRECONDITION
  // when the session is not ingesting `document_key`, the store's errors.
  absl::Status PersistDocument(uint64_t session_id, uint64_t document_key);
  // Opens session spec.session_id from document `document_key`; returns its token count.
  // Errors: NOT_FOUND for an unknown document, FAILED_PRECONDITION for a layout mismatch or
  // another model, DATA_LOSS for damaged states, OpenSession's errors.
  absl::StatusOr<int64_t> RestoreDocument(uint64_t document_key, const SessionSpec& spec);
  // Deletes a document's states (unknown keys are OK).
  absl::Status DeleteDocument(uint64_t document_key);
  // Keys of the documents in the store (pending and committed); empty without a store.
  std::vector<uint64_t> ListDocuments() const;

  WorkerStatsSnapshot GetStats() const;

 private:
  struct Session {
    absl::Mutex mu;  // Held while a chunk runs.
    std::unique_ptr<ShardState> state;
    SessionSpec spec;
    uint64_t storage_owner = 0;  // Owner id of the session's own blocks.
    bool persisted = false;
    absl::Time last_used;
    // Peer links; never held while waiting, so closing can abort a chunk blocked on a link.
    absl::Mutex link_mu;
    std::string issued_link ABSL_GUARDED_BY(link_mu);
    std::shared_ptr<ActivationChannel> upstream ABSL_GUARDED_BY(link_mu);
    std::shared_ptr<ActivationChannel> downstream ABSL_GUARDED_BY(link_mu);
    // Set (under link_mu) when the session closes; a joining link end polls it to give up.
    std::atomic<bool> closing{false};

    // Fails the chunks blocked on the session's links (UNAVAILABLE).
    void AbortLinks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_mu) {
      if (upstream != nullptr) upstream->Abort();
      if (downstream != nullptr) downstream->Abort();
    }
  };

  SessionOptions MakeOptions(const SessionSpec& spec, uint64_t owner) const;
  // ALREADY_EXISTS for an id in use, RESOURCE_EXHAUSTED at max_sessions.
  absl::Status CheckRoom(uint64_t session_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<Session>> FindSession(uint64_t id);
  absl::Status Insert(const SessionSpec& spec, std::unique_ptr<ShardState> state, uint64_t owner);
  absl::Status ReleaseSession(const std::shared_ptr<Session>& s);
  void ReapIdleSessions();
  absl::Status RunChunkLocked(Session* s, Activations* chunk);
  // The loaded shard when the worker is healthy and has a peer transport.
  absl::StatusOr<const ShardBackend*> LinkableShard() const;
  // Passes `status` through; a lost device makes the worker unhealthy first.
  absl::Status Observe(absl::Status status);

  const WorkerOptions options_;
  const uint64_t incarnation_;

  mutable absl::Mutex mu_;
  std::optional<ShardSpec> spec_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ShardBackend> shard_;  // Set once under mu_; read without it afterwards.
  std::string fingerprint_;
  std::unique_ptr<memstore::BlockStore> store_;
  std::unique_ptr<BlockStorage> storage_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  std::atomic<const ShardBackend*> loaded_{nullptr};

  mutable absl::Mutex health_mu_;
  absl::Status health_ ABSL_GUARDED_BY(health_mu_);

  absl::Mutex reaper_mu_;
  bool stop_ ABSL_GUARDED_BY(reaper_mu_) = false;
  absl::Time abort_links_at_ ABSL_GUARDED_BY(reaper_mu_) = absl::InfiniteFuture();
  std::thread reaper_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_WORKER_CORE_H_
