#include "coordinator/stage.h"

#include <omp.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "qllm/v1/worker.grpc.pb.h"
#include "worker/rpc_convert.h"
#include "worker/worker_service.h"

namespace qllm::coordinator {
namespace {

using worker::Activations;

absl::Status CheckDeadline(absl::Time deadline) {
  if (absl::Now() > deadline) return absl::DeadlineExceededError("deadline exceeded");
  return absl::OkStatus();
}

// ---- In-process ------------------------------------------------------------------------------

class InProcessChunkStream final : public ChunkStream {
 public:
  InProcessChunkStream(worker::WorkerCore* core, absl::Time deadline, int threads)
      : core_(core), deadline_(deadline), threads_(threads) {}
  absl::Status Run(Activations* chunk) override {
    if (cancelled_.load()) return absl::CancelledError("cancelled");
    RETURN_IF_ERROR(CheckDeadline(deadline_));
    // The stages of one process share its cores: each gets its share of OpenMP threads (a
    // per-thread setting), or concurrent teams thrash (measured 3x slower, service_bench).
    if (threads_ > 0) omp_set_num_threads(threads_);
    return core_->RunChunk(chunk);
  }
  void Cancel() override { cancelled_.store(true); }

 private:
  worker::WorkerCore* const core_;
  const absl::Time deadline_;
  const int threads_;
  std::atomic<bool> cancelled_{false};
};

class InProcessStage final : public Stage {
 public:
  InProcessStage(worker::WorkerCore* core, int index, int threads)
      : core_(core), index_(index), threads_(threads) {}
  std::string address() const override { return absl::StrCat("in-process:", index_); }

  absl::StatusOr<StageIdentity> Register(absl::Time) override {
    const absl::Status health = core_->health();
    return StageIdentity{
        core_->options().worker_id,   core_->incarnation(),          core_->shard(),
        core_->peer_transport_name(), std::string(health.message()), core_->backend_name()};
  }
  absl::StatusOr<worker::ShardInfo> LoadShard(const worker::ShardSpec& spec, absl::Time) override {
    return core_->LoadShard(spec);
  }
  absl::Status OpenSession(const worker::SessionSpec& spec, absl::Time) override {
    return core_->OpenSession(spec);
  }
  absl::Status CloseSession(uint64_t id, absl::Time) override { return core_->CloseSession(id); }
  absl::StatusOr<std::unique_ptr<ChunkStream>> OpenChunkStream(uint64_t,
                                                               absl::Time deadline) override {
    return std::make_unique<InProcessChunkStream>(core_, deadline, threads_);
  }
  absl::Status PersistDocument(uint64_t session_id, uint64_t key, absl::Time) override {
    return core_->PersistDocument(session_id, key);
  }
  absl::StatusOr<int64_t> RestoreDocument(uint64_t key, const worker::SessionSpec& spec,
                                          absl::Time) override {
    return core_->RestoreDocument(key, spec);
  }
  absl::Status DeleteDocument(uint64_t key, absl::Time) override {
    return core_->DeleteDocument(key);
  }
  absl::StatusOr<std::vector<uint64_t>> ListDocuments(absl::Time) override {
    return core_->ListDocuments();
  }
  absl::StatusOr<worker::WorkerStatsSnapshot> GetStats(absl::Time) override {
    return core_->GetStats();
  }
  absl::StatusOr<std::string> CreateLink(uint64_t session_id, absl::Time) override {
    return core_->CreateLink(session_id);
  }
  absl::Status ConnectLink(uint64_t session_id, const std::string& link_id, worker::LinkRole role,
                           absl::Time deadline) override {
    return core_->ConnectLink(session_id, link_id, role, deadline);
  }

 private:
  worker::WorkerCore* const core_;
  const int index_;
  const int threads_;
};

// ---- gRPC ------------------------------------------------------------------------------------

absl::Status Annotate(const grpc::Status& status, const std::string& address) {
  if (status.ok()) return absl::OkStatus();
  absl::Status s = worker::FromGrpc(status);
  return absl::Status(s.code(), absl::StrCat("worker ", address, ": ", s.message()));
}

void SetDeadline(grpc::ClientContext* context, absl::Time deadline) {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
}

class GrpcChunkStream final : public ChunkStream {
 public:
  GrpcChunkStream(v1::Worker::Stub* stub, std::string address, absl::Time deadline)
      : address_(std::move(address)) {
    SetDeadline(&context_, deadline);
    stream_ = stub->RunChunks(&context_);
  }
  ~GrpcChunkStream() override {
    if (!finished_) {
      context_.TryCancel();
      stream_->Finish().ok();
    }
  }
  absl::Status Run(Activations* chunk) override {
    if (finished_) return absl::FailedPreconditionError("stream finished after an error");
    request_.Clear();
    worker::ActivationsToRequest(*chunk, &request_);
    if (!stream_->Write(request_) || !stream_->Read(&response_)) return Fail();
    return worker::ActivationsFromResponse(response_, chunk);
  }
  void Cancel() override { context_.TryCancel(); }

 private:
  absl::Status Fail() {
    finished_ = true;
    grpc::Status status = stream_->Finish();
    if (status.ok()) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream closed by the worker");
    }
    return Annotate(status, address_);
  }

  const std::string address_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RunChunkRequest, v1::RunChunkResponse>> stream_;
  v1::RunChunkRequest request_;
  v1::RunChunkResponse response_;
  bool finished_ = false;
};

class GrpcStage final : public Stage {
 public:
  explicit GrpcStage(std::string address) : address_(std::move(address)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(worker::kMaxRpcMessageBytes);
    args.SetMaxSendMessageSize(worker::kMaxRpcMessageBytes);
    // Reconnect quickly after a worker restart.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Worker::NewStub(channel_);
  }
  std::string address() const override { return address_; }

  absl::StatusOr<StageIdentity> Register(absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::RegisterResponse response;
    RETURN_IF_ERROR(
        Annotate(stub_->Register(&context, v1::RegisterRequest(), &response), address_));
    StageIdentity id{response.worker_id(),      response.incarnation(), std::nullopt,
                     response.peer_transport(), response.unhealthy(),   response.backend()};
    if (response.shard().layer_end() > 0) id.shard = worker::ShardSpecFromProto(response.shard());
    return id;
  }
  absl::StatusOr<worker::ShardInfo> LoadShard(const worker::ShardSpec& spec,
                                              absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::LoadShardResponse response;
    RETURN_IF_ERROR(
        Annotate(stub_->LoadShard(&context, worker::ShardSpecToProto(spec), &response), address_));
    worker::ShardInfo info;
    info.config.num_layers = response.model().num_layers();
    info.config.hidden_size = response.model().hidden_size();
    info.config.vocab_size = response.model().vocab_size();
    info.fingerprint = response.model().fingerprint();
    return info;
  }
  absl::Status OpenSession(const worker::SessionSpec& spec, absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::OpenSessionResponse response;
    return Annotate(stub_->OpenSession(&context, worker::SessionSpecToProto(spec), &response),
                    address_);
  }
  absl::Status CloseSession(uint64_t id, absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::CloseSessionRequest request;
    request.set_session_id(id);
    v1::CloseSessionResponse response;
    return Annotate(stub_->CloseSession(&context, request, &response), address_);
  }
  absl::StatusOr<std::unique_ptr<ChunkStream>> OpenChunkStream(uint64_t,
                                                               absl::Time deadline) override {
    return std::make_unique<GrpcChunkStream>(stub_.get(), address_, deadline);
  }
  absl::Status PersistDocument(uint64_t session_id, uint64_t key, absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::PersistDocumentRequest request;
    request.set_session_id(session_id);
    request.set_document_key(key);
    v1::PersistDocumentResponse response;
    return Annotate(stub_->PersistDocument(&context, request, &response), address_);
  }
  absl::StatusOr<int64_t> RestoreDocument(uint64_t key, const worker::SessionSpec& spec,
                                          absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::RestoreDocumentRequest request;
    request.set_document_key(key);
    *request.mutable_session() = worker::SessionSpecToProto(spec);
    v1::RestoreDocumentResponse response;
    RETURN_IF_ERROR(Annotate(stub_->RestoreDocument(&context, request, &response), address_));
    return response.tokens();
  }
  absl::Status DeleteDocument(uint64_t key, absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::DeleteWorkerDocumentRequest request;
    request.set_document_key(key);
    v1::DeleteWorkerDocumentResponse response;
    return Annotate(stub_->DeleteDocument(&context, request, &response), address_);
  }
  absl::StatusOr<std::vector<uint64_t>> ListDocuments(absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::ListWorkerDocumentsResponse response;
    RETURN_IF_ERROR(Annotate(
        stub_->ListDocuments(&context, v1::ListWorkerDocumentsRequest(), &response), address_));
    return std::vector<uint64_t>(response.document_keys().begin(), response.document_keys().end());
  }
  absl::StatusOr<worker::WorkerStatsSnapshot> GetStats(absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::WorkerStats response;
    RETURN_IF_ERROR(
        Annotate(stub_->GetStats(&context, v1::GetStatsRequest(), &response), address_));
    worker::WorkerStatsSnapshot s;
    s.open_sessions = response.open_sessions();
    s.host_bytes = response.host_bytes();
    s.disk_bytes = response.disk_bytes();
    s.host_hit_rate = response.host_hit_rate();
    s.documents = response.documents();
    return s;
  }
  absl::StatusOr<std::string> CreateLink(uint64_t session_id, absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::CreateLinkRequest request;
    request.set_session_id(session_id);
    v1::CreateLinkResponse response;
    RETURN_IF_ERROR(Annotate(stub_->CreateLink(&context, request, &response), address_));
    return response.link_id();
  }
  absl::Status ConnectLink(uint64_t session_id, const std::string& link_id, worker::LinkRole role,
                           absl::Time deadline) override {
    grpc::ClientContext context;
    SetDeadline(&context, deadline);
    v1::ConnectLinkRequest request;
    request.set_session_id(session_id);
    request.set_link_id(link_id);
    request.set_role(role == worker::LinkRole::kSend ? v1::ConnectLinkRequest::ROLE_SEND
                                                     : v1::ConnectLinkRequest::ROLE_RECEIVE);
    v1::ConnectLinkResponse response;
    return Annotate(stub_->ConnectLink(&context, request, &response), address_);
  }

 private:
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Worker::Stub> stub_;
};

}  // namespace

std::unique_ptr<Stage> NewInProcessStage(worker::WorkerCore* core, int index, int threads) {
  return std::make_unique<InProcessStage>(core, index, threads);
}

std::unique_ptr<Stage> NewGrpcStage(const std::string& address) {
  return std::make_unique<GrpcStage>(address);
}

}  // namespace qllm::coordinator
