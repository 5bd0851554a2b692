// A running coordinator: the engine, its stages (in-process WorkerCores in embedded mode, or
// gRPC stubs of qllm-worker processes) and the gRPC server with the client, admin and health
// services. qllm-coordinator is a thin main() around this; tests start it in-process.
#ifndef QLLM_COORDINATOR_SERVER_H_
#define QLLM_COORDINATOR_SERVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_service.h"
#include "grpcpp/grpcpp.h"
#include "worker/shard_backend.h"
#include "worker/worker_core.h"

namespace qllm::coordinator {

struct ServerOptions {
  CoordinatorOptions coordinator;
  // host:port of each qllm-worker, in pipeline order. Exclusive with local_workers.
  std::vector<std::string> workers;
  // Embedded mode: this many WorkerCores in this process (their stores under data_dir).
  int32_t local_workers = 0;
  size_t local_host_cache_bytes = size_t{1} << 30;
  // Embedded mode: what the workers run their layers on (worker/shard_backend.h); null: the
  // CPU engine.
  worker::ShardBackendFactory local_backend_factory;
  // Where to serve; port 0 picks a free one (see port()).
  std::string listen = "127.0.0.1:0";
  int64_t max_document_bytes = int64_t{256} << 20;
};

class Server {
 public:
  // Errors: INVALID_ARGUMENT for inconsistent options, UNAVAILABLE when the port cannot be bound,
  // the coordinator's errors.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  ~Server();

  int port() const { return port_; }
  Coordinator* coordinator() { return coordinator_.get(); }
  void Wait() { server_->Wait(); }
  // Health NOT_SERVING, stop accepting, give in-flight calls `drain` to finish.
  void Shutdown(absl::Duration drain = absl::Seconds(5));

 private:
  Server() = default;
  // Polls every stage once a second: grpc.health.v1 says SERVING only while all answer.
  void HealthLoop();

  std::vector<std::unique_ptr<worker::WorkerCore>> local_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<QllmService> qllm_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread health_;
};

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_SERVER_H_
