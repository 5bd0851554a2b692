// Service benchmark (issue 6), two parts, each side by side in one run:
//  1. activation throughput of the gRPC transport on loopback: the coordinator's GrpcChunkStream
//     against an echo worker (same wire format and channel settings as qllm-worker), for chunks
//     of Llama-3-8B activations (hidden 4096) of growing length;
//  2. end-to-end time of the same long inline question in embedded mode (--local_workers=3, one
//     process) and with three qllm-worker processes behind a qllm-coordinator process, the
//     activations relayed by the coordinator or sent worker to worker (grpc peer links).
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/process_env.h"
#include "coordinator/server.h"
#include "coordinator/stage.h"
#include "grpcpp/grpcpp.h"
#include "qllm/v1/worker.grpc.pb.h"
#include "tests/e2e/e2e_util.h"
#include "worker/memory_config.h"
#include "worker/worker_service.h"

ABSL_FLAG(std::string, model_dir, "models/qllm-tiny", "model for the end-to-end part");
ABSL_FLAG(std::string, worker_bin, "", "qllm-worker binary");
ABSL_FLAG(std::string, coordinator_bin, "", "qllm-coordinator binary");
ABSL_FLAG(int32_t, sentences, 1200, "filler sentences of the long document (~11 tokens each)");
ABSL_FLAG(int32_t, repeats, 3, "end-to-end runs per mode (the best is reported)");
ABSL_FLAG(double, transport_seconds, 2.0, "seconds per transport measurement");

namespace qllm {
namespace {

// Echoes every chunk's activations back, as a middle stage would (without the compute).
class EchoWorker final : public v1::Worker::Service {
 public:
  grpc::Status RunChunks(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::RunChunkResponse, v1::RunChunkRequest>* stream) override {
    v1::RunChunkRequest request;
    v1::RunChunkResponse response;
    worker::Activations a;
    while (stream->Read(&request)) {
      if (!worker::ActivationsFromRequest(request, &a).ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad chunk");
      }
      response.Clear();
      worker::ActivationsToResponse(a, &response);
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }
};

void TransportBench() {
  EchoWorker echo;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(worker::kMaxRpcMessageBytes);
  builder.SetMaxSendMessageSize(worker::kMaxRpcMessageBytes);
  builder.RegisterService(&echo);
  auto server = builder.BuildAndStart();
  auto stage = coordinator::NewGrpcStage(absl::StrCat("127.0.0.1:", port));
  std::printf("gRPC transport on loopback (echo stage, hidden 4096 fp32):\n");
  std::printf("%8s %12s %10s %14s %14s\n", "tokens", "chunk MiB", "chunks/s", "GB/s one way",
              "GB/s both");
  for (int tokens : {1, 16, 128, 512, 2048}) {
    auto stream = stage->OpenChunkStream(1, absl::InfiniteFuture());
    QLLM_CHECK(stream.ok());
    worker::Activations a;
    a.session_id = 1;
    a.tokens = tokens;
    const std::vector<float> payload(static_cast<size_t>(tokens) * 4096, 0.5f);
    int64_t chunks = 0;
    const absl::Time start = absl::Now();
    const absl::Duration budget = absl::Seconds(absl::GetFlag(FLAGS_transport_seconds));
    while (absl::Now() - start < budget) {
      a.hidden = payload;
      a.selections.clear();
      QLLM_CHECK((*stream)->Run(&a).ok());
      QLLM_CHECK(a.hidden.size() == payload.size());
      ++chunks;
    }
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    const double bytes = static_cast<double>(payload.size() * sizeof(float));
    std::printf("%8d %12.3f %10.1f %14.3f %14.3f\n", tokens, bytes / (1 << 20), chunks / secs,
                bytes * chunks / secs / 1e9, 2 * bytes * chunks / secs / 1e9);
  }
  server->Shutdown();
}

double TimeAsk(const std::string& address, const v1::AskRequest& request, v1::AskResult* result) {
  e2e::Client client(address);
  const absl::Time start = absl::Now();
  const e2e::AskOutcome out = client.Ask(request);
  QLLM_CHECK(out.status.ok()) << out.status.error_message();
  *result = out.result;
  return absl::ToDoubleSeconds(absl::Now() - start);
}

void EndToEndBench() {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string text =
      e2e::MakeHaystack(absl::GetFlag(FLAGS_sentences), 42, "The pass key is 90210. Remember it.");
  v1::AskRequest request =
      e2e::MakeAsk("What is the pass key?", text, v1::MemoryParams::MODE_QLLM, 8);
  auto memory = worker::LoadMemoryConfig(model_dir + "/memory_config.yaml");
  QLLM_CHECK(memory.ok()) << memory.status();

  coordinator::ServerOptions options;
  options.coordinator.model_dir = model_dir;
  options.coordinator.default_memory = *memory;
  options.local_workers = 3;
  auto embedded = coordinator::Server::Start(options);
  QLLM_CHECK(embedded.ok()) << embedded.status();
  const std::string embedded_address = absl::StrCat("127.0.0.1:", (*embedded)->port());

  const std::string dir =
      std::filesystem::temp_directory_path() / absl::StrCat("qllm_service_bench_", getpid());
  std::filesystem::create_directories(dir);
  std::vector<std::unique_ptr<e2e::Process>> procs;
  // Three worker processes and a coordinator process; returns the coordinator's address.
  auto start_cluster = [&](const std::string& name, std::vector<std::string> worker_flags,
                           std::vector<std::string> coordinator_flags) {
    std::vector<std::string> workers;
    for (int i = 0; i < 3; ++i) {
      const std::string pf = absl::StrCat(dir, "/", name, "-w", i, ".port");
      std::vector<std::string> argv = {absl::GetFlag(FLAGS_worker_bin), "--listen=127.0.0.1:0",
                                       "--port_file=" + pf};
      argv.insert(argv.end(), worker_flags.begin(), worker_flags.end());
      auto p = e2e::Process::Start(argv, absl::StrCat(dir, "/", name, "-w", i, ".log"));
      QLLM_CHECK(p.ok());
      procs.push_back(std::move(*p));
      auto port = e2e::WaitForPortFile(pf, absl::Seconds(30));
      QLLM_CHECK(port.ok());
      workers.push_back(absl::StrCat("127.0.0.1:", *port));
    }
    const std::string cpf = absl::StrCat(dir, "/", name, "-c.port");
    std::vector<std::string> argv = {absl::GetFlag(FLAGS_coordinator_bin), "--listen=127.0.0.1:0",
                                     "--port_file=" + cpf, "--model_dir=" + model_dir,
                                     "--workers=" + absl::StrJoin(workers, ",")};
    argv.insert(argv.end(), coordinator_flags.begin(), coordinator_flags.end());
    auto c = e2e::Process::Start(argv, absl::StrCat(dir, "/", name, "-c.log"));
    QLLM_CHECK(c.ok());
    procs.push_back(std::move(*c));
    auto cport = e2e::WaitForPortFile(cpf, absl::Seconds(30));
    QLLM_CHECK(cport.ok());
    return absl::StrCat("127.0.0.1:", *cport);
  };
  const std::string relayed = start_cluster("relay", {}, {});
  const std::string linked =
      start_cluster("peer", {"--peer_transport=grpc"}, {"--activation_transport=peer"});

  v1::AskResult a, b, l;
  // Warm-up: loads the shards.
  const v1::AskRequest warm = e2e::MakeAsk("q?", "warm up", v1::MemoryParams::MODE_QLLM, 1);
  TimeAsk(embedded_address, warm, &a);
  TimeAsk(relayed, warm, &b);
  TimeAsk(linked, warm, &l);
  double best_embedded = 1e30, best_relayed = 1e30, best_linked = 1e30;
  for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {  // Interleaved: same noise for all.
    best_embedded = std::min(best_embedded, TimeAsk(embedded_address, request, &a));
    best_relayed = std::min(best_relayed, TimeAsk(relayed, request, &b));
    best_linked = std::min(best_linked, TimeAsk(linked, request, &l));
  }
  QLLM_CHECK(a.token_ids_size() == b.token_ids_size());
  const int64_t prompt = a.usage().prompt_tokens();
  std::printf(
      "\nend-to-end, one long inline question (%lld prompt tokens, qllm mode, %s), best "
      "of %d:\n",
      static_cast<long long>(prompt), model_dir.c_str(), absl::GetFlag(FLAGS_repeats));
  std::printf("%-47s %10s %14s\n", "setup", "seconds", "prompt tok/s");
  std::printf("%-47s %10.2f %14.0f\n", "embedded (--local_workers=3)", best_embedded,
              prompt / best_embedded);
  std::printf("%-47s %10.2f %14.0f\n", "3 worker processes, relayed by the coordinator",
              best_relayed, prompt / best_relayed);
  std::printf("%-47s %10.2f %14.0f\n", "3 worker processes, linked (grpc peer links)", best_linked,
              prompt / best_linked);
  std::printf("ratio relayed / embedded: %.2f, linked / relayed: %.2f (answers identical: %s)\n",
              best_relayed / best_embedded, best_linked / best_relayed,
              a.text() == b.text() && b.text() == l.text() ? "yes" : "NO");
  procs.clear();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qllm

int main(int argc, char** argv) {
  qllm::EnsurePassiveOpenMpWait(argv);
  absl::ParseCommandLine(argc, argv);
  qllm::TransportBench();
  qllm::EndToEndBench();
  return 0;
}
