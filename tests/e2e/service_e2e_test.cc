// End-to-end tests of the service with real processes on loopback: one qllm-coordinator and
// three qllm-worker processes (the model's layers split three ways), checked against the
// single-process engine, through restarts, worker failures and a table of bad requests.
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/catalogue.h"
#include "coordinator/generator.h"
#include "coordinator/local_pipeline.h"
#include "coordinator/server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "worker/memory_config.h"
#include "worker/model_shard.h"

namespace qllm::e2e {
namespace {

using ::testing::HasSubstr;
using Mode = v1::MemoryParams::Mode;

constexpr char kQuestion[] = "What is the pass key?";

std::string ModelDir() { return testing::SourceDir() + "/models/qllm-tiny"; }

// Polls `condition` for up to 10 s.
bool Eventually(const std::function<bool()>& condition) {
  for (int i = 0; i < 100; ++i) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

// One coordinator and three workers, each a process; restartable on the same ports and dirs.
class Cluster {
 public:
  Cluster(std::string dir, std::vector<std::string> coordinator_flags,
          std::vector<std::string> worker_flags = {})
      : dir_(std::move(dir)),
        flags_(std::move(coordinator_flags)),
        worker_flags_(std::move(worker_flags)) {}

  void Start() {
    for (int i = 0; i < 3; ++i) StartWorker(i);
    StartCoordinator();
  }
  void StartWorker(int i) {
    if (worker_ports_.size() <= static_cast<size_t>(i)) worker_ports_.resize(i + 1, 0);
    const std::string port_file = absl::StrCat(dir_, "/worker", i, ".port");
    std::filesystem::remove(port_file);
    std::vector<std::string> argv = {QLLM_WORKER_BIN,
                                     absl::StrCat("--listen=127.0.0.1:", worker_ports_[i]),
                                     "--port_file=" + port_file, absl::StrCat("--worker_id=w", i),
                                     absl::StrCat("--store_dir=", dir_, "/store", i)};
    argv.insert(argv.end(), worker_flags_.begin(), worker_flags_.end());
    auto p = Process::Start(argv, absl::StrCat(dir_, "/worker", i, ".log"));
    ASSERT_OK(p.status());
    if (workers_.size() <= static_cast<size_t>(i)) workers_.resize(i + 1);
    workers_[i] = std::move(*p);
    ASSERT_OK_AND_ASSIGN(worker_ports_[i], WaitForPortFile(port_file, absl::Seconds(30)));
  }
  void StartCoordinator() {
    const std::string port_file = dir_ + "/coordinator.port";
    std::filesystem::remove(port_file);
    std::vector<std::string> workers;
    for (int port : worker_ports_) workers.push_back(absl::StrCat("127.0.0.1:", port));
    std::vector<std::string> argv = {QLLM_COORDINATOR_BIN,
                                     absl::StrCat("--listen=127.0.0.1:", coordinator_port_),
                                     "--port_file=" + port_file,
                                     "--model_dir=" + ModelDir(),
                                     "--data_dir=" + dir_ + "/coordinator",
                                     "--workers=" + absl::StrJoin(workers, ",")};
    argv.insert(argv.end(), flags_.begin(), flags_.end());
    auto p = Process::Start(argv, dir_ + "/coordinator.log");
    ASSERT_OK(p.status());
    coordinator_ = std::move(*p);
    ASSERT_OK_AND_ASSIGN(coordinator_port_, WaitForPortFile(port_file, absl::Seconds(30)));
  }
  void KillAll() {
    coordinator_->Kill(SIGKILL);
    coordinator_->Wait();
    for (auto& w : workers_) {
      w->Kill(SIGKILL);
      w->Wait();
    }
  }
  // SIGTERM to every process; returns how many did not exit with status 0.
  int Terminate() {
    int bad = 0;
    coordinator_->Kill(SIGTERM);
    bad += coordinator_->Wait() != 0;
    for (auto& w : workers_) {
      w->Kill(SIGTERM);
      bad += w->Wait() != 0;
    }
    return bad;
  }
  void KillWorker(int i) {
    workers_[i]->Kill(SIGKILL);
    workers_[i]->Wait();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", coordinator_port_); }
  std::string worker_address(int i) const { return absl::StrCat("127.0.0.1:", worker_ports_[i]); }
  std::string Logs() const {
    std::string out;
    for (const char* name : {"coordinator", "worker0", "worker1", "worker2"}) {
      std::ifstream in(absl::StrCat(dir_, "/", name, ".log"));
      out += absl::StrCat("---- ", name, "\n", std::string(std::istreambuf_iterator<char>(in), {}));
    }
    return out;
  }

 private:
  const std::string dir_;
  const std::vector<std::string> flags_;
  const std::vector<std::string> worker_flags_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<int> worker_ports_;
  std::unique_ptr<Process> coordinator_;
  int coordinator_port_ = 0;
};

// The single-process engine: ModelShard + LocalPipeline + Generate, as qllmctl runs it.
std::vector<int32_t> EngineAnswer(const std::string& text, worker::AttentionMode mode,
                                  int max_tokens) {
  auto shard = worker::ModelShard::Load(ModelDir());
  EXPECT_OK(shard.status());
  auto tok = tokenizer::LoadTokenizer(ModelDir());
  EXPECT_OK(tok.status());
  auto tmpl = tokenizer::GetChatTemplate("qllm-tiny");
  auto prompt = tokenizer::BuildChatPrompt(**tok, *tmpl, "", kQuestion, text);
  EXPECT_OK(prompt.status());
  auto pipeline = coordinator::LocalPipeline::Create({shard->get()});
  coordinator::GenerateOptions options;
  options.max_new_tokens = max_tokens;
  options.chunk_size = 512;
  auto memory = worker::LoadMemoryConfig(ModelDir() + "/memory_config.yaml");
  EXPECT_OK(memory.status());
  worker::InMemoryBlockStorage storage;
  options.session.memory = *memory;
  options.session.memory.mode = mode;
  options.session.storage = &storage;
  if (mode == worker::AttentionMode::kQllm) {
    options.session.question = worker::QuestionSpan{prompt->question_begin, prompt->question_end};
  }
  options.stop_tokens = (*shard)->config().eos_token_ids;
  for (const char* t : {"<|eot|>"}) {
    if (auto id = (*tok)->TokenToId(t); id.ok()) options.stop_tokens.push_back(*id);
  }
  if ((*tok)->eos_id().has_value()) options.stop_tokens.push_back(*(*tok)->eos_id());
  auto r = coordinator::Generate(**pipeline, prompt->ids, options);
  EXPECT_OK(r.status());
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

std::vector<int32_t> Tokens(const v1::AskResult& r) {
  return std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end());
}

// Asks about a long document and SIGKILLs worker `i` at the first progress message.
AskOutcome AskKillingWorkerMidPrefill(Cluster& cluster, Client& client, int i,
                                      absl::Duration deadline) {
  const std::string long_text = MakeHaystack(1500, 11, "The pass key is 31337.");
  bool killed = false;
  AskOutcome out = client.Ask(MakeAsk(kQuestion, long_text, v1::MemoryParams::MODE_QLLM, 8),
                              deadline, [&](const v1::Progress&) {
                                if (!killed) {
                                  cluster.KillWorker(i);
                                  killed = true;
                                }
                                return true;
                              });
  EXPECT_TRUE(killed);
  return out;
}

const std::vector<std::pair<Mode, worker::AttentionMode>> kModes = {
    {v1::MemoryParams::MODE_FULL, worker::AttentionMode::kFull},
    {v1::MemoryParams::MODE_STREAMING, worker::AttentionMode::kStreaming},
    {v1::MemoryParams::MODE_INFLLM, worker::AttentionMode::kInfLlm},
    {v1::MemoryParams::MODE_QLLM, worker::AttentionMode::kQllm}};

TEST(ServiceE2eTest, ThreeWorkerProcessesMatchTheSingleProcessEngine) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  // The embedded mode (same coordinator code, in-process transport, one worker).
  coordinator::ServerOptions embedded_options;
  embedded_options.coordinator.model_dir = ModelDir();
  ASSERT_OK_AND_ASSIGN(embedded_options.coordinator.default_memory,
                       worker::LoadMemoryConfig(ModelDir() + "/memory_config.yaml"));
  embedded_options.coordinator.data_dir = dir + "/embedded";
  embedded_options.local_workers = 1;
  ASSERT_OK_AND_ASSIGN(auto embedded, coordinator::Server::Start(embedded_options));
  Client distributed(cluster.address());
  Client local(absl::StrCat("127.0.0.1:", embedded->port()));
  EXPECT_TRUE(HealthServing(cluster.address()));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(HealthServing(cluster.worker_address(i)));

  // Long enough that blocks are cut and retrieved (n_local 128, block 16 in memory_config).
  const std::string text = MakeHaystack(90, 7, "The pass key is 40712. Remember it.");
  for (const auto& [mode, engine_mode] : kModes) {
    SCOPED_TRACE(worker::AttentionModeName(engine_mode));
    const std::vector<int32_t> engine = EngineAnswer(text, engine_mode, 10);
    ASSERT_FALSE(engine.empty());
    const AskOutcome a = distributed.Ask(MakeAsk(kQuestion, text, mode, 10));
    ASSERT_TRUE(a.status.ok()) << a.status.error_message() << cluster.Logs();
    const AskOutcome b = local.Ask(MakeAsk(kQuestion, text, mode, 10));
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    EXPECT_EQ(Tokens(a.result), engine);
    EXPECT_EQ(Tokens(b.result), engine);
    EXPECT_EQ(a.result.text(), a.streamed_text);
    ASSERT_FALSE(a.progress.empty());
    EXPECT_EQ(a.progress.back().tokens_done(), a.progress.back().tokens_total());
    EXPECT_EQ(a.result.usage().prompt_tokens(), a.progress.back().tokens_total());

    // A stored document: ingested without a question, asked with one.
    v1::DocumentMetadata meta;
    meta.set_document_id(absl::StrCat("doc-", worker::AttentionModeName(engine_mode)));
    meta.mutable_memory()->set_mode(mode);
    v1::Document d1, d2;
    grpc::Status s = distributed.CreateDocument(meta, text, &d1);
    ASSERT_TRUE(s.ok()) << s.error_message() << cluster.Logs();
    s = local.CreateDocument(meta, text, &d2);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(d1.tokens(), d2.tokens());
    EXPECT_GT(d1.tokens(), 700);
    v1::AskRequest ask = MakeAsk(kQuestion, "", mode, 10);
    ask.set_document_id(meta.document_id());
    ask.set_return_evidence(true);
    const AskOutcome c = distributed.Ask(ask);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message() << cluster.Logs();
    const AskOutcome e = local.Ask(ask);
    ASSERT_TRUE(e.status.ok()) << e.status.error_message();
    EXPECT_EQ(Tokens(c.result), Tokens(e.result));
    EXPECT_FALSE(c.result.token_ids().empty());
    // Only the question and answer ran through the pipeline.
    EXPECT_LT(c.progress.back().tokens_total(), 40);
    EXPECT_EQ(c.result.usage().prompt_tokens(), d1.tokens() + c.progress.back().tokens_total());
    if (engine_mode == worker::AttentionMode::kInfLlm ||
        engine_mode == worker::AttentionMode::kQllm) {
      ASSERT_FALSE(c.result.evidence().empty());
      const v1::EvidenceSpan& span = c.result.evidence(0);
      EXPECT_LT(span.token_begin(), span.token_end());
      EXPECT_LE(span.text_end(), static_cast<int64_t>(text.size()));
      EXPECT_FALSE(span.text().empty());
    }
  }
  v1::ClusterStatus status;
  ASSERT_TRUE(distributed.ClusterStatus(&status).ok());
  EXPECT_TRUE(status.serving());
  ASSERT_EQ(status.workers_size(), 3);
  EXPECT_EQ(status.workers(0).layer_begin(), 0);
  EXPECT_EQ(status.workers(2).layer_end(), status.model().num_layers());
  for (const auto& w : status.workers()) {
    EXPECT_EQ(w.open_sessions(), 0);
    EXPECT_EQ(w.backend(), "cpu");  // Worker processes with the default --backend.
  }
  std::filesystem::remove_all(dir);
}

// Peer links between worker processes (--peer_transport=grpc, the CPU twin of NCCL): the
// coordinator hands out link ids, activations go worker to worker, and a killed worker fails
// the request at once instead of leaving its neighbours blocked on their links.
TEST(ServiceE2eTest, LinkedWorkerProcessesGiveTheEngineAnswerAndSurviveAKilledPeer) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {"--activation_transport=peer", "--chunk_tokens=256"},
                  {"--peer_transport=grpc", "--peer_timeout_s=600"});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  const std::string text = MakeHaystack(90, 7, "The pass key is 40712. Remember it.");
  for (const auto& [mode, engine_mode] : kModes) {
    if (engine_mode == worker::AttentionMode::kStreaming) continue;
    SCOPED_TRACE(worker::AttentionModeName(engine_mode));
    const AskOutcome a = client.Ask(MakeAsk(kQuestion, text, mode, 10));
    ASSERT_TRUE(a.status.ok()) << a.status.error_message() << cluster.Logs();
    EXPECT_EQ(Tokens(a.result), EngineAnswer(text, engine_mode, 10));
  }
  v1::DocumentMetadata meta;
  meta.set_document_id("linked");
  v1::Document doc;
  grpc::Status s = client.CreateDocument(meta, text, &doc);
  ASSERT_TRUE(s.ok()) << s.error_message() << cluster.Logs();
  v1::AskRequest stored = MakeAsk(kQuestion, "", v1::MemoryParams::MODE_QLLM, 10);
  stored.set_document_id("linked");
  const AskOutcome from_doc = client.Ask(stored);
  ASSERT_TRUE(from_doc.status.ok()) << from_doc.status.error_message() << cluster.Logs();
  EXPECT_FALSE(from_doc.result.token_ids().empty());

  // Kill the middle worker mid-prefill while stage 0 sends to it and stage 2 receives from it
  // (peer timeout 10 minutes): the request fails at once with UNAVAILABLE naming a worker (the
  // first to notice: the dead one's stream, or a neighbour's broken link), nothing stays
  // blocked, and the service recovers when the worker is back.
  const absl::Time start = absl::Now();
  const AskOutcome failed = AskKillingWorkerMidPrefill(cluster, client, 1, absl::Seconds(120));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << failed.status.error_message();
  EXPECT_THAT(failed.status.error_message(), HasSubstr("worker 127.0.0.1:"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));
  ASSERT_NO_FATAL_FAILURE(cluster.StartWorker(1));
  AskOutcome recovered;
  for (int attempt = 0; attempt < 50; ++attempt) {
    recovered = client.Ask(MakeAsk(kQuestion, text, v1::MemoryParams::MODE_QLLM, 10));
    if (recovered.status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(recovered.status.ok()) << recovered.status.error_message() << cluster.Logs();
  EXPECT_EQ(Tokens(recovered.result), EngineAnswer(text, worker::AttentionMode::kQllm, 10));
  v1::ClusterStatus status;
  ASSERT_TRUE(client.ClusterStatus(&status).ok());
  for (const auto& w : status.workers()) EXPECT_EQ(w.open_sessions(), 0);
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, StoredDocumentsSurviveSigkillAndInterruptedIngestsVanish) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {"--chunk_tokens=256"});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  const std::string text = MakeHaystack(60, 3, "The pass key is 11873. Remember it.");
  v1::DocumentMetadata meta;
  meta.set_document_id("kept");
  meta.set_title("a document that must survive");
  AskOutcome before;
  {
    Client client(cluster.address());
    v1::Document doc;
    grpc::Status s = client.CreateDocument(meta, text, &doc);
    ASSERT_TRUE(s.ok()) << s.error_message() << cluster.Logs();
    v1::AskRequest ask = MakeAsk(kQuestion, "", v1::MemoryParams::MODE_QLLM, 10);
    ask.set_document_id("kept");
    before = client.Ask(ask);
    ASSERT_TRUE(before.status.ok()) << before.status.error_message();

    // An ingest killed half-way: every process dies while the document streams through.
    const std::string big = MakeHaystack(4000, 5, "The pass key is 5.");
    v1::DocumentMetadata half;
    half.set_document_id("interrupted");
    std::thread ingest([&] { client.CreateDocument(half, big, nullptr).ok(); });
    // Wait until the workers hold the ingest's session, i.e. it is mid-way.
    for (int i = 0; i < 500; ++i) {
      v1::ClusterStatus st;
      if (client.ClusterStatus(&st).ok() && st.workers_size() == 3 &&
          st.workers(2).open_sessions() > 0) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    absl::SleepFor(absl::Milliseconds(300));
    cluster.KillAll();
    ingest.join();
  }
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  v1::Document got;
  grpc::Status s = client.GetDocument("kept", &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(got.title(), "a document that must survive");
  v1::AskRequest ask = MakeAsk(kQuestion, "", v1::MemoryParams::MODE_QLLM, 10);
  ask.set_document_id("kept");
  const AskOutcome after = client.Ask(ask);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message() << cluster.Logs();
  EXPECT_EQ(Tokens(after.result), Tokens(before.result));
  EXPECT_EQ(client.GetDocument("interrupted", &got).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ListDocumentsResponse list;
  ASSERT_TRUE(client.ListDocuments({}, &list).ok());
  ASSERT_EQ(list.documents_size(), 1);
  EXPECT_EQ(list.documents(0).document_id(), "kept");
  // The interrupted id is free again and ingests cleanly.
  v1::DocumentMetadata again;
  again.set_document_id("interrupted");
  ASSERT_TRUE(client.CreateDocument(again, text, &got).ok());
  ASSERT_TRUE(client.DeleteDocument("interrupted").ok());
  EXPECT_EQ(client.GetDocument("interrupted", &got).error_code(), grpc::StatusCode::NOT_FOUND);
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, AWorkerKilledMidAnswerGivesUnavailableAndTheServiceRecovers) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {"--chunk_tokens=256"});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  const std::string short_text = MakeHaystack(30, 9, "The pass key is 777.");
  const AskOutcome baseline =
      client.Ask(MakeAsk(kQuestion, short_text, v1::MemoryParams::MODE_QLLM, 8));
  ASSERT_TRUE(baseline.status.ok()) << baseline.status.error_message();

  const absl::Time start = absl::Now();
  const AskOutcome failed = AskKillingWorkerMidPrefill(cluster, client, 1, absl::Seconds(60));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << failed.status.error_message();
  EXPECT_THAT(failed.status.error_message(), HasSubstr(cluster.worker_address(1)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(60));

  // While the worker is down: a clear UNAVAILABLE at once, documents still listed.
  const absl::Time t = absl::Now();
  const AskOutcome down =
      client.Ask(MakeAsk(kQuestion, short_text, v1::MemoryParams::MODE_QLLM, 8), absl::Seconds(30));
  EXPECT_EQ(down.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(absl::Now() - t, absl::Seconds(10));
  v1::ListDocumentsResponse list;
  EXPECT_TRUE(client.ListDocuments({}, &list).ok());
  v1::ClusterStatus status;
  ASSERT_TRUE(client.ClusterStatus(&status).ok());
  EXPECT_FALSE(status.serving());
  EXPECT_EQ(status.workers(1).health(), v1::WorkerStatus::HEALTH_UNREACHABLE);
  // grpc.health.v1 follows the pipeline (polled once a second): NOT_SERVING while a stage is
  // down, so a load balancer stops sending work.
  EXPECT_TRUE(Eventually([&] { return !HealthServing(cluster.address()); }));

  // The worker comes back (a fresh process, no shard): the coordinator reloads it.
  ASSERT_NO_FATAL_FAILURE(cluster.StartWorker(1));
  AskOutcome recovered;
  for (int attempt = 0; attempt < 50; ++attempt) {
    recovered = client.Ask(MakeAsk(kQuestion, short_text, v1::MemoryParams::MODE_QLLM, 8));
    if (recovered.status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(recovered.status.ok()) << recovered.status.error_message() << cluster.Logs();
  EXPECT_EQ(Tokens(recovered.result), Tokens(baseline.result));
  ASSERT_TRUE(client.ClusterStatus(&status).ok());
  EXPECT_TRUE(status.serving());
  for (const auto& w : status.workers()) EXPECT_EQ(w.open_sessions(), 0);
  EXPECT_TRUE(Eventually([&] { return HealthServing(cluster.address()); }));
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, AClientKilledMidAnswerFreesEveryStage) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {"--chunk_tokens=256"});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  const std::string doc = dir + "/long.txt";
  std::ofstream(doc) << MakeHaystack(4000, 13, "The pass key is 99.");
  // The Python client example as the victim: SIGKILLed while its answer is being prefilled.
  auto victim = Process::Start(
      {"/usr/bin/python3", testing::SourceDir() + "/clients/python/qllm_client.py", "--address",
       cluster.address(), "--generated", testing::BinaryDir() + "/python", "--text-file", doc,
       "--question", kQuestion},
      dir + "/victim.log");
  ASSERT_OK(victim.status());
  auto open_sessions = [&] {
    v1::ClusterStatus st;
    int n = 0;
    if (client.ClusterStatus(&st).ok()) {
      for (const auto& w : st.workers()) n += w.open_sessions();
    }
    return n;
  };
  ASSERT_TRUE(Eventually([&] { return open_sessions() == 3; })) << cluster.Logs();
  (*victim)->Kill(SIGKILL);
  (*victim)->Wait();
  // The coordinator notices the dead stream at the next chunk and closes every stage's session.
  EXPECT_TRUE(Eventually([&] { return open_sessions() == 0; })) << cluster.Logs();
  const AskOutcome after =
      client.Ask(MakeAsk(kQuestion, MakeHaystack(20, 1, "x"), v1::MemoryParams::MODE_QLLM, 2));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, WorkerStatesNoCatalogueEntryNamesAreSwept) {
  // A crash between the workers' commit and the catalogue write leaves worker states that no
  // document names; the coordinator deletes them when it (re)connects to the workers.
  const std::string dir = testing::MakeScratchDir();
  coordinator::ServerOptions options;
  options.coordinator.model_dir = ModelDir();
  options.coordinator.data_dir = dir;
  options.local_workers = 2;
  auto documents_on_workers = [](Client& c) {
    v1::ClusterStatus st;
    int n = 0;
    if (c.ClusterStatus(&st).ok()) {
      for (const auto& w : st.workers()) n += w.documents();
    }
    return n;
  };
  {
    ASSERT_OK_AND_ASSIGN(auto server, coordinator::Server::Start(options));
    Client client(absl::StrCat("127.0.0.1:", server->port()));
    v1::DocumentMetadata meta;
    meta.set_document_id("kept");
    ASSERT_TRUE(
        client.CreateDocument(meta, MakeHaystack(30, 1, "The pass key is 1."), nullptr).ok());
    meta.set_document_id("orphan");
    ASSERT_TRUE(
        client.CreateDocument(meta, MakeHaystack(30, 2, "The pass key is 2."), nullptr).ok());
    EXPECT_EQ(documents_on_workers(client), 4);
  }
  {  // The crash window, simulated: the catalogue loses the entry, the workers keep the states.
    ASSERT_OK_AND_ASSIGN(auto catalogue, coordinator::Catalogue::Open(dir + "/catalogue"));
    ASSERT_OK(catalogue->Delete("orphan"));
  }
  ASSERT_OK_AND_ASSIGN(auto server, coordinator::Server::Start(options));
  Client client(absl::StrCat("127.0.0.1:", server->port()));
  v1::AskRequest ask = MakeAsk(kQuestion, "", v1::MemoryParams::MODE_UNSPECIFIED, 2);
  ask.set_document_id("kept");
  const AskOutcome out = client.Ask(ask);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(documents_on_workers(client), 2);
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, SigtermDrainsAndExitsCleanly) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  v1::DocumentMetadata meta;
  meta.set_document_id("kept");
  ASSERT_TRUE(client.CreateDocument(meta, MakeHaystack(30, 4, "The pass key is 1."), nullptr).ok());
  EXPECT_EQ(cluster.Terminate(), 0);  // SIGTERM to every process; each exits 0.
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client again(cluster.address());
  v1::Document doc;
  EXPECT_TRUE(again.GetDocument("kept", &doc).ok());
  std::filesystem::remove_all(dir);
}

struct BadRequest {
  std::string name;
  std::function<grpc::Status(Client&)> call;
  grpc::StatusCode code;
  std::string message;  // Expected substring.
};

TEST(ServiceE2eTest, BadRequestsGetPreciseStatusCodes) {
  const std::string dir = testing::MakeScratchDir();
  Cluster cluster(dir, {"--max_prompt_tokens=3000", "--max_document_bytes=200000"});
  ASSERT_NO_FATAL_FAILURE(cluster.Start());
  Client client(cluster.address());
  const std::string text = MakeHaystack(40, 1, "The pass key is 2024.");
  v1::DocumentMetadata meta;
  meta.set_document_id("stored");
  ASSERT_TRUE(client.CreateDocument(meta, text, nullptr).ok());

  auto ask = [](std::function<void(v1::AskRequest*)> edit,
                absl::Duration deadline = absl::ZeroDuration()) {
    return [edit, deadline](Client& c) {
      v1::AskRequest r = MakeAsk(kQuestion, "", v1::MemoryParams::MODE_QLLM, 4);
      r.set_inline_text(MakeHaystack(20, 2, "The pass key is 1."));
      edit(&r);
      return c.Ask(r, deadline).status;
    };
  };
  auto create = [](std::vector<v1::CreateDocumentRequest> messages) {
    return [messages](Client& c) { return c.CreateDocumentRaw(messages); };
  };
  auto meta_msg = [](const std::string& id) {
    v1::CreateDocumentRequest m;
    m.mutable_metadata()->set_document_id(id);
    return m;
  };
  auto text_msg = [](const std::string& t) {
    v1::CreateDocumentRequest m;
    m.set_text_chunk(t);
    return m;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  using C = grpc::StatusCode;
  const std::vector<BadRequest> cases = {
      {"no source", ask([](auto* r) { r->clear_inline_text(); }), C::INVALID_ARGUMENT,
       "inline_text or document_id"},
      {"empty inline text", ask([](auto* r) { r->set_inline_text(""); }), C::INVALID_ARGUMENT,
       "inline_text is empty"},
      {"invalid UTF-8 text", ask([](auto* r) { r->set_inline_text("ok \xff\xfe bad"); }),
       C::INVALID_ARGUMENT, "UTF-8"},
      {"invalid UTF-8 question", ask([](auto* r) { r->set_question("what \xc3("); }),
       C::INVALID_ARGUMENT, "question is not valid UTF-8"},
      {"question missing", ask([](auto* r) { r->set_question("  \n "); }), C::INVALID_ARGUMENT,
       "question is empty"},
      {"unknown document", ask([](auto* r) { r->set_document_id("nope"); }), C::NOT_FOUND, "nope"},
      {"malformed document id", ask([](auto* r) { r->set_document_id("../etc"); }),
       C::INVALID_ARGUMENT, "document_id"},
      {"negative temperature", ask([](auto* r) { r->mutable_sampling()->set_temperature(-1); }),
       C::INVALID_ARGUMENT, "temperature"},
      {"NaN temperature", ask([nan](auto* r) { r->mutable_sampling()->set_temperature(nan); }),
       C::INVALID_ARGUMENT, "temperature"},
      {"top_k out of range", ask([](auto* r) { r->mutable_sampling()->set_top_k(-3); }),
       C::INVALID_ARGUMENT, "top_k"},
      {"top_p out of range", ask([](auto* r) { r->mutable_sampling()->set_top_p(1.5f); }),
       C::INVALID_ARGUMENT, "top_p"},
      {"max_tokens out of range",
       ask([](auto* r) { r->mutable_sampling()->set_max_tokens(1'000'000); }), C::INVALID_ARGUMENT,
       "max_tokens"},
      {"n_local zero", ask([](auto* r) { r->mutable_memory()->set_n_local(0); }),
       C::INVALID_ARGUMENT, "n_local"},
      {"repr_topk above block_size", ask([](auto* r) {
         r->mutable_memory()->set_block_size(8);
         r->mutable_memory()->set_repr_topk(9);
       }),
       C::INVALID_ARGUMENT, "repr_topk"},
      {"negative question weight",
       ask([](auto* r) { r->mutable_memory()->set_question_weight(-1); }), C::INVALID_ARGUMENT,
       "question_weight"},
      {"unknown mode", ask([](auto* r) { r->mutable_memory()->set_mode(static_cast<Mode>(42)); }),
       C::INVALID_ARGUMENT, "mode"},
      {"too many tokens",
       ask([](auto* r) { r->set_inline_text(MakeHaystack(600, 4, "The pass key is 3.")); }),
       C::INVALID_ARGUMENT, "at most 3000"},
      {"oversized message", ask([](auto* r) { r->set_inline_text(std::string(17 << 20, 'a')); }),
       C::RESOURCE_EXHAUSTED, ""},
      {"expired deadline", ask([](auto*) {}, absl::Microseconds(1)), C::DEADLINE_EXCEEDED, ""},
      {"cancelled stream",
       [](Client& c) {
         v1::AskRequest r = MakeAsk(kQuestion, MakeHaystack(200, 5, "The pass key is 8."),
                                    v1::MemoryParams::MODE_QLLM, 4);
         return c.Ask(r, absl::ZeroDuration(), [](const v1::Progress&) { return false; }).status;
       },
       C::CANCELLED, ""},
      {"stored document with another block size", ask([](auto* r) {
         r->set_document_id("stored");
         r->mutable_memory()->set_block_size(32);
       }),
       C::INVALID_ARGUMENT, "fixed at ingest"},
      {"stored document in full mode", ask([](auto* r) {
         r->set_document_id("stored");
         r->mutable_memory()->set_mode(v1::MemoryParams::MODE_FULL);
       }),
       C::INVALID_ARGUMENT, "cannot read document"},
      {"ingest without metadata", create({text_msg("hello")}), C::INVALID_ARGUMENT, "metadata"},
      {"ingest with metadata twice", create({meta_msg("x1"), meta_msg("x1")}), C::INVALID_ARGUMENT,
       "first message"},
      {"ingest with a bad id", create({meta_msg("a/b"), text_msg("hello")}), C::INVALID_ARGUMENT,
       "document_id"},
      {"ingest of empty text", create({meta_msg("empty")}), C::INVALID_ARGUMENT, "empty"},
      {"ingest of invalid UTF-8", create({meta_msg("bin"), text_msg("a\x80z")}),
       C::INVALID_ARGUMENT, "UTF-8"},
      {"ingest over the byte limit",
       create({meta_msg("huge"), text_msg(std::string(150000, 'a')),
               text_msg(std::string(150000, 'b'))}),
       C::INVALID_ARGUMENT, "exceeds 200000 bytes"},
      {"existing id with other text", create({meta_msg("stored"), text_msg("other text")}),
       C::ALREADY_EXISTS, "stored"},
      {"get unknown document",
       [](Client& c) {
         v1::Document d;
         return c.GetDocument("missing", &d);
       },
       C::NOT_FOUND, "missing"},
      {"delete unknown document", [](Client& c) { return c.DeleteDocument("missing"); },
       C::NOT_FOUND, "missing"},
      {"list page size out of range",
       [](Client& c) {
         v1::ListDocumentsRequest r;
         r.set_page_size(5000);
         v1::ListDocumentsResponse out;
         return c.ListDocuments(r, &out);
       },
       C::INVALID_ARGUMENT, "page_size"},
  };
  ASSERT_GE(cases.size(), 15u);
  for (const BadRequest& c : cases) {
    SCOPED_TRACE(c.name);
    const grpc::Status s = c.call(client);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.name;
  }
  // Healthy afterwards: health check, a good request, and no state left on any worker.
  EXPECT_TRUE(HealthServing(cluster.address()));
  const AskOutcome good = client.Ask(MakeAsk(kQuestion, text, v1::MemoryParams::MODE_QLLM, 4));
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
  v1::ClusterStatus status;
  ASSERT_TRUE(client.ClusterStatus(&status).ok());
  EXPECT_TRUE(status.serving());
  for (const auto& w : status.workers()) EXPECT_EQ(w.open_sessions(), 0) << w.address();
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, AdmissionLimitRejectsWithResourceExhausted) {
  const std::string dir = testing::MakeScratchDir();
  coordinator::ServerOptions options;
  options.coordinator.model_dir = ModelDir();
  options.coordinator.default_memory.mode = worker::AttentionMode::kStreaming;
  options.coordinator.default_memory.n_init = 16;
  options.coordinator.default_memory.n_local = 128;
  options.coordinator.default_memory.exc_block_size = 64;
  options.coordinator.default_memory.block_size = 16;
  options.coordinator.max_sessions = 1;
  options.coordinator.chunk_tokens = 128;
  options.local_workers = 2;
  ASSERT_OK_AND_ASSIGN(auto server, coordinator::Server::Start(options));
  Client client(absl::StrCat("127.0.0.1:", server->port()));
  const std::string long_text = MakeHaystack(600, 2, "The pass key is 4.");
  grpc::Status second;
  const AskOutcome first = client.Ask(
      MakeAsk(kQuestion, long_text, v1::MemoryParams::MODE_UNSPECIFIED, 2), absl::ZeroDuration(),
      [&](const v1::Progress&) {
        if (second.ok()) {
          Client other(absl::StrCat("127.0.0.1:", server->port()));
          second =
              other.Ask(MakeAsk(kQuestion, "short", v1::MemoryParams::MODE_UNSPECIFIED, 2)).status;
        }
        return true;
      });
  EXPECT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(second.error_message(), HasSubstr("busy"));
  // Documents are disabled without --data_dir: a clear FAILED_PRECONDITION.
  v1::Document d;
  EXPECT_EQ(client.GetDocument("x", &d).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  std::filesystem::remove_all(dir);
}

TEST(ServiceE2eTest, PythonClientExampleStreamsAnAnswer) {
  const std::string dir = testing::MakeScratchDir();
  coordinator::ServerOptions options;
  options.coordinator.model_dir = ModelDir();
  ASSERT_OK_AND_ASSIGN(options.coordinator.default_memory,
                       worker::LoadMemoryConfig(ModelDir() + "/memory_config.yaml"));
  options.local_workers = 2;
  ASSERT_OK_AND_ASSIGN(auto server, coordinator::Server::Start(options));
  const std::string doc = dir + "/doc.txt";
  std::ofstream(doc) << MakeHaystack(50, 8, "The pass key is 6021. Remember it.");
  const std::string out = dir + "/out.txt";
  const std::string command = absl::StrCat(
      "/usr/bin/python3 ", testing::SourceDir(), "/clients/python/qllm_client.py --address ",
      "127.0.0.1:", server->port(), " --generated ", testing::BinaryDir(), "/python --text-file ",
      doc, " --question 'What is the pass key?' --evidence > ", out, " 2>&1");
  EXPECT_EQ(testing::RunCommand(command), 0);
  std::ifstream in(out);
  const std::string printed(std::istreambuf_iterator<char>(in), {});
  EXPECT_THAT(printed, HasSubstr("answer: "));
  EXPECT_THAT(printed, HasSubstr("prompt tokens"));
  EXPECT_THAT(printed, HasSubstr("evidence: tokens ["));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qllm::e2e
