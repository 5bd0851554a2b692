// qllm-worker: serves one layer shard of the model over qllm.v1.Worker (and grpc.health.v1).
// The coordinator tells it which layers to load.
#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/process_env.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "worker/grpc_peer_transport.h"
#include "worker/worker_service.h"
#if defined(QLLM_HAVE_CUDA)
#include "cuda/device.h"
#include "cuda/device_shard.h"
#include "cuda/nccl_channel.h"
#endif

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on; port 0 picks a free port (see --port_file)");
ABSL_FLAG(std::string, port_file, "", "write the bound port to this file once serving");
ABSL_FLAG(std::string, worker_id, "", "id reported to the coordinator (default: the address)");
ABSL_FLAG(std::string, store_dir, "",
          "directory of the worker's memory store (RocksDB); required for documents");
ABSL_FLAG(int64_t, host_cache_mb, 1024, "host-memory tier of the memory store, MiB");
ABSL_FLAG(int32_t, max_sessions, 256, "sessions open at once");
ABSL_FLAG(int32_t, session_idle_timeout_s, 600, "close sessions idle this long");
ABSL_FLAG(std::string, peer_transport, "",
          "activations straight to the next stage's worker: \"nccl\" (CUDA builds; GPU "
          "--cuda_device), \"grpc\" (CPU workers; peers dial --advertise), or empty: the "
          "coordinator relays them");
ABSL_FLAG(std::string, advertise, "",
          "host:port at which other workers reach this one (--peer_transport=grpc); default: "
          "the --listen host with the bound port, which must then not be a wildcard");
ABSL_FLAG(std::string, backend, "cpu",
          "what runs the layers: \"cpu\" (the CPU engine) or \"cuda\" (the GPU --cuda_device); "
          "documents saved by one restore on the other");
ABSL_FLAG(int32_t, cuda_device, 0, "the GPU of --backend=cuda and --peer_transport=nccl");
ABSL_FLAG(int64_t, cuda_max_tokens, int64_t{1} << 17,
          "--backend=cuda, full attention: most tokens a session may hold");
ABSL_FLAG(int64_t, cuda_max_blocks, int64_t{1} << 17,
          "--backend=cuda, memory modes: most memory blocks per layer and session (a session "
          "holds at most this many * block_size tokens; their representative vectors are "
          "allocated on the device as the document grows)");
ABSL_FLAG(int64_t, cuda_max_chunk, 512,
          "--backend=cuda: most tokens run through the layers at once (at least the memory "
          "config's exc_block_size)");
ABSL_FLAG(int32_t, peer_timeout_s, 300,
          "how long a chunk waits for its peer's activations (or for the peer to take them)");

namespace {

// Time in-flight RPCs get to finish after SIGTERM / SIGINT. Durable state is committed with
// synced writes, so a harder stop loses nothing either.
constexpr auto kDrainTime = std::chrono::seconds(10);

}  // namespace

int main(int argc, char** argv) {
  qllm::EnsurePassiveOpenMpWait(argv);
  absl::SetProgramUsageMessage("qllm-worker --listen=HOST:PORT --store_dir=DIR");
  absl::ParseCommandLine(argc, argv);
  qllm::BlockTerminationSignals();
  qllm::worker::WorkerOptions options;
  options.worker_id = absl::GetFlag(FLAGS_worker_id);
  options.store_dir = absl::GetFlag(FLAGS_store_dir);
  options.host_cache_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_host_cache_mb)) << 20;
  options.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.session_idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_session_idle_timeout_s));
  if (options.worker_id.empty()) options.worker_id = absl::GetFlag(FLAGS_listen);
  options.peer_timeout = absl::Seconds(absl::GetFlag(FLAGS_peer_timeout_s));
  if (const std::string b = absl::GetFlag(FLAGS_backend); b == "cuda") {
#if defined(QLLM_HAVE_CUDA)
    if (qllm::cuda::VisibleDeviceCount() == 0) {
      QLLM_LOG(ERROR) << "--backend=cuda: no CUDA device is visible to this process";
      return 2;
    }
    qllm::cuda::CudaShardOptions cuda;
    cuda.device = absl::GetFlag(FLAGS_cuda_device);
    cuda.max_tokens = absl::GetFlag(FLAGS_cuda_max_tokens);
    cuda.max_blocks = absl::GetFlag(FLAGS_cuda_max_blocks);
    cuda.max_chunk = absl::GetFlag(FLAGS_cuda_max_chunk);
    options.backend_factory = [cuda](qllm::model::ModelWeights weights) {
      return qllm::cuda::NewCudaShardBackend(weights, cuda);
    };
#else
    QLLM_LOG(ERROR) << "--backend=cuda needs a build with CUDA (nvcc found at configure)";
    return 2;
#endif
  } else if (b != "cpu") {
    QLLM_LOG(ERROR) << "unknown --backend \"" << b << "\" (cpu or cuda)";
    return 2;
  }
  std::shared_ptr<qllm::worker::GrpcPeerTransport> grpc_links;
  if (const std::string t = absl::GetFlag(FLAGS_peer_transport); t == "nccl") {
#if defined(QLLM_HAVE_CUDA)
    // Both backends hand host memory to the links: staged through the GPU.
    options.peer_transport =
        qllm::cuda::NewNcclPeerTransport(absl::GetFlag(FLAGS_cuda_device), /*host_memory=*/true);
#else
    QLLM_LOG(ERROR) << "--peer_transport=nccl needs a build with CUDA (nvcc found at configure)";
    return 2;
#endif
  } else if (t == "grpc") {
    grpc_links = std::make_shared<qllm::worker::GrpcPeerTransport>();
    options.peer_transport = grpc_links;
  } else if (!t.empty()) {
    QLLM_LOG(ERROR) << "unknown --peer_transport \"" << t << "\" (nccl, grpc or empty)";
    return 2;
  }
  // A lost device turns the worker's health to NOT_SERVING (the server exists by then: the
  // engine runs only inside RPCs).
  std::atomic<grpc::Server*> serving{nullptr};
  options.on_unhealthy = [&serving](const absl::Status&) {
    if (grpc::Server* s = serving.load(); s != nullptr) {
      s->GetHealthCheckService()->SetServingStatus(false);
    }
  };
  qllm::worker::WorkerCore core(options);
  qllm::worker::WorkerService service(&core, grpc_links.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(qllm::worker::kMaxRpcMessageBytes);
  builder.SetMaxSendMessageSize(qllm::worker::kMaxRpcMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    QLLM_LOG(ERROR) << "cannot listen on " << absl::GetFlag(FLAGS_listen);
    return 1;
  }
  serving.store(server.get());
  if (grpc_links != nullptr) {
    std::string advertise = absl::GetFlag(FLAGS_advertise);
    if (advertise.empty()) {
      const std::string listen = absl::GetFlag(FLAGS_listen);
      const std::string host = listen.substr(0, listen.rfind(':'));
      if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
        QLLM_LOG(ERROR) << "--peer_transport=grpc with a wildcard --listen needs --advertise";
        return 2;
      }
      advertise = absl::StrCat(host, ":", port);
    }
    grpc_links->set_advertise(advertise);
  }
  std::thread([&server, &core] {
    const int sig = qllm::WaitForTerminationSignal();
    QLLM_LOG(INFO) << "signal " << sig << ": draining for up to " << kDrainTime.count() << " s";
    server->GetHealthCheckService()->SetServingStatus(false);
    // Chunks blocked on a peer link would outlast the drain: abort the links at its end.
    core.AbortLinksAt(absl::Now() + absl::FromChrono(kDrainTime));
    server->Shutdown(std::chrono::system_clock::now() + kDrainTime);
  }).detach();
  if (const std::string f = absl::GetFlag(FLAGS_port_file); !f.empty()) {
    const std::string tmp = f + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), f.c_str());
  }
  QLLM_LOG(INFO) << "qllm-worker " << options.worker_id << " serving on port " << port;
  server->Wait();
  return 0;
}
