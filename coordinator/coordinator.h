// The coordinator's engine, independent of gRPC: tokenizer and chat template, placement of layer
// ranges over the stages, the pipelined prefill driver, the decode loop with streaming, the
// document catalogue, admission limits, deadlines and cancellation. The gRPC services
// (coordinator_service.h) validate nothing themselves: every request check lives here, so the
// embedded mode (in-process stages) and the distributed mode (gRPC stages) behave the same.
#ifndef QLLM_COORDINATOR_COORDINATOR_H_
#define QLLM_COORDINATOR_COORDINATOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/catalogue.h"
#include "coordinator/stage.h"
#include "qllm/v1/admin.pb.h"
#include "qllm/v1/qllm.pb.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "worker/memory_config.h"

namespace qllm::coordinator {

// How activations travel between pipeline stages.
enum class ActivationTransport {
  kRelay,  // Through the coordinator, on each stage's RunChunks stream (or in memory).
  kPeer,   // Worker to worker over the workers' peer transport (NCCL between GPUs); every
           // stage must report the same one, else requests fail with FAILED_PRECONDITION.
  kAuto,   // kPeer when every stage reports the same peer transport, else kRelay.
};

// "relay", "peer", "auto"; INVALID_ARGUMENT otherwise.
absl::StatusOr<ActivationTransport> ParseActivationTransport(absl::string_view name);

struct CoordinatorOptions {
  // Checkpoint directory (config.json, *.safetensors, tokenizer.json); every worker must see
  // the same files at this path.
  std::string model_dir;
  // Chat template name (tokenizer/chat_template.h); empty picks one from the tokenizer's
  // special tokens (qllm-tiny, llama-3-inst, else mistral-inst).
  std::string chat_template;
  // The attention used when a request leaves memory fields unset.
  worker::MemoryConfig default_memory;
  // Directory of the document catalogue (RocksDB); empty: documents are unsupported.
  std::string data_dir;
  // Admission limits: requests (asks and ingests) running at once, and prompt tokens.
  int32_t max_sessions = 8;
  int64_t max_prompt_tokens = 2'000'000;
  // Prompt tokens per pipeline chunk, and chunks in flight at once (stages overlap).
  int64_t chunk_tokens = 512;
  int32_t max_inflight_chunks = 4;
  // Deadline of control calls to workers (open, close, persist, linking...).
  absl::Duration control_timeout = absl::Seconds(30);
  // Between stages. Default: relay.
  ActivationTransport activation_transport = ActivationTransport::kRelay;
};

// Per-call context: the client's deadline and a cancellation probe (client gone or cancelled).
struct CallContext {
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled = [] { return false; };
};

// Receives a call's streamed events (from the calling thread).
class AskSink {
 public:
  virtual ~AskSink() = default;
  virtual void Progress(int64_t done, int64_t total) = 0;
  virtual void TextDelta(const std::string& text) = 0;
};

class Coordinator {
 public:
  // Takes the stages in pipeline order (one per worker). Loads the tokenizer and config,
  // opens the catalogue. Workers are contacted lazily (each call makes sure they serve).
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorOptions options, std::vector<std::unique_ptr<Stage>> stages);
  ~Coordinator();

  // Makes every stage serve its layers (Register, LoadShard when missing). UNAVAILABLE names
  // the first stage that cannot.
  absl::Status EnsureReady(absl::Time deadline);
  // OK when every stage answers Register (loaded or not) and none reports itself unhealthy;
  // UNAVAILABLE naming the first that does not. Drives the coordinator's grpc.health.v1 status.
  absl::Status CheckStages(absl::Time deadline);

  // Errors: INVALID_ARGUMENT (the field named), NOT_FOUND (unknown document),
  // RESOURCE_EXHAUSTED (admission), UNAVAILABLE (a stage down), DEADLINE_EXCEEDED, CANCELLED,
  // FAILED_PRECONDITION (a document computed by another model or with an incompatible layout),
  // DATA_LOSS (a damaged document).
  absl::StatusOr<v1::AskResult> Ask(const v1::AskRequest& request, const CallContext& call,
                                    AskSink* sink);
  // Ingests `text` as a document without a question. ALREADY_EXISTS for an existing id with
  // other text (the same text returns the stored document).
  absl::StatusOr<v1::Document> CreateDocument(const v1::DocumentMetadata& metadata,
                                              const std::string& text, const CallContext& call,
                                              AskSink* sink);
  absl::StatusOr<v1::Document> GetDocument(const std::string& document_id) const;
  absl::StatusOr<v1::ListDocumentsResponse> ListDocuments(const v1::ListDocumentsRequest& r) const;
  absl::Status DeleteDocument(const std::string& document_id, const CallContext& call);
  v1::ClusterStatus GetClusterStatus();

  // Checks of a CreateDocument's first message (used by the service before reading text);
  // returns the document's attention layout.
  absl::StatusOr<worker::MemoryConfig> ValidateMetadata(const v1::DocumentMetadata& metadata) const;
  const CoordinatorOptions& options() const { return options_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  struct Placement {
    worker::ShardSpec spec;
    uint64_t incarnation = 0;
    bool ready = false;
    std::string fingerprint;
    std::string peer_transport;  // As the stage last registered.
  };
  struct Prompt;
  class SessionSlot;
  // One session's chunk stream on every stage, in pipeline order.
  struct Streams {
    std::vector<std::unique_ptr<ChunkStream>> owned;
    std::vector<ChunkStream*> raw;
    bool peer = false;  // The stages are linked (activations worker to worker).
  };

  Coordinator(CoordinatorOptions options, std::vector<std::unique_ptr<Stage>> stages);
  absl::StatusOr<SessionSlot> Admit();
  absl::Status ValidateAsk(const v1::AskRequest& r, worker::MemoryConfig* memory) const;
  absl::StatusOr<v1::AskResult> RunAsk(const v1::AskRequest& r, const worker::MemoryConfig& memory,
                                       const CallContext& call, AskSink* sink);
  v1::Document ToProto(const DocumentEntry& e) const;
  absl::Status StageError(size_t stage, const absl::Status& s) const;
  // FAILED_PRECONDITION without a catalogue (--data_dir).
  absl::Status DocumentsEnabled() const;
  // Links the session's stages first when UsePeerLinks says so (within `control`).
  absl::StatusOr<Streams> OpenStreams(uint64_t session_id, absl::Time control, absl::Time deadline);
  // Whether sessions link their stages (options_.activation_transport and what the stages
  // registered with). FAILED_PRECONDITION for kPeer without a common transport.
  absl::StatusOr<bool> UsePeerLinks();
  // Links every pair of adjacent stages for the session: the upstream worker issues the id,
  // both ends join concurrently.
  absl::Status ConnectLinks(uint64_t session_id, absl::Time deadline);
  // Aborts the session's links after a failure (closes it on every stage).
  std::function<void()> LinkAborter(uint64_t session_id) const;
  // Deletes the documents stage `i` holds that no catalogue entry or ingest in flight names
  // (left by a crash between the workers' commit and the catalogue write). Best effort.
  void SweepOrphans(size_t i, absl::Time deadline);

  const CoordinatorOptions options_;
  const std::vector<std::unique_ptr<Stage>> stages_;
  model::ModelConfig config_;
  std::string fingerprint_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  tokenizer::ChatTemplate template_;
  std::vector<int32_t> stop_tokens_;
  std::unique_ptr<Catalogue> catalogue_;

  absl::Mutex placement_mu_;
  std::vector<Placement> placement_ ABSL_GUARDED_BY(placement_mu_);

  absl::Mutex admission_mu_;
  int32_t active_ ABSL_GUARDED_BY(admission_mu_) = 0;
  absl::Mutex documents_mu_;  // Serializes catalogue writes of one coordinator.
  // Worker document keys of ingests in flight (not yet in the catalogue).
  std::set<uint64_t> ingesting_ ABSL_GUARDED_BY(documents_mu_);
  std::atomic<uint64_t> next_session_id_;
};

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_COORDINATOR_H_
