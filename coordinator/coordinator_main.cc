// qllm-coordinator: the service clients call. Shards the model's layers over qllm-worker
// processes (--workers) or runs everything in this process (--local_workers=N).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/process_env.h"
#include "coordinator/server.h"
#include "worker/memory_config.h"
#if defined(QLLM_HAVE_CUDA)
#include "cuda/device.h"
#include "cuda/device_shard.h"
#endif

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "host:port to serve on (port 0: any)");
ABSL_FLAG(std::string, port_file, "", "write the bound port to this file once serving");
ABSL_FLAG(std::string, model_dir, "", "checkpoint directory (same path on every worker)");
ABSL_FLAG(std::vector<std::string>, workers, {},
          "comma-separated host:port of the qllm-worker processes, in pipeline order");
ABSL_FLAG(int32_t, local_workers, 0, "embedded mode: run this many workers in this process");
ABSL_FLAG(std::string, data_dir, "",
          "document catalogue (and, embedded, the workers' memory stores); empty: no documents");
ABSL_FLAG(std::string, memory_config, "",
          "YAML memory config (reference format) for requests that leave memory fields unset; "
          "default: <model_dir>/memory_config.yaml if present, else the built-in qllm defaults");
ABSL_FLAG(std::string, chat_template, "", "chat template name (default: picked from tokenizer)");
ABSL_FLAG(int32_t, max_sessions, 8, "requests running at once");
ABSL_FLAG(int64_t, max_prompt_tokens, 2'000'000, "largest prompt or document, in tokens");
ABSL_FLAG(int64_t, max_document_bytes, int64_t{256} << 20, "largest CreateDocument text");
ABSL_FLAG(int64_t, chunk_tokens, 512, "prompt tokens per pipeline chunk");
ABSL_FLAG(int32_t, max_inflight_chunks, 4, "pipeline chunks in flight at once");
ABSL_FLAG(int64_t, host_cache_mb, 1024, "embedded workers' host-memory tier, MiB");
ABSL_FLAG(std::string, local_backend, "cpu",
          "embedded workers' backend: cpu, or cuda (every embedded worker on GPU 0)");
ABSL_FLAG(std::string, activation_transport, "relay",
          "between stages: relay (through this process), peer (worker to worker over the "
          "workers' --peer_transport, e.g. NCCL; embedded workers link in memory) or auto "
          "(peer when every worker has the same transport)");

namespace {
// Time in-flight requests get to finish after SIGTERM / SIGINT (durable state is synced at
// every commit, so a harder stop loses nothing either).
constexpr absl::Duration kDrainTime = absl::Seconds(10);
}  // namespace

int main(int argc, char** argv) {
  qllm::EnsurePassiveOpenMpWait(argv);
  absl::SetProgramUsageMessage(
      "qllm-coordinator --model_dir=DIR (--workers=H:P,H:P,... | --local_workers=N) "
      "[--data_dir=DIR]");
  absl::ParseCommandLine(argc, argv);
  qllm::BlockTerminationSignals();
  qllm::coordinator::ServerOptions options;
  auto& c = options.coordinator;
  c.model_dir = absl::GetFlag(FLAGS_model_dir);
  if (c.model_dir.empty()) {
    QLLM_LOG(ERROR) << "--model_dir is required";
    return 2;
  }
  std::string memory_path = absl::GetFlag(FLAGS_memory_config);
  if (memory_path.empty() && std::filesystem::exists(c.model_dir + "/memory_config.yaml")) {
    memory_path = c.model_dir + "/memory_config.yaml";
  }
  if (!memory_path.empty()) {
    auto memory = qllm::worker::LoadMemoryConfig(memory_path);
    if (!memory.ok()) {
      QLLM_LOG(ERROR) << memory_path << ": " << memory.status();
      return 2;
    }
    c.default_memory = *memory;
  } else {
    c.default_memory.mode = qllm::worker::AttentionMode::kQllm;
  }
  c.chat_template = absl::GetFlag(FLAGS_chat_template);
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  c.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  c.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  c.chunk_tokens = absl::GetFlag(FLAGS_chunk_tokens);
  c.max_inflight_chunks = absl::GetFlag(FLAGS_max_inflight_chunks);
  auto transport =
      qllm::coordinator::ParseActivationTransport(absl::GetFlag(FLAGS_activation_transport));
  if (!transport.ok()) {
    QLLM_LOG(ERROR) << "--activation_transport: " << transport.status();
    return 2;
  }
  c.activation_transport = *transport;
  options.workers = absl::GetFlag(FLAGS_workers);
  options.local_workers = absl::GetFlag(FLAGS_local_workers);
  options.local_host_cache_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_host_cache_mb)) << 20;
  if (const std::string b = absl::GetFlag(FLAGS_local_backend); b == "cuda") {
#if defined(QLLM_HAVE_CUDA)
    if (qllm::cuda::VisibleDeviceCount() == 0) {
      QLLM_LOG(ERROR) << "--local_backend=cuda: no CUDA device is visible to this process";
      return 2;
    }
    options.local_backend_factory = [](qllm::model::ModelWeights weights) {
      return qllm::cuda::NewCudaShardBackend(weights);
    };
#else
    QLLM_LOG(ERROR) << "--local_backend=cuda needs a build with CUDA (nvcc found at configure)";
    return 2;
#endif
  } else if (b != "cpu") {
    QLLM_LOG(ERROR) << "unknown --local_backend \"" << b << "\" (cpu or cuda)";
    return 2;
  }
  options.listen = absl::GetFlag(FLAGS_listen);
  options.max_document_bytes = absl::GetFlag(FLAGS_max_document_bytes);
  auto server = qllm::coordinator::Server::Start(options);
  if (!server.ok()) {
    QLLM_LOG(ERROR) << "qllm-coordinator: " << server.status();
    return 1;
  }
  qllm::coordinator::Server* running = server->get();
  std::thread([running] {
    const int sig = qllm::WaitForTerminationSignal();
    QLLM_LOG(INFO) << "signal " << sig << ": draining for up to " << kDrainTime;
    running->Shutdown(kDrainTime);
  }).detach();
  if (const std::string f = absl::GetFlag(FLAGS_port_file); !f.empty()) {
    const std::string tmp = f + ".tmp";
    std::ofstream(tmp) << (*server)->port() << "\n";
    std::rename(tmp.c_str(), f.c_str());
  }
  QLLM_LOG(INFO) << "qllm-coordinator serving on port " << (*server)->port() << " with "
                 << (options.local_workers > 0 ? options.local_workers
                                               : static_cast<int32_t>(options.workers.size()))
                 << (options.local_workers > 0 ? " embedded" : " remote") << " workers";
  (*server)->Wait();
  return 0;
}
