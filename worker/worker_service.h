// The gRPC face of a worker: qllm.v1.Worker over a WorkerCore. Each RunChunks stream carries the
// chunks of one session in order, so one stream per session and stage is the activation
// transport between the coordinator and this stage.
#ifndef QLLM_WORKER_WORKER_SERVICE_H_
#define QLLM_WORKER_WORKER_SERVICE_H_

#include "qllm/v1/worker.grpc.pb.h"
#include "worker/worker_core.h"

namespace qllm::worker {
class GrpcPeerTransport;
}  // namespace qllm::worker

namespace qllm::worker {

// Largest message the worker and its clients accept (activations of a long chunk).
inline constexpr int kMaxRpcMessageBytes = 512 << 20;

class WorkerService final : public v1::Worker::Service {
 public:
  // `core` must outlive the service, and so must `links` (the core's gRPC peer transport,
  // whose streams this service serves; null when the core has another or none).
  explicit WorkerService(WorkerCore* core, GrpcPeerTransport* links = nullptr)
      : core_(core), links_(links) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response) override;
  grpc::Status LoadShard(grpc::ServerContext* context, const v1::LoadShardRequest* request,
                         v1::LoadShardResponse* response) override;
  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;
  grpc::Status RunChunks(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::RunChunkResponse, v1::RunChunkRequest>* stream) override;
  grpc::Status PersistDocument(grpc::ServerContext* context,
                               const v1::PersistDocumentRequest* request,
                               v1::PersistDocumentResponse* response) override;
  grpc::Status RestoreDocument(grpc::ServerContext* context,
                               const v1::RestoreDocumentRequest* request,
                               v1::RestoreDocumentResponse* response) override;
  grpc::Status DeleteDocument(grpc::ServerContext* context,
                              const v1::DeleteWorkerDocumentRequest* request,
                              v1::DeleteWorkerDocumentResponse* response) override;
  grpc::Status ListDocuments(grpc::ServerContext* context,
                             const v1::ListWorkerDocumentsRequest* request,
                             v1::ListWorkerDocumentsResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::WorkerStats* response) override;
  grpc::Status CreateLink(grpc::ServerContext* context, const v1::CreateLinkRequest* request,
                          v1::CreateLinkResponse* response) override;
  grpc::Status ConnectLink(grpc::ServerContext* context, const v1::ConnectLinkRequest* request,
                           v1::ConnectLinkResponse* response) override;
  grpc::Status PullActivations(grpc::ServerContext* context,
                               const v1::PullActivationsRequest* request,
                               grpc::ServerWriter<v1::ActivationMessage>* writer) override;

 private:
  WorkerCore* const core_;
  GrpcPeerTransport* const links_;
};

// Wire forms of one chunk (shared with the coordinator's gRPC transport).
void ActivationsToRequest(const Activations& a, v1::RunChunkRequest* r);
absl::Status ActivationsFromRequest(const v1::RunChunkRequest& r, Activations* a);
void ActivationsToResponse(const Activations& a, v1::RunChunkResponse* r);
absl::Status ActivationsFromResponse(const v1::RunChunkResponse& r, Activations* a);

}  // namespace qllm::worker

#endif  // QLLM_WORKER_WORKER_SERVICE_H_
