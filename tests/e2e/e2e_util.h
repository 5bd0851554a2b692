// Helpers of the end-to-end tests: real qllm-worker / qllm-coordinator processes on loopback
// and a small client over the generated stubs.
#ifndef QLLM_TESTS_E2E_E2E_UTIL_H_
#define QLLM_TESTS_E2E_E2E_UTIL_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "qllm/v1/admin.grpc.pb.h"
#include "qllm/v1/qllm.grpc.pb.h"

namespace qllm::e2e {

// A child process; killed with SIGKILL when destroyed.
class Process {
 public:
  // Starts `argv` with stdout and stderr appended to `log_path`.
  static absl::StatusOr<std::unique_ptr<Process>> Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path);
  ~Process();
  void Kill(int signal);
  // Waits for exit; returns the raw wait status.
  int Wait();
  bool running();

 private:
  explicit Process(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
};

// Reads the port a process wrote with --port_file (waits up to `timeout`).
absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout);

// grpc.health.v1.Health/Check for the whole server: true when SERVING.
bool HealthServing(const std::string& address);

struct AskOutcome {
  grpc::Status status;
  v1::AskResult result;
  std::vector<v1::Progress> progress;
  std::string streamed_text;
};

class Client {
 public:
  explicit Client(const std::string& address);
  // Runs Ask to the end. `deadline` zero means none. `on_progress` sees each progress message;
  // returning false cancels the call.
  AskOutcome Ask(const v1::AskRequest& request, absl::Duration deadline = absl::ZeroDuration(),
                 const std::function<bool(const v1::Progress&)>& on_progress = nullptr);
  // Streams `text` in `piece_bytes` pieces.
  grpc::Status CreateDocument(const v1::DocumentMetadata& metadata, const std::string& text,
                              v1::Document* out, size_t piece_bytes = 4096,
                              absl::Duration deadline = absl::ZeroDuration());
  // Sends raw CreateDocument messages.
  grpc::Status CreateDocumentRaw(const std::vector<v1::CreateDocumentRequest>& messages);
  grpc::Status GetDocument(const std::string& id, v1::Document* out);
  grpc::Status ListDocuments(const v1::ListDocumentsRequest& request,
                             v1::ListDocumentsResponse* out);
  grpc::Status DeleteDocument(const std::string& id);
  grpc::Status ClusterStatus(v1::ClusterStatus* out);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::QLLM::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// An ask with greedy decoding about `text` or a stored document.
v1::AskRequest MakeAsk(const std::string& question, const std::string& inline_text,
                       v1::MemoryParams::Mode mode, int max_tokens);

// A deterministic document of about `sentences` filler sentences with a pass key in it.
std::string MakeHaystack(int sentences, int seed, const std::string& needle);

}  // namespace qllm::e2e

#endif  // QLLM_TESTS_E2E_E2E_UTIL_H_
