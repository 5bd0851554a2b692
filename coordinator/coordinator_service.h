// The gRPC faces of the coordinator: qllm.v1.QLLM (clients) and qllm.v1.Admin (qllmctl), thin
// adapters over Coordinator (which validates every request).
#ifndef QLLM_COORDINATOR_COORDINATOR_SERVICE_H_
#define QLLM_COORDINATOR_COORDINATOR_SERVICE_H_

#include <cstdint>

#include "coordinator/coordinator.h"
#include "qllm/v1/admin.grpc.pb.h"
#include "qllm/v1/qllm.grpc.pb.h"

namespace qllm::coordinator {

// Largest client message accepted (an inline document travels in one AskRequest; larger
// documents go through CreateDocument in pieces). Larger messages get RESOURCE_EXHAUSTED from
// gRPC itself.
inline constexpr int kMaxClientMessageBytes = 16 << 20;

class QllmService final : public v1::QLLM::Service {
 public:
  // `coordinator` must outlive the service. Documents may total `max_document_bytes` of text.
  QllmService(Coordinator* coordinator, int64_t max_document_bytes)
      : c_(coordinator), max_document_bytes_(max_document_bytes) {}

  grpc::Status Ask(grpc::ServerContext* context, const v1::AskRequest* request,
                   grpc::ServerWriter<v1::AskResponse>* writer) override;
  grpc::Status CreateDocument(grpc::ServerContext* context,
                              grpc::ServerReaderWriter<v1::CreateDocumentResponse,
                                                       v1::CreateDocumentRequest>* stream) override;
  grpc::Status GetDocument(grpc::ServerContext* context, const v1::GetDocumentRequest* request,
                           v1::Document* response) override;
  grpc::Status ListDocuments(grpc::ServerContext* context, const v1::ListDocumentsRequest* request,
                             v1::ListDocumentsResponse* response) override;
  grpc::Status DeleteDocument(grpc::ServerContext* context,
                              const v1::DeleteDocumentRequest* request,
                              v1::DeleteDocumentResponse* response) override;

 private:
  Coordinator* const c_;
  const int64_t max_document_bytes_;
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(Coordinator* coordinator) : c_(coordinator) {}
  grpc::Status GetClusterStatus(grpc::ServerContext* context,
                                const v1::GetClusterStatusRequest* request,
                                v1::ClusterStatus* response) override;

 private:
  Coordinator* const c_;
};

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_COORDINATOR_SERVICE_H_
