#include "worker/worker_service.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/grpc_peer_transport.h"
#include "worker/rpc_convert.h"

namespace qllm::worker {
namespace {

template <typename T>
void ToBytes(const std::vector<T>& v, std::string* out) {
  out->resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out->data(), v.data(), out->size());
}

template <typename T>
absl::Status FromBytes(const std::string& bytes, const char* what, std::vector<T>* out) {
  if (bytes.size() % sizeof(T) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", bytes.size(), " bytes is not a whole number of values"));
  }
  out->resize(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out->data(), bytes.data(), bytes.size());
  return absl::OkStatus();
}

}  // namespace

void ActivationsToRequest(const Activations& a, v1::RunChunkRequest* r) {
  r->set_session_id(a.session_id);
  r->set_position(a.position);
  r->set_tokens(a.tokens);
  r->set_all_logits(a.all_logits);
  if (!a.ids.empty()) {
    r->mutable_token_ids()->mutable_ids()->Assign(a.ids.begin(), a.ids.end());
  } else {
    ToBytes(a.hidden, r->mutable_hidden());
  }
}

absl::Status ActivationsFromRequest(const v1::RunChunkRequest& r, Activations* a) {
  a->session_id = r.session_id();
  a->position = r.position();
  a->tokens = r.tokens();
  a->all_logits = r.all_logits();
  a->ids.assign(r.token_ids().ids().begin(), r.token_ids().ids().end());
  a->logits.clear();
  a->selections.clear();
  return FromBytes(r.hidden(), "hidden", &a->hidden);
}

void ActivationsToResponse(const Activations& a, v1::RunChunkResponse* r) {
  r->set_position(a.position);
  r->set_tokens(a.tokens);
  if (!a.logits.empty()) {
    ToBytes(a.logits, r->mutable_logits());
  } else {
    ToBytes(a.hidden, r->mutable_hidden());
  }
  for (const ChunkSelection& s : a.selections) SelectionToProto(s, r->add_selections());
}

absl::Status ActivationsFromResponse(const v1::RunChunkResponse& r, Activations* a) {
  a->position = r.position();
  a->ids.clear();
  if (r.has_logits()) {
    a->hidden.clear();
    if (absl::Status s = FromBytes(r.logits(), "logits", &a->logits); !s.ok()) return s;
  } else {
    a->logits.clear();
    if (absl::Status s = FromBytes(r.hidden(), "hidden", &a->hidden); !s.ok()) return s;
  }
  for (const auto& s : r.selections()) a->selections.push_back(SelectionFromProto(s));
  return absl::OkStatus();
}

grpc::Status WorkerService::Register(grpc::ServerContext*, const v1::RegisterRequest*,
                                     v1::RegisterResponse* response) {
  response->set_worker_id(core_->options().worker_id);
  response->set_incarnation(core_->incarnation());
  if (auto spec = core_->shard(); spec.has_value()) {
    *response->mutable_shard() = ShardSpecToProto(*spec);
  }
  response->set_peer_transport(core_->peer_transport_name());
  response->set_backend(core_->backend_name());
  if (absl::Status h = core_->health(); !h.ok()) response->set_unhealthy(std::string(h.message()));
  return grpc::Status::OK;
}

grpc::Status WorkerService::LoadShard(grpc::ServerContext*, const v1::LoadShardRequest* request,
                                      v1::LoadShardResponse* response) {
  auto info = core_->LoadShard(ShardSpecFromProto(*request));
  if (!info.ok()) return ToGrpc(info.status());
  *response->mutable_model() = ModelInfoToProto(info->config, info->fingerprint);
  return grpc::Status::OK;
}

grpc::Status WorkerService::OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* request,
                                        v1::OpenSessionResponse*) {
  auto spec = SessionSpecFromProto(*request, MemoryConfig{});
  if (!spec.ok()) return ToGrpc(spec.status());
  return ToGrpc(core_->OpenSession(*spec));
}

grpc::Status WorkerService::CloseSession(grpc::ServerContext*,
                                         const v1::CloseSessionRequest* request,
                                         v1::CloseSessionResponse*) {
  return ToGrpc(core_->CloseSession(request->session_id()));
}

grpc::Status WorkerService::RunChunks(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::RunChunkResponse, v1::RunChunkRequest>* stream) {
  v1::RunChunkRequest request;
  v1::RunChunkResponse response;
  Activations a;
  while (stream->Read(&request)) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    if (absl::Status s = ActivationsFromRequest(request, &a); !s.ok()) return ToGrpc(s);
    if (absl::Status s = core_->RunChunk(&a); !s.ok()) return ToGrpc(s);
    response.Clear();
    ActivationsToResponse(a, &response);
    if (!stream->Write(response)) return grpc::Status::CANCELLED;
  }
  return grpc::Status::OK;
}

grpc::Status WorkerService::PersistDocument(grpc::ServerContext*,
                                            const v1::PersistDocumentRequest* request,
                                            v1::PersistDocumentResponse*) {
  return ToGrpc(core_->PersistDocument(request->session_id(), request->document_key()));
}

grpc::Status WorkerService::RestoreDocument(grpc::ServerContext*,
                                            const v1::RestoreDocumentRequest* request,
                                            v1::RestoreDocumentResponse* response) {
  auto spec = SessionSpecFromProto(request->session(), MemoryConfig{});
  if (!spec.ok()) return ToGrpc(spec.status());
  auto tokens = core_->RestoreDocument(request->document_key(), *spec);
  if (!tokens.ok()) return ToGrpc(tokens.status());
  response->set_tokens(*tokens);
  return grpc::Status::OK;
}

grpc::Status WorkerService::DeleteDocument(grpc::ServerContext*,
                                           const v1::DeleteWorkerDocumentRequest* request,
                                           v1::DeleteWorkerDocumentResponse*) {
  return ToGrpc(core_->DeleteDocument(request->document_key()));
}

grpc::Status WorkerService::ListDocuments(grpc::ServerContext*,
                                          const v1::ListWorkerDocumentsRequest*,
                                          v1::ListWorkerDocumentsResponse* response) {
  for (uint64_t key : core_->ListDocuments()) response->add_document_keys(key);
  return grpc::Status::OK;
}

grpc::Status WorkerService::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                     v1::WorkerStats* response) {
  const WorkerStatsSnapshot s = core_->GetStats();
  response->set_open_sessions(s.open_sessions);
  response->set_host_bytes(s.host_bytes);
  response->set_disk_bytes(s.disk_bytes);
  response->set_host_hit_rate(s.host_hit_rate);
  response->set_documents(s.documents);
  return grpc::Status::OK;
}

grpc::Status WorkerService::CreateLink(grpc::ServerContext*, const v1::CreateLinkRequest* request,
                                       v1::CreateLinkResponse* response) {
  auto id = core_->CreateLink(request->session_id());
  if (!id.ok()) return ToGrpc(id.status());
  response->set_link_id(*id);
  return grpc::Status::OK;
}

grpc::Status WorkerService::ConnectLink(grpc::ServerContext* context,
                                        const v1::ConnectLinkRequest* request,
                                        v1::ConnectLinkResponse*) {
  LinkRole role;
  switch (request->role()) {
    case v1::ConnectLinkRequest::ROLE_SEND:
      role = LinkRole::kSend;
      break;
    case v1::ConnectLinkRequest::ROLE_RECEIVE:
      role = LinkRole::kReceive;
      break;
    default:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "role must be SEND or RECEIVE");
  }
  // The caller's deadline bounds the wait for the peer; without one, peer_timeout does.
  absl::Time deadline = absl::Now() + core_->options().peer_timeout;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(context->deadline()));
  }
  return ToGrpc(core_->ConnectLink(request->session_id(), request->link_id(), role, deadline));
}

grpc::Status WorkerService::PullActivations(grpc::ServerContext* context,
                                            const v1::PullActivationsRequest* request,
                                            grpc::ServerWriter<v1::ActivationMessage>* writer) {
  if (links_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this worker has no gRPC peer transport (--peer_transport=grpc)");
  }
  return links_->Serve(request->link_id(), context, writer);
}

}  // namespace qllm::worker
