#include "coordinator/coordinator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <map>
#include <random>
#include <span>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "model/config.h"
#include "model/fingerprint.h"
#include "model/sampler.h"
#include "tokenizer/internal/utf8.h"
#include "tokenizer/load_tokenizer.h"
#include "tokenizer/stream_decoder.h"
#include "worker/rpc_convert.h"

namespace qllm::coordinator {
namespace {

using worker::Activations;
using worker::AttentionMode;
using worker::MemoryConfig;

constexpr int32_t kDefaultMaxTokens = 64;
constexpr int32_t kMaxMaxTokens = 4096;
constexpr int kMaxEvidence = 8;

absl::Status CheckUtf8(std::string_view text, const char* field) {
  if (!tokenizer::internal::IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

bool ValidDocumentId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

absl::Status CheckDocumentId(std::string_view id, const char* field) {
  if (ValidDocumentId(id)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must match [A-Za-z0-9._-]{1,128}"));
}

// CANCELLED or DEADLINE_EXCEEDED once the client is gone or out of time.
absl::Status CheckCall(const CallContext& call) {
  if (call.cancelled()) return absl::CancelledError("cancelled by the client");
  if (absl::Now() > call.deadline) return absl::DeadlineExceededError("deadline exceeded");
  return absl::OkStatus();
}

// `ids` (at positions start..) in pipeline chunks of `chunk_tokens`; the first chunk holds at
// least `first_min` tokens (a question span must be processed in one call).
std::vector<Activations> MakeChunks(uint64_t session_id, std::span<const int32_t> ids,
                                    int64_t start, int64_t chunk_tokens, int64_t first_min) {
  const int64_t total = static_cast<int64_t>(ids.size());
  std::vector<Activations> chunks;
  for (int64_t b = 0; b < total;) {
    int64_t n = std::min(chunk_tokens, total - b);
    if (b == 0) n = std::max(n, std::min(total, first_min));
    Activations a;
    a.session_id = session_id;
    a.position = start + b;
    a.tokens = static_cast<int32_t>(n);
    a.ids.assign(ids.begin() + b, ids.begin() + b + n);
    chunks.push_back(std::move(a));
    b += n;
  }
  return chunks;
}

// Block modes share a document layout: a document ingested in either can be asked in either.
int ModeFamily(AttentionMode m) {
  switch (m) {
    case AttentionMode::kFull:
      return 0;
    case AttentionMode::kStreaming:
      return 1;
    default:
      return 2;
  }
}

absl::StatusOr<std::string> PickTemplate(const tokenizer::Tokenizer& tok) {
  if (tok.TokenToId("<|question|>").ok() && tok.TokenToId("<|context|>").ok()) return "qllm-tiny";
  if (tok.TokenToId("<|start_header_id|>").ok()) return "llama-3-inst";
  return "mistral-inst";
}

// How RunPipelined drives the stages.
struct PipelineMode {
  // Chunks in the pipeline at once.
  int32_t max_inflight = 1;
  // The stages are linked (peer links): every stage gets every chunk's control part at once and
  // the activations travel worker to worker; stages run concurrently even for one chunk (a
  // linked send waits for the receiver, so running them in turn would deadlock).
  bool peer = false;
  // Peer mode: called once after the first failure, outside any lock, to abort the session's
  // links so that stages blocked on them return.
  std::function<void()> abort_links;
};

// Runs chunks through the stages with up to mode.max_inflight chunks in the pipeline: stage s
// works on chunk i while stage s - 1 works on chunk i + 1. `on_output` sees each finished chunk
// (the last stage's logits, every stage's selections in stage order) in order on the calling
// thread; an error from it or from any stage stops everything.
absl::Status RunPipelined(const std::vector<ChunkStream*>& streams, std::vector<Activations> chunks,
                          const PipelineMode& mode,
                          const std::function<absl::Status(Activations&)>& on_output) {
  const size_t num_stages = streams.size();
  const size_t num_chunks = chunks.size();
  const bool peer = mode.peer && num_stages > 1;
  if (!peer && (num_stages == 1 || num_chunks == 1)) {  // Nothing to overlap.
    for (Activations& a : chunks) {
      for (ChunkStream* s : streams) RETURN_IF_ERROR(s->Run(&a));
      RETURN_IF_ERROR(on_output(a));
    }
    return absl::OkStatus();
  }
  absl::Mutex mu;
  std::vector<std::deque<size_t>> queues(num_stages + 1);  // queues[num_stages]: finished.
  // Peer mode: each stage's own copy of each chunk, and the stages yet to finish it.
  std::vector<std::vector<Activations>> parts(peer ? num_chunks : 0);
  std::vector<size_t> pending(peer ? num_chunks : 0, 0);
  absl::Status error;
  size_t admitted = 0, consumed = 0;
  bool failed = false;
  // Returns whether this was the first failure (whose caller then aborts the links).
  auto fail = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (failed) return false;
    failed = true;
    error = std::move(s);
    for (ChunkStream* st : streams) st->Cancel();
    return true;
  };
  auto after_failure = [&](bool first) {
    if (first && peer && mode.abort_links) mode.abort_links();
  };
  auto admit = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const size_t i = admitted++;
    if (!peer) {
      queues[0].push_back(i);
      return;
    }
    const Activations& a = chunks[i];
    parts[i].resize(num_stages);
    for (size_t s = 0; s < num_stages; ++s) {
      Activations& part = parts[i][s];
      part.session_id = a.session_id;
      part.position = a.position;
      part.tokens = a.tokens;
      part.all_logits = a.all_logits;
      if (s == 0) part.ids = a.ids;
      queues[s].push_back(i);
    }
    pending[i] = num_stages;
  };
  {
    absl::MutexLock lock(&mu);
    while (admitted < num_chunks && admitted < static_cast<size_t>(mode.max_inflight)) admit();
  }
  std::vector<std::thread> threads;
  for (size_t s = 0; s < num_stages; ++s) {
    threads.emplace_back([&, s] {
      for (size_t done = 0; done < num_chunks; ++done) {
        size_t i;
        {
          absl::MutexLock lock(&mu);
          auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
            return failed || !queues[s].empty();
          };
          mu.Await(absl::Condition(&ready));
          if (failed) return;
          i = queues[s].front();
          queues[s].pop_front();
        }
        absl::Status st = streams[s]->Run(peer ? &parts[i][s] : &chunks[i]);
        const bool ok = st.ok();
        bool first = false;
        {
          absl::MutexLock lock(&mu);
          if (!ok) {
            first = fail(std::move(st));
          } else if (!peer) {
            queues[s + 1].push_back(i);
          } else if (--pending[i] == 0) {
            Activations& out = chunks[i];
            out.selections.clear();
            for (Activations& part : parts[i]) {
              for (auto& sel : part.selections) out.selections.push_back(std::move(sel));
            }
            out.logits = std::move(parts[i].back().logits);
            out.ids.clear();
            out.hidden.clear();
            parts[i].clear();
            queues[num_stages].push_back(i);
          }
        }
        if (!ok) {
          after_failure(first);
          return;
        }
      }
    });
  }
  while (true) {
    size_t i;
    {
      absl::MutexLock lock(&mu);
      if (consumed == num_chunks || failed) break;
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return failed || !queues[num_stages].empty();
      };
      mu.Await(absl::Condition(&ready));
      if (failed) break;
      i = queues[num_stages].front();
      queues[num_stages].pop_front();
    }
    absl::Status st = on_output(chunks[i]);
    const bool ok = st.ok();
    bool first = false;
    {
      absl::MutexLock lock(&mu);
      if (!ok) {
        first = fail(std::move(st));
      } else {
        ++consumed;
        chunks[i] = Activations();
        if (admitted < num_chunks) admit();
      }
    }
    if (!ok) {
      after_failure(first);
      break;
    }
  }
  for (std::thread& t : threads) t.join();
  absl::MutexLock lock(&mu);
  return failed ? error : absl::OkStatus();
}

}  // namespace

absl::StatusOr<ActivationTransport> ParseActivationTransport(absl::string_view name) {
  if (name == "relay") return ActivationTransport::kRelay;
  if (name == "peer") return ActivationTransport::kPeer;
  if (name == "auto") return ActivationTransport::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("activation transport \"", name, "\": use relay, peer or auto"));
}

// A held admission slot; releases it when destroyed.
class Coordinator::SessionSlot {
 public:
  explicit SessionSlot(Coordinator* c) : c_(c) {}
  SessionSlot(SessionSlot&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  SessionSlot& operator=(SessionSlot&&) = delete;
  ~SessionSlot() {
    if (c_ != nullptr) {
      absl::MutexLock lock(&c_->admission_mu_);
      --c_->active_;
    }
  }

 private:
  Coordinator* c_;
};

Coordinator::Coordinator(CoordinatorOptions options, std::vector<std::unique_ptr<Stage>> stages)
    : options_(std::move(options)), stages_(std::move(stages)) {
  std::random_device rd;
  next_session_id_.store(((static_cast<uint64_t>(rd()) << 20) ^ rd()) & ((uint64_t{1} << 52) - 1));
}

Coordinator::~Coordinator() = default;

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options, std::vector<std::unique_ptr<Stage>> stages) {
  if (stages.empty()) return absl::InvalidArgumentError("no workers");
  if (options.chunk_tokens <= 0 || options.max_inflight_chunks <= 0 || options.max_sessions <= 0) {
    return absl::InvalidArgumentError(
        "chunk_tokens, max_inflight_chunks, max_sessions must be > 0");
  }
  RETURN_IF_ERROR(options.default_memory.Validate());
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), std::move(stages)));
  const CoordinatorOptions& o = c->options_;
  ASSIGN_OR_RETURN(c->config_, model::LoadModelConfig(o.model_dir));
  ASSIGN_OR_RETURN(c->fingerprint_, model::ModelFingerprint(o.model_dir));
  ASSIGN_OR_RETURN(c->tokenizer_, tokenizer::LoadTokenizer(o.model_dir));
  std::string name = o.chat_template;
  if (name.empty()) {
    ASSIGN_OR_RETURN(name, PickTemplate(*c->tokenizer_));
  }
  ASSIGN_OR_RETURN(c->template_, tokenizer::GetChatTemplate(name));
  c->stop_tokens_ = c->config_.eos_token_ids;
  if (auto eos = c->tokenizer_->eos_id(); eos.has_value()) c->stop_tokens_.push_back(*eos);
  for (const char* t : {"<|eot_id|>", "<|eot|>", "<|end_of_text|>"}) {
    if (auto id = c->tokenizer_->TokenToId(t); id.ok()) c->stop_tokens_.push_back(*id);
  }
  const int32_t n = static_cast<int32_t>(c->stages_.size());
  const int32_t layers = c->config_.num_layers;
  if (layers < n) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " workers for a model of ", layers, " layers: at most one per layer"));
  }
  for (int32_t i = 0; i < n; ++i) {
    Placement p;
    p.spec =
        worker::ShardSpec{o.model_dir, layers * i / n, layers * (i + 1) / n, i == 0, i == n - 1};
    c->placement_.push_back(p);
  }
  if (!o.data_dir.empty()) {
    ASSIGN_OR_RETURN(c->catalogue_, Catalogue::Open(o.data_dir));
  }
  return c;
}

absl::Status Coordinator::StageError(size_t stage, const absl::Status& s) const {
  return absl::Status(
      s.code(), absl::StrCat("stage ", stage, " (", stages_[stage]->address(), "): ", s.message()));
}

absl::Status Coordinator::EnsureReady(absl::Time deadline) {
  absl::MutexLock lock(&placement_mu_);
  const absl::Time control = std::min(deadline, absl::Now() + options_.control_timeout);
  for (size_t i = 0; i < stages_.size(); ++i) {
    Placement& p = placement_[i];
    auto id = stages_[i]->Register(control);
    if (!id.ok()) {
      p.ready = false;
      if (absl::IsDeadlineExceeded(id.status()) && absl::Now() >= deadline) return id.status();
      return absl::UnavailableError(absl::StrCat("pipeline stage ", i, " (", stages_[i]->address(),
                                                 ") is unavailable: ", id.status().message()));
    }
    p.peer_transport = id->peer_transport;
    if (!id->unhealthy.empty()) {
      p.ready = false;
      return absl::UnavailableError(absl::StrCat("pipeline stage ", i, " (", stages_[i]->address(),
                                                 ") is unhealthy: ", id->unhealthy));
    }
    if (p.ready && id->incarnation == p.incarnation && id->shard == p.spec) continue;
    if (!id->shard.has_value() || !(*id->shard == p.spec)) {
      // Loading a large shard may take long: allow the request's whole deadline.
      auto info = stages_[i]->LoadShard(p.spec, deadline);
      if (!info.ok()) {
        p.ready = false;
        return absl::UnavailableError(
            absl::StrCat("pipeline stage ", i, " (", stages_[i]->address(),
                         ") cannot load its layers: ", info.status().message()));
      }
      if (info->fingerprint != fingerprint_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "stage ", i, " loaded a different model (fingerprint ", info->fingerprint, ", want ",
            fingerprint_, "): workers must see the same files at ", options_.model_dir));
      }
    }
    p.incarnation = id->incarnation;
    p.ready = true;
    SweepOrphans(i, control);
  }
  return absl::OkStatus();
}

void Coordinator::SweepOrphans(size_t i, absl::Time deadline) {
  if (catalogue_ == nullptr) return;
  auto held = stages_[i]->ListDocuments(deadline);
  if (!held.ok() || held->empty()) return;
  std::set<uint64_t> known;
  {
    absl::MutexLock lock(&documents_mu_);
    known = ingesting_;
    std::string after;
    while (true) {
      auto page = catalogue_->List(after, 1000);
      if (!page.ok()) return;  // Unsure what exists: delete nothing.
      for (const DocumentEntry& e : *page) known.insert(e.key);
      if (page->size() < 1000) break;
      after = page->back().document_id;
    }
  }
  int deleted = 0;
  for (uint64_t key : *held) {
    if (known.contains(key)) continue;
    if (stages_[i]->DeleteDocument(key, deadline).ok()) ++deleted;
  }
  if (deleted > 0) {
    QLLM_LOG(INFO) << "stage " << i << " (" << stages_[i]->address() << "): deleted " << deleted
                   << " document state(s) no catalogue entry names";
  }
}

absl::Status Coordinator::CheckStages(absl::Time deadline) {
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto id = stages_[i]->Register(deadline);
    if (!id.ok()) return StageError(i, id.status());
    if (!id->unhealthy.empty()) return StageError(i, absl::UnavailableError(id->unhealthy));
  }
  return absl::OkStatus();
}

absl::StatusOr<Coordinator::SessionSlot> Coordinator::Admit() {
  absl::MutexLock lock(&admission_mu_);
  if (active_ >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("the server is busy: ", active_,
                                                     " requests running (max ",
                                                     options_.max_sessions, "); retry later"));
  }
  ++active_;
  return SessionSlot(this);
}

absl::Status Coordinator::ValidateAsk(const v1::AskRequest& r, MemoryConfig* memory) const {
  switch (r.source_case()) {
    case v1::AskRequest::kInlineText:
      if (r.inline_text().empty()) return absl::InvalidArgumentError("inline_text is empty");
      RETURN_IF_ERROR(CheckUtf8(r.inline_text(), "inline_text"));
      break;
    case v1::AskRequest::kDocumentId:
      RETURN_IF_ERROR(CheckDocumentId(r.document_id(), "document_id"));
      break;
    default:
      return absl::InvalidArgumentError("set inline_text or document_id");
  }
  RETURN_IF_ERROR(CheckUtf8(r.question(), "question"));
  RETURN_IF_ERROR(CheckUtf8(r.system(), "system"));
  if (absl::StripAsciiWhitespace(r.question()).empty()) {
    return absl::InvalidArgumentError("question is empty");
  }
  const v1::SamplingParams& s = r.sampling();
  if (!(s.temperature() >= 0.0f && s.temperature() <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature must be in [0, 100], got ", s.temperature()));
  }
  if (s.top_k() < 0 || s.top_k() > config_.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_k must be in [0, ", config_.vocab_size, "], got ", s.top_k()));
  }
  if (!(s.top_p() >= 0.0f && s.top_p() <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p must be in [0, 1], got ", s.top_p()));
  }
  if (s.max_tokens() < 0 || s.max_tokens() > kMaxMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.max_tokens must be in [0, ",
                                                   kMaxMaxTokens, "], got ", s.max_tokens()));
  }
  if (r.progress_interval_tokens() < 0) {
    return absl::InvalidArgumentError("progress_interval_tokens must be >= 0");
  }
  ASSIGN_OR_RETURN(*memory, worker::MemoryConfigFromProto(r.memory(), options_.default_memory));
  return memory->ValidateForModel(config_.rope_theta);
}

struct Coordinator::Prompt {
  std::vector<int32_t> ids;  // What runs through the pipeline now.
  int64_t start = 0;         // Position of ids[0] (a stored document's length, else 0).
  worker::QuestionSpan question;
  // For evidence: every token from position 0 and where the context text begins in their
  // decoded bytes.
  std::vector<int32_t> all_ids;
  std::string context;
};

absl::StatusOr<v1::AskResult> Coordinator::Ask(const v1::AskRequest& request,
                                               const CallContext& call, AskSink* sink) {
  MemoryConfig memory;
  RETURN_IF_ERROR(ValidateAsk(request, &memory));
  ASSIGN_OR_RETURN(SessionSlot slot, Admit());
  return RunAsk(request, memory, call, sink);
}

namespace {

// Closes a session on every stage when it goes out of scope (whatever happened).
class SessionGuard {
 public:
  SessionGuard(const std::vector<std::unique_ptr<Stage>>& stages, uint64_t id,
               absl::Duration timeout)
      : stages_(stages), id_(id), timeout_(timeout) {}
  ~SessionGuard() {
    const absl::Time deadline = absl::Now() + timeout_;
    for (size_t i = 0; i < opened_; ++i) {
      if (absl::Status s = stages_[i]->CloseSession(id_, deadline); !s.ok()) {
        QLLM_LOG(WARNING) << "closing session " << id_ << " on " << stages_[i]->address() << ": "
                          << s << " (the worker reaps it when idle)";
      }
    }
  }
  void Opened() { ++opened_; }

 private:
  const std::vector<std::unique_ptr<Stage>>& stages_;
  const uint64_t id_;
  const absl::Duration timeout_;
  size_t opened_ = 0;
};

}  // namespace

absl::StatusOr<v1::AskResult> Coordinator::RunAsk(const v1::AskRequest& r,
                                                  const MemoryConfig& requested,
                                                  const CallContext& call, AskSink* sink) {
  MemoryConfig memory = requested;
  Prompt prompt;
  std::optional<DocumentEntry> doc;
  if (r.source_case() == v1::AskRequest::kDocumentId) {
    RETURN_IF_ERROR(DocumentsEnabled());
    ASSIGN_OR_RETURN(doc, catalogue_->Get(r.document_id()));
    if (doc->model_fingerprint != fingerprint_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "document \"", doc->document_id, "\" was computed by another model (fingerprint ",
          doc->model_fingerprint, "); ingest it again"));
    }
    // The layout is fixed at ingest; only retrieval-time fields may change.
    const v1::MemoryParams& m = r.memory();
    const MemoryConfig& d = doc->memory;
    auto fixed = [&](bool has, int32_t got, int32_t want, const char* name) -> absl::Status {
      if (has && got != want) {
        return absl::InvalidArgumentError(absl::StrCat("memory.", name, " is fixed at ingest: \"",
                                                       doc->document_id, "\" has ", want,
                                                       ", the request asks for ", got));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(fixed(m.has_n_init(), m.n_init(), d.n_init, "n_init"));
    RETURN_IF_ERROR(fixed(m.has_n_local(), m.n_local(), d.n_local, "n_local"));
    RETURN_IF_ERROR(fixed(m.has_block_size(), m.block_size(), d.block_size, "block_size"));
    RETURN_IF_ERROR(fixed(m.has_repr_topk(), m.repr_topk(), d.repr_topk, "repr_topk"));
    RETURN_IF_ERROR(
        fixed(m.has_exc_block_size(), m.exc_block_size(), d.exc_block_size, "exc_block_size"));
    AttentionMode mode = memory.mode;
    if (m.mode() == v1::MemoryParams::MODE_UNSPECIFIED && ModeFamily(mode) != ModeFamily(d.mode)) {
      mode = d.mode;
    }
    if (ModeFamily(mode) != ModeFamily(d.mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "memory.mode ", worker::AttentionModeName(mode), " cannot read document \"",
          doc->document_id, "\" ingested in ", worker::AttentionModeName(d.mode), " mode"));
    }
    memory = d;
    memory.mode = mode;
    memory.topk = m.has_topk() ? m.topk() : d.topk;
    memory.question_weight = m.has_question_weight() ? m.question_weight() : d.question_weight;
    RETURN_IF_ERROR(memory.Validate());
    ASSIGN_OR_RETURN(tokenizer::ChatPrompt followup,
                     tokenizer::BuildFollowupPrompt(*tokenizer_, template_, r.question()));
    prompt.ids = std::move(followup.ids);
    prompt.start = doc->tokens;
    prompt.question = {doc->tokens + followup.question_begin, doc->tokens + followup.question_end};
    if (r.return_evidence()) {
      RETURN_IF_ERROR(catalogue_->GetText(doc->document_id, &prompt.context, &prompt.all_ids));
      prompt.all_ids.insert(prompt.all_ids.end(), prompt.ids.begin(), prompt.ids.end());
    }
  } else {
    ASSIGN_OR_RETURN(tokenizer::ChatPrompt p,
                     tokenizer::BuildChatPrompt(*tokenizer_, template_, r.system(), r.question(),
                                                r.inline_text()));
    prompt.ids = std::move(p.ids);
    prompt.question = {p.question_begin, p.question_end};
    if (r.return_evidence()) {
      prompt.all_ids = prompt.ids;
      prompt.context = r.inline_text();
    }
  }
  const int64_t total = static_cast<int64_t>(prompt.ids.size());
  if (prompt.start + total > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt.start + total,
                                                   " tokens; this server accepts at most ",
                                                   options_.max_prompt_tokens));
  }
  RETURN_IF_ERROR(CheckCall(call));
  RETURN_IF_ERROR(EnsureReady(call.deadline));

  // Open the session on every stage (restoring a stored document's states).
  worker::SessionSpec spec;
  spec.session_id = next_session_id_.fetch_add(1);
  spec.memory = memory;
  if (memory.mode == AttentionMode::kQllm) spec.question = prompt.question;
  spec.late_question = doc.has_value();
  spec.record_selections = r.return_evidence();
  SessionGuard guard(stages_, spec.session_id, options_.control_timeout);
  const absl::Time control = std::min(call.deadline, absl::Now() + options_.control_timeout);
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (doc.has_value()) {
      auto tokens = stages_[i]->RestoreDocument(doc->key, spec, control);
      if (!tokens.ok()) return StageError(i, tokens.status());
      guard.Opened();
      if (*tokens != doc->tokens) {
        return absl::DataLossError(absl::StrCat("stage ", i, " restored ", *tokens, " tokens of \"",
                                                doc->document_id, "\", want ", doc->tokens));
      }
    } else {
      if (absl::Status s = stages_[i]->OpenSession(spec, control); !s.ok()) return StageError(i, s);
      guard.Opened();
    }
  }
  ASSIGN_OR_RETURN(Streams streams, OpenStreams(spec.session_id, control, call.deadline));
  const PipelineMode mode{options_.max_inflight_chunks, streams.peer, LinkAborter(spec.session_id)};

  // Prefill: the first chunk covers the question span (it must be processed in one call).
  const absl::Time t0 = absl::Now();
  std::vector<Activations> chunks =
      MakeChunks(spec.session_id, prompt.ids, prompt.start, options_.chunk_tokens,
                 prompt.question.end - prompt.start);
  std::vector<worker::ChunkSelection> selections;
  std::vector<float> last_logits;
  int64_t done = 0, reported = 0;
  const int64_t interval = r.progress_interval_tokens();
  RETURN_IF_ERROR(
      RunPipelined(streams.raw, std::move(chunks), mode, [&](Activations& a) -> absl::Status {
        RETURN_IF_ERROR(CheckCall(call));
        done += a.tokens;
        if (done == total || done - reported >= interval) {
          sink->Progress(done, total);
          reported = done;
        }
        for (auto& s : a.selections) selections.push_back(std::move(s));
        last_logits = std::move(a.logits);
        return absl::OkStatus();
      }));
  const double prefill_seconds = absl::ToDoubleSeconds(absl::Now() - t0);

  // Decode.
  const absl::Time t1 = absl::Now();
  model::SamplingOptions sampling;
  sampling.temperature = r.sampling().temperature();
  sampling.top_k = r.sampling().top_k();
  sampling.top_p = r.sampling().top_p() == 0.0f ? 1.0f : r.sampling().top_p();
  sampling.seed = r.sampling().seed();
  RETURN_IF_ERROR(sampling.Validate(config_.vocab_size));
  model::Sampler sampler(sampling);
  const int32_t max_tokens =
      r.sampling().max_tokens() == 0 ? kDefaultMaxTokens : r.sampling().max_tokens();
  tokenizer::DecodeOptions decode;
  decode.skip_special_tokens = true;
  tokenizer::StreamDecoder stream(tokenizer_.get(), decode);
  v1::AskResult result;
  result.set_stop_reason(v1::AskResult::STOP_REASON_MAX_TOKENS);
  std::vector<int32_t> generated;
  int64_t position = prompt.start + total;
  const int32_t vocab = config_.vocab_size;
  while (true) {
    if (static_cast<int64_t>(last_logits.size()) < vocab) {
      return absl::InternalError("the last stage returned no logits");
    }
    const int32_t token = sampler.Sample(last_logits.data() + last_logits.size() - vocab, vocab);
    generated.push_back(token);
    result.add_token_ids(token);
    ASSIGN_OR_RETURN(std::string text, stream.Feed(token));
    if (!text.empty()) {
      sink->TextDelta(text);
      result.mutable_text()->append(text);
    }
    if (std::find(stop_tokens_.begin(), stop_tokens_.end(), token) != stop_tokens_.end()) {
      result.set_stop_reason(v1::AskResult::STOP_REASON_EOS);
      break;
    }
    if (static_cast<int32_t>(generated.size()) >= max_tokens) break;
    RETURN_IF_ERROR(CheckCall(call));
    std::vector<Activations> step(1);
    Activations& a = step[0];
    a.session_id = spec.session_id;
    a.position = position++;
    a.tokens = 1;
    a.ids = {token};
    RETURN_IF_ERROR(RunPipelined(streams.raw, std::move(step), mode, [&](Activations& out) {
      for (auto& s : out.selections) selections.push_back(std::move(s));
      last_logits = std::move(out.logits);
      return absl::OkStatus();
    }));
  }
  if (std::string tail = stream.Flush(); !tail.empty()) {
    sink->TextDelta(tail);
    result.mutable_text()->append(tail);
  }
  v1::Usage* usage = result.mutable_usage();
  usage->set_prompt_tokens(prompt.start + total);
  usage->set_generated_tokens(static_cast<int64_t>(generated.size()));
  usage->set_prefill_seconds(prefill_seconds);
  usage->set_decode_seconds(absl::ToDoubleSeconds(absl::Now() - t1));

  if (r.return_evidence() && memory.uses_memory()) {
    // Blocks selected while answering: by the chunk holding the last prompt token and after.
    const int64_t answer_from = prompt.start + total;
    struct Hit {
      int count = 0;
      float best = -INFINITY;
    };
    std::map<int64_t, Hit> hits;
    for (const auto& s : selections) {
      if (s.chunk_end < answer_from) continue;
      for (size_t j = 0; j < s.block_starts.size(); ++j) {
        Hit& h = hits[s.block_starts[j]];
        ++h.count;
        h.best = std::max(h.best, s.scores[j]);
      }
    }
    std::vector<std::pair<int64_t, Hit>> ranked(hits.begin(), hits.end());
    std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
      return a.second.count != b.second.count ? a.second.count > b.second.count
                                              : a.second.best > b.second.best;
    });
    // Byte offsets of every token in the decoded prompt, and where the context starts there.
    std::vector<int64_t> offsets = {0};
    std::string rendered;
    tokenizer::DecodeState state;
    for (int32_t id : prompt.all_ids) {
      RETURN_IF_ERROR(tokenizer_->AppendTokenBytes(id, {}, &state, &rendered));
      offsets.push_back(static_cast<int64_t>(rendered.size()));
    }
    const absl::string_view trimmed = absl::StripAsciiWhitespace(prompt.context);
    const size_t found = rendered.find(trimmed.data(), 0, trimmed.size());
    const int64_t context_at = found == std::string::npos ? 0 : static_cast<int64_t>(found);
    const int64_t lead = static_cast<int64_t>(trimmed.data() - prompt.context.data());
    const int64_t n_all = static_cast<int64_t>(prompt.all_ids.size());
    for (size_t k = 0; k < ranked.size() && k < kMaxEvidence; ++k) {
      const int64_t b = ranked[k].first;
      const int64_t e = std::min<int64_t>(b + memory.block_size, n_all);
      if (b >= e) continue;
      v1::EvidenceSpan* span = result.add_evidence();
      span->set_token_begin(b);
      span->set_token_end(e);
      auto text_at = [&](int64_t tok) {
        const int64_t off = offsets[tok] - context_at + lead;
        return std::clamp<int64_t>(off, 0, static_cast<int64_t>(prompt.context.size()));
      };
      span->set_text_begin(text_at(b));
      span->set_text_end(text_at(e));
      span->set_selections(ranked[k].second.count);
      span->set_best_score(ranked[k].second.best);
      ASSIGN_OR_RETURN(
          std::string text,
          tokenizer_->Decode(absl::MakeConstSpan(prompt.all_ids).subspan(b, e - b), decode));
      span->set_text(std::move(text));
    }
  }
  return result;
}

absl::Status Coordinator::DocumentsEnabled() const {
  if (catalogue_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError("documents are disabled: start with --data_dir");
}

absl::StatusOr<Coordinator::Streams> Coordinator::OpenStreams(uint64_t session_id,
                                                              absl::Time control,
                                                              absl::Time deadline) {
  Streams streams;
  ASSIGN_OR_RETURN(streams.peer, UsePeerLinks());
  if (streams.peer) RETURN_IF_ERROR(ConnectLinks(session_id, control));
  for (const auto& stage : stages_) {
    ASSIGN_OR_RETURN(std::unique_ptr<ChunkStream> s, stage->OpenChunkStream(session_id, deadline));
    streams.raw.push_back(s.get());
    streams.owned.push_back(std::move(s));
  }
  return streams;
}

absl::StatusOr<bool> Coordinator::UsePeerLinks() {
  if (options_.activation_transport == ActivationTransport::kRelay || stages_.size() < 2) {
    return false;
  }
  absl::MutexLock lock(&placement_mu_);
  const std::string& first = placement_[0].peer_transport;
  for (size_t i = 0; i < placement_.size(); ++i) {
    const std::string& t = placement_[i].peer_transport;
    if (!t.empty() && t == first) continue;
    if (options_.activation_transport == ActivationTransport::kAuto) return false;
    return absl::FailedPreconditionError(absl::StrCat(
        "--activation_transport=peer needs every worker on the same peer transport: stage 0 (",
        stages_[0]->address(), ") has ", first.empty() ? "none" : absl::StrCat("\"", first, "\""),
        ", stage ", i, " (", stages_[i]->address(), ") has ",
        t.empty() ? "none" : absl::StrCat("\"", t, "\"")));
  }
  return true;
}

absl::Status Coordinator::ConnectLinks(uint64_t session_id, absl::Time deadline) {
  const size_t links = stages_.size() - 1;
  std::vector<std::string> ids(links);
  for (size_t s = 0; s < links; ++s) {
    auto id = stages_[s]->CreateLink(session_id, deadline);
    if (!id.ok()) return StageError(s, id.status());
    ids[s] = std::move(*id);
  }
  // Both ends of every link join at once: creating an NCCL communicator is collective. The
  // first end to fail closes the session everywhere, which cancels the joins still waiting
  // for it (they would otherwise wait out the deadline).
  std::vector<absl::Status> results(2 * links);
  std::atomic<int> first_failed{-1};
  const std::function<void()> abort = LinkAborter(session_id);
  auto join = [&](size_t k, size_t stage, worker::LinkRole role) {
    results[k] = stages_[stage]->ConnectLink(session_id, ids[k / 2], role, deadline);
    int none = -1;
    if (!results[k].ok() && first_failed.compare_exchange_strong(none, static_cast<int>(k))) {
      abort();
    }
  };
  std::vector<std::thread> threads;
  for (size_t s = 0; s < links; ++s) {
    threads.emplace_back(join, 2 * s, s, worker::LinkRole::kSend);
    threads.emplace_back(join, 2 * s + 1, s + 1, worker::LinkRole::kReceive);
  }
  for (std::thread& t : threads) t.join();
  // Report the end that failed first, by itself: every later failure is a consequence of the
  // abort (a partner cancelled, or one whose join reached its worker after the session closed
  // and so found no session at all).
  const int k = first_failed.load();
  if (k >= 0) return StageError(k / 2 + k % 2, results[k]);
  return absl::OkStatus();
}

std::function<void()> Coordinator::LinkAborter(uint64_t session_id) const {
  return [this, session_id] {
    // Closing the session on a worker aborts its links; the guard closes it again (a no-op).
    // All at once: a stage that does not answer must not delay the others' release.
    const absl::Time deadline = absl::Now() + options_.control_timeout;
    std::vector<std::thread> closers;
    for (const auto& stage : stages_) {
      closers.emplace_back([&stage, session_id, deadline] {
        stage->CloseSession(session_id, deadline).IgnoreError();
      });
    }
    for (std::thread& t : closers) t.join();
  };
}

absl::StatusOr<MemoryConfig> Coordinator::ValidateMetadata(const v1::DocumentMetadata& m) const {
  RETURN_IF_ERROR(DocumentsEnabled());
  RETURN_IF_ERROR(CheckDocumentId(m.document_id(), "metadata.document_id"));
  if (m.title().size() > 1024)
    return absl::InvalidArgumentError("metadata.title exceeds 1024 bytes");
  ASSIGN_OR_RETURN(MemoryConfig memory,
                   worker::MemoryConfigFromProto(m.memory(), options_.default_memory));
  RETURN_IF_ERROR(memory.ValidateForModel(config_.rope_theta));
  return memory;
}

v1::Document Coordinator::ToProto(const DocumentEntry& e) const {
  v1::Document d;
  d.set_document_id(e.document_id);
  d.set_title(e.title);
  d.set_tokens(e.tokens);
  d.set_bytes(e.bytes);
  d.set_model_fingerprint(e.model_fingerprint);
  d.set_created_unix_ms(e.created_unix_ms);
  *d.mutable_memory() = worker::MemoryConfigToProto(e.memory);
  return d;
}

absl::StatusOr<v1::Document> Coordinator::CreateDocument(const v1::DocumentMetadata& metadata,
                                                         const std::string& text,
                                                         const CallContext& call, AskSink* sink) {
  ASSIGN_OR_RETURN(const MemoryConfig memory, ValidateMetadata(metadata));
  if (text.empty()) return absl::InvalidArgumentError("the document text is empty");
  RETURN_IF_ERROR(CheckUtf8(text, "the document text"));
  const uint64_t hash = TextHash(text);
  if (auto existing = catalogue_->Get(metadata.document_id()); existing.ok()) {
    if (existing->text_hash == hash && existing->model_fingerprint == fingerprint_) {
      return ToProto(*existing);  // A retried ingest.
    }
    return absl::AlreadyExistsError(absl::StrCat("document \"", metadata.document_id(),
                                                 "\" exists with other text or another model; "
                                                 "delete it first"));
  } else if (!absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  ASSIGN_OR_RETURN(SessionSlot slot, Admit());
  ASSIGN_OR_RETURN(tokenizer::ChatPrompt p,
                   tokenizer::BuildDocumentPrompt(*tokenizer_, template_, "", text));
  const int64_t total = static_cast<int64_t>(p.ids.size());
  if (total > options_.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the document has ", total,
                                                   " tokens; this server accepts at most ",
                                                   options_.max_prompt_tokens));
  }
  RETURN_IF_ERROR(EnsureReady(call.deadline));
  uint64_t key;
  {
    absl::MutexLock lock(&documents_mu_);
    ASSIGN_OR_RETURN(key, catalogue_->NextKey());
    ingesting_.insert(key);
  }
  struct IngestGuard {
    Coordinator* c;
    uint64_t key;
    ~IngestGuard() {
      absl::MutexLock lock(&c->documents_mu_);
      c->ingesting_.erase(key);
    }
  } ingest_guard{this, key};
  worker::SessionSpec spec;
  spec.session_id = next_session_id_.fetch_add(1);
  spec.memory = memory;
  // No question at ingest: qllm retrieval without a question is infllm's (the question joins
  // when the document is asked, see docs/qllm-algorithm.md, the last section).
  if (memory.mode == AttentionMode::kQllm) spec.memory.mode = AttentionMode::kInfLlm;
  spec.ingest_document_key = key;
  {
    SessionGuard guard(stages_, spec.session_id, options_.control_timeout);
    const absl::Time control = std::min(call.deadline, absl::Now() + options_.control_timeout);
    for (size_t i = 0; i < stages_.size(); ++i) {
      if (absl::Status s = stages_[i]->OpenSession(spec, control); !s.ok()) return StageError(i, s);
      guard.Opened();
    }
    ASSIGN_OR_RETURN(Streams streams, OpenStreams(spec.session_id, control, call.deadline));
    const PipelineMode mode{options_.max_inflight_chunks, streams.peer,
                            LinkAborter(spec.session_id)};
    std::vector<Activations> chunks =
        MakeChunks(spec.session_id, p.ids, 0, options_.chunk_tokens, /*first_min=*/0);
    int64_t done = 0;
    RETURN_IF_ERROR(
        RunPipelined(streams.raw, std::move(chunks), mode, [&](Activations& a) -> absl::Status {
          RETURN_IF_ERROR(CheckCall(call));
          done += a.tokens;
          sink->Progress(done, total);
          return absl::OkStatus();
        }));
    // Every worker commits its layers' states; only then does the catalogue name the document.
    const absl::Time persist = std::min(call.deadline, absl::Now() + options_.control_timeout);
    for (size_t i = 0; i < stages_.size(); ++i) {
      if (absl::Status s = stages_[i]->PersistDocument(spec.session_id, key, persist); !s.ok()) {
        for (size_t j = 0; j < i; ++j) stages_[j]->DeleteDocument(key, persist).IgnoreError();
        return StageError(i, s);
      }
    }
  }
  DocumentEntry e;
  e.document_id = metadata.document_id();
  e.key = key;
  e.title = metadata.title();
  e.tokens = total;
  e.bytes = static_cast<int64_t>(text.size());
  e.model_fingerprint = fingerprint_;
  e.created_unix_ms = absl::ToUnixMillis(absl::Now());
  e.memory = memory;
  e.chat_template = template_.name;
  e.text_hash = hash;
  {
    absl::MutexLock lock(&documents_mu_);
    if (catalogue_->Get(e.document_id).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("document \"", e.document_id, "\" was created concurrently"));
    }
    RETURN_IF_ERROR(catalogue_->Put(e, text, p.ids));
  }
  return ToProto(e);
}

absl::StatusOr<v1::Document> Coordinator::GetDocument(const std::string& document_id) const {
  RETURN_IF_ERROR(DocumentsEnabled());
  RETURN_IF_ERROR(CheckDocumentId(document_id, "document_id"));
  ASSIGN_OR_RETURN(DocumentEntry e, catalogue_->Get(document_id));
  return ToProto(e);
}

absl::StatusOr<v1::ListDocumentsResponse> Coordinator::ListDocuments(
    const v1::ListDocumentsRequest& r) const {
  RETURN_IF_ERROR(DocumentsEnabled());
  if (r.page_size() < 0 || r.page_size() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be in [0, 1000], got ", r.page_size()));
  }
  if (!r.page_token().empty() && !ValidDocumentId(r.page_token())) {
    return absl::InvalidArgumentError("page_token is not one this server issued");
  }
  const int size = r.page_size() == 0 ? 100 : r.page_size();
  ASSIGN_OR_RETURN(std::vector<DocumentEntry> entries, catalogue_->List(r.page_token(), size + 1));
  v1::ListDocumentsResponse out;
  for (int i = 0; i < static_cast<int>(entries.size()) && i < size; ++i) {
    *out.add_documents() = ToProto(entries[i]);
  }
  if (static_cast<int>(entries.size()) > size)
    out.set_next_page_token(entries[size - 1].document_id);
  return out;
}

absl::Status Coordinator::DeleteDocument(const std::string& document_id, const CallContext& call) {
  RETURN_IF_ERROR(DocumentsEnabled());
  RETURN_IF_ERROR(CheckDocumentId(document_id, "document_id"));
  uint64_t key;
  {
    absl::MutexLock lock(&documents_mu_);
    ASSIGN_OR_RETURN(DocumentEntry e, catalogue_->Get(document_id));
    key = e.key;
    RETURN_IF_ERROR(catalogue_->Delete(document_id));
  }
  // The document is gone for clients now; the workers' states are garbage. Deleting them is
  // best effort (a worker that is down keeps them until the key is reused, which never happens,
  // or until an operator wipes its store).
  const absl::Time deadline = std::min(call.deadline, absl::Now() + options_.control_timeout);
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (absl::Status s = stages_[i]->DeleteDocument(key, deadline); !s.ok()) {
      QLLM_LOG(WARNING) << "deleting document key " << key << " on " << stages_[i]->address()
                        << ": " << s;
    }
  }
  return absl::OkStatus();
}

v1::ClusterStatus Coordinator::GetClusterStatus() {
  v1::ClusterStatus out;
  *out.mutable_model() = worker::ModelInfoToProto(config_, fingerprint_);
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  bool serving = true;
  std::vector<Placement> placement;
  {
    absl::MutexLock lock(&placement_mu_);
    placement = placement_;
  }
  for (size_t i = 0; i < stages_.size(); ++i) {
    v1::WorkerStatus* w = out.add_workers();
    w->set_address(stages_[i]->address());
    w->set_layer_begin(placement[i].spec.layer_begin);
    w->set_layer_end(placement[i].spec.layer_end);
    auto id = stages_[i]->Register(deadline);
    if (!id.ok()) {
      w->set_health(v1::WorkerStatus::HEALTH_UNREACHABLE);
      serving = false;
      continue;
    }
    w->set_worker_id(id->worker_id);
    w->set_backend(id->backend);
    const bool ok =
        id->shard.has_value() && *id->shard == placement[i].spec && id->unhealthy.empty();
    w->set_health(ok ? v1::WorkerStatus::HEALTH_SERVING : v1::WorkerStatus::HEALTH_NOT_SERVING);
    serving = serving && ok;
    if (auto stats = stages_[i]->GetStats(deadline); stats.ok()) {
      w->set_documents(stats->documents);
      w->set_open_sessions(stats->open_sessions);
      w->set_host_bytes(stats->host_bytes);
      w->set_disk_bytes(stats->disk_bytes);
    }
  }
  out.set_serving(serving);
  return out;
}

}  // namespace qllm::coordinator
