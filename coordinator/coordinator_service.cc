#include "coordinator/coordinator_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/rpc_convert.h"

namespace qllm::coordinator {
namespace {

using worker::ToGrpc;

CallContext MakeCall(grpc::ServerContext* context) {
  CallContext call;
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    call.deadline = absl::FromChrono(deadline);
  }
  call.cancelled = [context] { return context->IsCancelled(); };
  return call;
}

// Forwards progress and text to the client; a failed write means the client is gone, which the
// cancellation probe then reports.
template <typename Response, typename Writer>
class StreamSink final : public AskSink {
 public:
  explicit StreamSink(Writer* writer) : writer_(writer) {}
  void Progress(int64_t done, int64_t total) override {
    Response r;
    r.mutable_progress()->set_tokens_done(done);
    r.mutable_progress()->set_tokens_total(total);
    writer_->Write(r);
  }
  void TextDelta(const std::string& text) override {
    if constexpr (requires(Response x) { x.mutable_text_delta(); }) {
      Response r;
      *r.mutable_text_delta() = text;
      writer_->Write(r);
    }
  }

 private:
  Writer* const writer_;
};

}  // namespace

grpc::Status QllmService::Ask(grpc::ServerContext* context, const v1::AskRequest* request,
                              grpc::ServerWriter<v1::AskResponse>* writer) {
  StreamSink<v1::AskResponse, grpc::ServerWriter<v1::AskResponse>> sink(writer);
  auto result = c_->Ask(*request, MakeCall(context), &sink);
  if (!result.ok()) return ToGrpc(result.status());
  v1::AskResponse r;
  *r.mutable_result() = std::move(*result);
  writer->Write(r);
  return grpc::Status::OK;
}

grpc::Status QllmService::CreateDocument(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CreateDocumentResponse, v1::CreateDocumentRequest>* stream) {
  v1::CreateDocumentRequest request;
  if (!stream->Read(&request)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no messages: send metadata first");
  }
  if (!request.has_metadata()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message must carry metadata");
  }
  const v1::DocumentMetadata metadata = request.metadata();
  if (auto layout = c_->ValidateMetadata(metadata); !layout.ok()) return ToGrpc(layout.status());
  std::string text;
  while (stream->Read(&request)) {
    if (!request.has_text_chunk()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "metadata may only be sent in the first message");
    }
    if (static_cast<int64_t>(text.size() + request.text_chunk().size()) > max_document_bytes_) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("the document exceeds ", max_document_bytes_,
                                       " bytes (--max_document_bytes)"));
    }
    text += request.text_chunk();
  }
  if (context->IsCancelled()) return grpc::Status::CANCELLED;
  using Stream = grpc::ServerReaderWriter<v1::CreateDocumentResponse, v1::CreateDocumentRequest>;
  StreamSink<v1::CreateDocumentResponse, Stream> sink(stream);
  auto doc = c_->CreateDocument(metadata, text, MakeCall(context), &sink);
  if (!doc.ok()) return ToGrpc(doc.status());
  v1::CreateDocumentResponse r;
  *r.mutable_document() = std::move(*doc);
  stream->Write(r);
  return grpc::Status::OK;
}

grpc::Status QllmService::GetDocument(grpc::ServerContext*, const v1::GetDocumentRequest* request,
                                      v1::Document* response) {
  auto doc = c_->GetDocument(request->document_id());
  if (!doc.ok()) return ToGrpc(doc.status());
  *response = std::move(*doc);
  return grpc::Status::OK;
}

grpc::Status QllmService::ListDocuments(grpc::ServerContext*,
                                        const v1::ListDocumentsRequest* request,
                                        v1::ListDocumentsResponse* response) {
  auto list = c_->ListDocuments(*request);
  if (!list.ok()) return ToGrpc(list.status());
  *response = std::move(*list);
  return grpc::Status::OK;
}

grpc::Status QllmService::DeleteDocument(grpc::ServerContext* context,
                                         const v1::DeleteDocumentRequest* request,
                                         v1::DeleteDocumentResponse*) {
  return ToGrpc(c_->DeleteDocument(request->document_id(), MakeCall(context)));
}

grpc::Status AdminService::GetClusterStatus(grpc::ServerContext*,
                                            const v1::GetClusterStatusRequest*,
                                            v1::ClusterStatus* response) {
  *response = c_->GetClusterStatus();
  return grpc::Status::OK;
}

}  // namespace qllm::coordinator
