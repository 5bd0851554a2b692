// The worker's engine, independent of any transport: one loaded layer shard, the sessions that
// run chunks through it, and the memory store that holds their blocks and the documents'
// persisted layer states. The gRPC service (worker_service.h) and the in-process transport of
// the coordinator both drive this class.
#ifndef QLLM_WORKER_WORKER_CORE_H_
#define QLLM_WORKER_WORKER_CORE_H_

#include <atomic>
#include <cstdint>
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
  // out-of-range layer range, the loader's and the store's errors.
  absl::StatusOr<ShardInfo> LoadShard(const ShardSpec& spec);

  // Errors: FAILED_PRECONDITION without a shard, ALREADY_EXISTS for a session id in use,
  // RESOURCE_EXHAUSTED at max_sessions, INVALID_ARGUMENT for bad options, FAILED_PRECONDITION
  // for an ingest without a memory store.
  absl::Status OpenSession(const SessionSpec& spec);
  // Frees the session's state and blocks; an unpersisted ingest's document is discarded.
  // Unknown ids are OK (idempotent).
  absl::Status CloseSession(uint64_t session_id);

  // Runs one chunk through the shard's layers (see Activations). Errors: NOT_FOUND for an
  // unknown session, INVALID_ARGUMENT for a position other than the session's, a size
  // mismatch or bad token ids, the engine's errors.
  absl::Status RunChunk(Activations* chunk);

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
    absl::Mutex mu;
    std::unique_ptr<ShardSession> state;
    SessionSpec spec;
    uint64_t storage_owner = 0;  // Owner id of the session's own blocks.
    bool persisted = false;
    absl::Time last_used;
  };

  SessionOptions MakeOptions(const SessionSpec& spec, uint64_t owner) const;
  // ALREADY_EXISTS for an id in use, RESOURCE_EXHAUSTED at max_sessions.
  absl::Status CheckRoom(uint64_t session_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::shared_ptr<Session>> FindSession(uint64_t id);
  absl::Status Insert(const SessionSpec& spec, std::unique_ptr<ShardSession> state, uint64_t owner);
  absl::Status ReleaseSession(const std::shared_ptr<Session>& s);
  void ReapIdleSessions();

  const WorkerOptions options_;
  const uint64_t incarnation_;

  mutable absl::Mutex mu_;
  std::optional<ShardSpec> spec_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ModelShard> shard_;  // Set once under mu_; read without it afterwards.
  std::string fingerprint_;
  std::unique_ptr<memstore::BlockStore> store_;
  std::unique_ptr<BlockStorage> storage_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  std::atomic<const ModelShard*> loaded_{nullptr};

  absl::Mutex reaper_mu_;
  bool stop_ ABSL_GUARDED_BY(reaper_mu_) = false;
  std::thread reaper_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_WORKER_CORE_H_
