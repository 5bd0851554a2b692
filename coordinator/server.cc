#include "coordinator/server.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "grpcpp/health_check_service_interface.h"

namespace qllm::coordinator {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  if (options.workers.empty() == (options.local_workers <= 0)) {
    return absl::InvalidArgumentError("give either --workers or --local_workers (> 0)");
  }
  std::unique_ptr<Server> server(new Server());
  std::vector<std::unique_ptr<Stage>> stages;
  const std::string data_dir = options.coordinator.data_dir;
  std::error_code ec;
  if (!data_dir.empty()) std::filesystem::create_directories(data_dir, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot create ", data_dir, ": ", ec.message()));
  // Embedded workers link in memory when the coordinator links stages.
  std::shared_ptr<worker::PeerTransport> local_links;
  if (options.coordinator.activation_transport != ActivationTransport::kRelay) {
    local_links = worker::NewInProcessPeerTransport();
  }
  for (int32_t i = 0; i < options.local_workers; ++i) {
    worker::WorkerOptions w;
    w.peer_transport = local_links;
    w.worker_id = absl::StrCat("local-", i);
    if (!data_dir.empty()) w.store_dir = absl::StrCat(data_dir, "/worker-", i);
    w.host_cache_bytes = options.local_host_cache_bytes;
    w.backend_factory = options.local_backend_factory;
    server->local_.push_back(std::make_unique<worker::WorkerCore>(w));
    const int cores = std::max(1, omp_get_num_procs());
    stages.push_back(NewInProcessStage(server->local_.back().get(), i,
                                       std::max(1, cores / options.local_workers)));
  }
  for (const std::string& address : options.workers) stages.push_back(NewGrpcStage(address));
  if (!data_dir.empty()) options.coordinator.data_dir = data_dir + "/catalogue";
  ASSIGN_OR_RETURN(server->coordinator_,
                   Coordinator::Create(options.coordinator, std::move(stages)));
  server->qllm_service_ =
      std::make_unique<QllmService>(server->coordinator_.get(), options.max_document_bytes);
  server->admin_service_ = std::make_unique<AdminService>(server->coordinator_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxClientMessageBytes);
  builder.RegisterService(server->qllm_service_.get());
  builder.RegisterService(server->admin_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  server->health_ = std::thread([s = server.get()] { s->HealthLoop(); });
  return server;
}

void Server::HealthLoop() {
  bool serving = true;
  while (true) {
    const bool now = coordinator_->CheckStages(absl::Now() + absl::Seconds(1)).ok();
    if (now != serving) {
      serving = now;
      server_->GetHealthCheckService()->SetServingStatus(serving);
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
    if (stopping_) return;
  }
}

void Server::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (health_.joinable()) health_.join();
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(absl::ToChronoTime(absl::Now() + drain));
  }
}

Server::~Server() { Shutdown(); }

}  // namespace qllm::coordinator
