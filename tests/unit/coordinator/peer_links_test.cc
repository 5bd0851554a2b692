// Peer links: activations straight from one stage's worker to the next (worker/peer_transport.h;
// NCCL on GPUs, the in-process rendezvous transport here). Checked at two levels: WorkerCore
// (links, their errors, aborts, timeouts, a lost device turning the worker unhealthy) and the
// coordinator (the same answers as relaying, over in-process and gRPC stages, and a failing
// stage aborting the links instead of leaving the others blocked).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/device_error.h"
#include "common/status_macros.h"
#include "coordinator/coordinator.h"
#include "coordinator/stage.h"
#include "grpcpp/grpcpp.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/grpc_peer_transport.h"
#include "worker/memory_config.h"
#include "worker/peer_transport.h"
#include "worker/worker_core.h"
#include "worker/worker_service.h"

namespace qllm {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;
using worker::Activations;
using worker::LinkRole;
using worker::WorkerCore;
using worker::WorkerOptions;

// ---- WorkerCore ------------------------------------------------------------------------------

class WorkerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    qllm::testing::WriteTinyModel(dir_, qllm::testing::TinyModelSpec{});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Stage `i` of two over the tiny model's three layers.
  std::unique_ptr<WorkerCore> Stage(int i, std::shared_ptr<worker::PeerTransport> transport,
                                    absl::Duration peer_timeout = absl::Seconds(60),
                                    std::function<void(const absl::Status&)> on_unhealthy = {}) {
    WorkerOptions o;
    o.worker_id = absl::StrCat("w", i);
    o.peer_transport = std::move(transport);
    o.peer_timeout = peer_timeout;
    o.on_unhealthy = std::move(on_unhealthy);
    auto core = std::make_unique<WorkerCore>(o);
    worker::ShardSpec spec{dir_, i == 0 ? 0 : 1, i == 0 ? 1 : 3, i == 0, i == 1};
    EXPECT_OK(core->LoadShard(spec).status());
    return core;
  }

  static worker::SessionSpec Session(uint64_t id) {
    worker::SessionSpec s;
    s.session_id = id;
    return s;
  }

  static Activations Chunk(uint64_t session, int64_t position, std::vector<int32_t> ids) {
    Activations a;
    a.session_id = session;
    a.position = position;
    a.tokens = static_cast<int32_t>(ids.size());
    a.all_logits = true;
    a.ids = std::move(ids);
    return a;
  }

  // Links session `id` of `up` to the same session of `down`, both ends joining at once.
  static void Link(WorkerCore* up, WorkerCore* down, uint64_t id) {
    ASSERT_OK_AND_ASSIGN(std::string link, up->CreateLink(id));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::Status receive;
    std::thread t([&] { receive = down->ConnectLink(id, link, LinkRole::kReceive, deadline); });
    EXPECT_OK(up->ConnectLink(id, link, LinkRole::kSend, deadline));
    t.join();
    EXPECT_OK(receive);
  }

  std::string dir_;
  const std::vector<std::vector<int32_t>> chunks_ = {{3, 9, 27, 1, 5}, {8, 13}, {21, 34, 55}};
};

TEST_F(WorkerLinkTest, LinkedStagesComputeWhatRelayedStagesCompute) {
  // Relayed: the caller carries the activations from stage 0 to stage 1.
  auto r0 = Stage(0, nullptr), r1 = Stage(1, nullptr);
  ASSERT_OK(r0->OpenSession(Session(1)));
  ASSERT_OK(r1->OpenSession(Session(1)));
  std::vector<std::vector<float>> want;
  int64_t pos = 0;
  for (const auto& ids : chunks_) {
    Activations a = Chunk(1, pos, ids);
    ASSERT_OK(r0->RunChunk(&a));
    ASSERT_FALSE(a.hidden.empty());
    ASSERT_OK(r1->RunChunk(&a));
    want.push_back(a.logits);
    pos += static_cast<int64_t>(ids.size());
  }

  // Linked: stage 0 hands its output to stage 1 itself; the chunks run concurrently.
  auto transport = worker::NewInProcessPeerTransport();
  auto l0 = Stage(0, transport), l1 = Stage(1, transport);
  EXPECT_EQ(l0->peer_transport_name(), "in-process");
  ASSERT_OK(l0->OpenSession(Session(7)));
  ASSERT_OK(l1->OpenSession(Session(7)));
  Link(l0.get(), l1.get(), 7);
  pos = 0;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    Activations up = Chunk(7, pos, chunks_[c]);
    Activations down = Chunk(7, pos, {});
    down.tokens = up.tokens;
    absl::Status sent;
    std::thread t([&] { sent = l0->RunChunk(&up); });
    const absl::Status received = l1->RunChunk(&down);
    t.join();
    ASSERT_OK(received);
    ASSERT_OK(sent);
    EXPECT_TRUE(up.hidden.empty()) << "a sending stage returns no activations";
    EXPECT_TRUE(up.logits.empty());
    ASSERT_EQ(down.logits.size(), want[c].size());
    for (size_t k = 0; k < want[c].size(); ++k) {
      ASSERT_NEAR(down.logits[k], want[c][k], 1e-5f) << "chunk " << c << " logit " << k;
    }
    pos += static_cast<int64_t>(chunks_[c].size());
  }
  EXPECT_OK(l0->CloseSession(7));
  EXPECT_OK(l1->CloseSession(7));
}

TEST_F(WorkerLinkTest, LinkErrorsArePrecise) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  auto plain = Stage(0, nullptr);
  ASSERT_OK(plain->OpenSession(Session(1)));
  EXPECT_THAT(plain->CreateLink(1).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--peer_transport")));
  EXPECT_THAT(plain->ConnectLink(1, "x", LinkRole::kSend, deadline),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(plain->peer_transport_name(), "");

  auto transport = worker::NewInProcessPeerTransport();
  auto s0 = Stage(0, transport), s1 = Stage(1, transport);
  ASSERT_OK(s0->OpenSession(Session(1)));
  ASSERT_OK(s1->OpenSession(Session(1)));
  EXPECT_THAT(s0->CreateLink(2).status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s1->CreateLink(1).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("last stage")));
  EXPECT_THAT(s0->ConnectLink(1, "x", LinkRole::kReceive, deadline),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("first stage")));
  EXPECT_THAT(s1->ConnectLink(1, "x", LinkRole::kSend, deadline),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("last stage")));
  ASSERT_OK_AND_ASSIGN(std::string id, s0->CreateLink(1));
  EXPECT_THAT(s0->CreateLink(1).status(), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(s0->ConnectLink(1, id + "0", LinkRole::kSend, deadline),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CreateLink")));
  EXPECT_THAT(s1->ConnectLink(1, "in-process:999", LinkRole::kReceive, deadline),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown")));
  EXPECT_THAT(s1->ConnectLink(1, "", LinkRole::kReceive, deadline),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(s1->ConnectLink(1, std::string(worker::kMaxLinkIdBytes + 1, 'x'), LinkRole::kReceive,
                              deadline),
              StatusIs(absl::StatusCode::kInvalidArgument));
  absl::Status receive;
  std::thread t([&] { receive = s1->ConnectLink(1, id, LinkRole::kReceive, deadline); });
  EXPECT_OK(s0->ConnectLink(1, id, LinkRole::kSend, deadline));
  t.join();
  EXPECT_OK(receive);
  EXPECT_THAT(s1->ConnectLink(1, id, LinkRole::kReceive, deadline),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(s0->ConnectLink(1, id, LinkRole::kSend, deadline),
              StatusIs(absl::StatusCode::kAlreadyExists));
  // A linked stage takes its input from the link, not from the request.
  Activations a = Chunk(1, 0, {});
  a.tokens = 1;
  a.hidden.assign(qllm::testing::TinyModelSpec{}.hidden, 0.5f);
  EXPECT_THAT(s1->RunChunk(&a),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("peer link")));
}

TEST_F(WorkerLinkTest, ClosingASessionReleasesAChunkBlockedOnItsLink) {
  auto transport = worker::NewInProcessPeerTransport();
  auto s0 = Stage(0, transport), s1 = Stage(1, transport, absl::Minutes(10));
  ASSERT_OK(s0->OpenSession(Session(3)));
  ASSERT_OK(s1->OpenSession(Session(3)));
  Link(s0.get(), s1.get(), 3);
  Activations down = Chunk(3, 0, {});
  down.tokens = 4;
  absl::Status received;
  absl::Notification done;
  std::thread t([&] {
    received = s1->RunChunk(&down);  // Stage 0 never sends.
    done.Notify();
  });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time t0 = absl::Now();
  ASSERT_OK(s1->CloseSession(3));  // Aborts the link, then waits for the chunk.
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  t.join();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  EXPECT_THAT(received, StatusIs(absl::StatusCode::kUnavailable));
  // The other end sees the abort too.
  Activations up = Chunk(3, 0, {1, 2, 3, 4});
  EXPECT_THAT(s0->RunChunk(&up), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(WorkerLinkTest, AChunkWaitsForItsPeerAtMostThePeerTimeout) {
  auto transport = worker::NewInProcessPeerTransport();
  auto s0 = Stage(0, transport), s1 = Stage(1, transport, absl::Milliseconds(100));
  ASSERT_OK(s0->OpenSession(Session(4)));
  ASSERT_OK(s1->OpenSession(Session(4)));
  Link(s0.get(), s1.get(), 4);
  Activations down = Chunk(4, 0, {});
  down.tokens = 2;
  EXPECT_THAT(s1->RunChunk(&down),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("aborted")));
  EXPECT_OK(s1->health()) << "a slow peer is not a lost device";
}

// Links whose sends fail as a lost device does (a sticky CUDA error surfacing in a copy).
class LostDeviceTransport final : public worker::PeerTransport {
 public:
  std::string name() const override { return "lost-device"; }
  bool device_memory() const override { return false; }
  absl::StatusOr<std::string> NewLinkId() override { return std::string("link"); }
  using worker::PeerTransport::Connect;
  absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> Connect(
      const std::string&, LinkRole, absl::Time, const std::atomic<bool>*) override {
    class Broken final : public worker::ActivationChannel {
     public:
      absl::Status Send(const float*, size_t, absl::Time) override {
        return DeviceLostError("cudaMemcpy: cudaErrorIllegalAddress (injected)");
      }
      absl::Status Recv(float*, size_t, absl::Time) override {
        return DeviceLostError("cudaMemcpy: cudaErrorLaunchFailure (injected)");
      }
      void Abort() override {}
    };
    return std::unique_ptr<worker::ActivationChannel>(new Broken());
  }
};

TEST_F(WorkerLinkTest, ALostDeviceMakesTheWorkerUnhealthyNotDead) {
  std::atomic<int> calls{0};
  auto s0 = Stage(0, std::make_shared<LostDeviceTransport>(), absl::Seconds(60),
                  [&](const absl::Status& s) {
                    EXPECT_TRUE(IsDeviceLost(s));
                    ++calls;
                  });
  ASSERT_OK(s0->OpenSession(Session(5)));
  ASSERT_OK_AND_ASSIGN(std::string id, s0->CreateLink(5));
  ASSERT_OK(s0->ConnectLink(5, id, LinkRole::kSend, absl::Now() + absl::Seconds(5)));
  EXPECT_OK(s0->health());
  Activations a = Chunk(5, 0, {1, 2, 3});
  EXPECT_THAT(s0->RunChunk(&a), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
  EXPECT_THAT(s0->health(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("device was lost")));
  EXPECT_EQ(calls.load(), 1);
  // Engine work is refused from now on, with the reason; bookkeeping still works.
  EXPECT_THAT(s0->OpenSession(Session(6)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unhealthy")));
  Activations b = Chunk(5, 0, {1});
  EXPECT_THAT(s0->RunChunk(&b), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unhealthy")));
  EXPECT_THAT(s0->CreateLink(5).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_OK(s0->CloseSession(5));
  EXPECT_TRUE(s0->ListDocuments().empty());
  EXPECT_EQ(s0->GetStats().open_sessions, 0);
  EXPECT_EQ(calls.load(), 1) << "reported once";
  // Errors that are not a lost device leave the worker healthy.
  auto s1 = Stage(0, nullptr);
  ASSERT_OK(s1->OpenSession(Session(8)));
  Activations c = Chunk(8, 5, {1});
  EXPECT_THAT(s1->RunChunk(&c), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(s1->health());
}

// ---- The gRPC transport, alone ---------------------------------------------------------------

TEST(GrpcPeerTransportTest, CarriesMessagesAndReportsEveryFailurePrecisely) {
  worker::GrpcPeerTransport t;
  EXPECT_EQ(t.name(), "grpc");
  EXPECT_THAT(t.NewLinkId().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  // A worker service serving the transport's streams (its core is never used here).
  WorkerCore core(WorkerOptions{});
  worker::WorkerService service(&core, &t);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_GT(port, 0);
  t.set_advertise(absl::StrCat("127.0.0.1:", port));

  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  ASSERT_OK_AND_ASSIGN(const std::string id, t.NewLinkId());
  absl::StatusOr<std::unique_ptr<worker::ActivationChannel>> send;
  std::thread joiner([&] { send = t.Connect(id, LinkRole::kSend, deadline); });
  ASSERT_OK_AND_ASSIGN(auto receive, t.Connect(id, LinkRole::kReceive, deadline));
  joiner.join();
  ASSERT_OK(send.status());
  for (size_t n : {size_t{1}, size_t{3000}, size_t{1} << 20}) {
    std::vector<float> msg(n), got(n);
    for (size_t i = 0; i < n; ++i) msg[i] = static_cast<float>(i % 101) * 0.5f;
    std::thread sender([&] { EXPECT_OK((*send)->Send(msg.data(), n, deadline)); });
    ASSERT_OK(receive->Recv(got.data(), n, deadline));
    sender.join();
    EXPECT_EQ(got, msg);
  }
  std::vector<float> one(1);
  EXPECT_THAT(receive->Send(one.data(), 1, deadline),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // Aborting the sending end ends the stream: the receiver learns at once.
  (*send)->Abort();
  EXPECT_THAT(receive->Recv(one.data(), 1, absl::Now() + absl::Seconds(30)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("closed by the sending worker")));
  EXPECT_THAT((*send)->Send(one.data(), 1, deadline), StatusIs(absl::StatusCode::kUnavailable));

  // Ids: malformed, not issued here (send end), unknown to the issuer (receive end).
  EXPECT_THAT(t.Connect("nccl:abc", LinkRole::kReceive, deadline).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      t.Connect(absl::StrCat("grpc:127.0.0.1:", port, "/x"), LinkRole::kSend, deadline).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not issued")));
  EXPECT_THAT(
      t.Connect(absl::StrCat("grpc:127.0.0.1:", port, "/x"), LinkRole::kReceive, deadline).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not know")));
  // Nobody attaches: the send end gives up at its deadline.
  ASSERT_OK_AND_ASSIGN(const std::string lonely, t.NewLinkId());
  EXPECT_THAT(t.Connect(lonely, LinkRole::kSend, absl::Now() + absl::Milliseconds(100)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  // One send end per link; a receiver expecting another size gets INVALID_ARGUMENT.
  ASSERT_OK_AND_ASSIGN(const std::string slow, t.NewLinkId());
  std::thread slow_joiner([&] { send = t.Connect(slow, LinkRole::kSend, deadline); });
  ASSERT_OK_AND_ASSIGN(auto slow_receive, t.Connect(slow, LinkRole::kReceive, deadline));
  slow_joiner.join();
  ASSERT_OK(send.status());
  EXPECT_THAT(t.Connect(slow, LinkRole::kSend, deadline).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_OK((*send)->Send(one.data(), 1, deadline));  // Taken by gRPC, not yet read.
  EXPECT_THAT(slow_receive->Recv(one.data(), 2, deadline),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expects 2")));
  // A worker that cannot be reached.
  const absl::Time t0 = absl::Now();
  const absl::Status unreachable =
      t.Connect("grpc:127.0.0.1:1/x", LinkRole::kReceive, absl::Now() + absl::Seconds(2)).status();
  EXPECT_TRUE(absl::IsUnavailable(unreachable) || absl::IsDeadlineExceeded(unreachable))
      << unreachable;
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  send->reset();
  receive.reset();
  slow_receive.reset();
  server->Shutdown();
}

// ---- Coordinator -----------------------------------------------------------------------------

class NullSink final : public coordinator::AskSink {
 public:
  void Progress(int64_t, int64_t) override {}
  void TextDelta(const std::string&) override {}
};

// A stage whose chunk stream fails the `fail_at`-th chunk (counting from 1) of every session,
// and that fails joining the receiving end of a link when `fail_receive_link`.
class FailingStage final : public coordinator::Stage {
 public:
  // fail_at: the chunk (1-based) whose Run fails, 0 for none. fail_receive_link: joining a link
  // as its receiver fails. send_join_delay: joining a link as its sender waits this long first.
  FailingStage(std::unique_ptr<coordinator::Stage> inner, int fail_at,
               bool fail_receive_link = false,
               absl::Duration send_join_delay = absl::ZeroDuration())
      : inner_(std::move(inner)),
        fail_at_(fail_at),
        fail_receive_link_(fail_receive_link),
        send_join_delay_(send_join_delay) {}
  std::string address() const override { return inner_->address(); }
  absl::StatusOr<coordinator::StageIdentity> Register(absl::Time d) override {
    return inner_->Register(d);
  }
  absl::StatusOr<worker::ShardInfo> LoadShard(const worker::ShardSpec& s, absl::Time d) override {
    return inner_->LoadShard(s, d);
  }
  absl::Status OpenSession(const worker::SessionSpec& s, absl::Time d) override {
    return inner_->OpenSession(s, d);
  }
  absl::Status CloseSession(uint64_t id, absl::Time d) override {
    return inner_->CloseSession(id, d);
  }
  absl::StatusOr<std::unique_ptr<coordinator::ChunkStream>> OpenChunkStream(uint64_t id,
                                                                            absl::Time d) override {
    class Stream final : public coordinator::ChunkStream {
     public:
      Stream(std::unique_ptr<coordinator::ChunkStream> inner, int fail_at)
          : inner_(std::move(inner)), fail_at_(fail_at) {}
      absl::Status Run(Activations* chunk) override {
        if (++runs_ == fail_at_) return absl::InternalError("injected stage failure");
        return inner_->Run(chunk);
      }
      void Cancel() override { inner_->Cancel(); }

     private:
      std::unique_ptr<coordinator::ChunkStream> inner_;
      const int fail_at_;
      int runs_ = 0;
    };
    ASSIGN_OR_RETURN(auto inner, inner_->OpenChunkStream(id, d));
    return std::unique_ptr<coordinator::ChunkStream>(new Stream(std::move(inner), fail_at_));
  }
  absl::Status PersistDocument(uint64_t s, uint64_t k, absl::Time d) override {
    return inner_->PersistDocument(s, k, d);
  }
  absl::StatusOr<int64_t> RestoreDocument(uint64_t k, const worker::SessionSpec& s,
                                          absl::Time d) override {
    return inner_->RestoreDocument(k, s, d);
  }
  absl::Status DeleteDocument(uint64_t k, absl::Time d) override {
    return inner_->DeleteDocument(k, d);
  }
  absl::StatusOr<std::vector<uint64_t>> ListDocuments(absl::Time d) override {
    return inner_->ListDocuments(d);
  }
  absl::StatusOr<worker::WorkerStatsSnapshot> GetStats(absl::Time d) override {
    return inner_->GetStats(d);
  }
  absl::StatusOr<std::string> CreateLink(uint64_t s, absl::Time d) override {
    return inner_->CreateLink(s, d);
  }
  absl::Status ConnectLink(uint64_t s, const std::string& id, LinkRole r, absl::Time d) override {
    if (fail_receive_link_ && r == LinkRole::kReceive) {
      return absl::InternalError("injected link failure");
    }
    if (r == LinkRole::kSend) absl::SleepFor(send_join_delay_);
    return inner_->ConnectLink(s, id, r, d);
  }

 private:
  std::unique_ptr<coordinator::Stage> inner_;
  const int fail_at_;
  const bool fail_receive_link_;
  const absl::Duration send_join_delay_;
};

class CoordinatorLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_dir_ = qllm::testing::SourceDir() + "/models/qllm-tiny";
    scratch_ = qllm::testing::MakeScratchDir();
    std::string doc;
    for (int i = 0; i < 40; ++i) {
      doc += "The grass is green and the sky is blue. ";
      if (i == 17) doc += "The pass key is 52817. Remember it. 52817 is the pass key. ";
    }
    ask_.set_question("What is the pass key?");
    ask_.set_inline_text(doc);
    ask_.mutable_memory()->set_mode(v1::MemoryParams::MODE_QLLM);
    ask_.mutable_sampling()->set_max_tokens(8);
    ask_.set_return_evidence(true);
  }
  void TearDown() override {
    for (auto& s : grpc_servers_) s->Shutdown();
    std::filesystem::remove_all(scratch_);
  }

  // Workers sharing `transport` (null: none) for `n` stages.
  std::vector<std::unique_ptr<WorkerCore>> Workers(
      int n, const std::shared_ptr<worker::PeerTransport>& transport, bool stores = false) {
    std::vector<std::unique_ptr<WorkerCore>> out;
    for (int i = 0; i < n; ++i) {
      WorkerOptions o;
      o.worker_id = absl::StrCat("w", i);
      o.peer_transport = transport;
      o.peer_timeout = absl::Minutes(10);  // A hang would show as a test timeout.
      if (stores) o.store_dir = absl::StrCat(scratch_, "/store-", ++stores_);
      out.push_back(std::make_unique<WorkerCore>(o));
    }
    return out;
  }

  absl::StatusOr<std::unique_ptr<coordinator::Coordinator>> MakeCoordinator(
      std::vector<std::unique_ptr<coordinator::Stage>> stages,
      coordinator::ActivationTransport transport, bool documents = false) {
    coordinator::CoordinatorOptions o;
    o.model_dir = model_dir_;
    auto memory = worker::LoadMemoryConfig(model_dir_ + "/memory_config.yaml");
    EXPECT_OK(memory.status());
    if (memory.ok()) o.default_memory = *memory;
    o.chunk_tokens = 48;  // Many chunks: the pipeline overlaps them.
    o.activation_transport = transport;
    if (documents) o.data_dir = absl::StrCat(scratch_, "/catalogue-", ++stores_);
    return coordinator::Coordinator::Create(o, std::move(stages));
  }

  static std::vector<std::unique_ptr<coordinator::Stage>> InProcess(
      const std::vector<std::unique_ptr<WorkerCore>>& cores) {
    std::vector<std::unique_ptr<coordinator::Stage>> stages;
    for (size_t i = 0; i < cores.size(); ++i) {
      stages.push_back(coordinator::NewInProcessStage(cores[i].get(), static_cast<int>(i), 1));
    }
    return stages;
  }

  // Serves `core` (and the streams of its gRPC peer transport `links`, when given, which then
  // advertises the port) over gRPC on a free loopback port; returns its address.
  std::string Serve(WorkerCore* core, worker::GrpcPeerTransport* links = nullptr) {
    services_.push_back(std::make_unique<worker::WorkerService>(core, links));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(worker::kMaxRpcMessageBytes);
    builder.RegisterService(services_.back().get());
    grpc_servers_.push_back(builder.BuildAndStart());
    EXPECT_GT(port, 0);
    if (links != nullptr) links->set_advertise(absl::StrCat("127.0.0.1:", port));
    return absl::StrCat("127.0.0.1:", port);
  }

  static v1::AskResult Ask(coordinator::Coordinator* c, const v1::AskRequest& r) {
    NullSink sink;
    auto result = c->Ask(r, coordinator::CallContext{}, &sink);
    EXPECT_OK(result.status());
    return result.ok() ? *result : v1::AskResult();
  }

  static void ExpectSameAnswer(const v1::AskResult& got, const v1::AskResult& want) {
    EXPECT_EQ(got.text(), want.text());
    EXPECT_THAT(got.token_ids(), ::testing::ElementsAreArray(want.token_ids()));
    ASSERT_EQ(got.evidence_size(), want.evidence_size());
    for (int i = 0; i < got.evidence_size(); ++i) {
      EXPECT_EQ(got.evidence(i).token_begin(), want.evidence(i).token_begin());
      EXPECT_EQ(got.evidence(i).selections(), want.evidence(i).selections());
    }
  }

  std::string model_dir_, scratch_;
  int stores_ = 0;
  v1::AskRequest ask_;
  std::vector<std::unique_ptr<worker::WorkerService>> services_;
  std::vector<std::unique_ptr<grpc::Server>> grpc_servers_;
};

TEST_F(CoordinatorLinkTest, LinkedStagesGiveTheRelayedAnswerInProcess) {
  auto relay_cores = Workers(2, nullptr);
  ASSERT_OK_AND_ASSIGN(auto relay, MakeCoordinator(InProcess(relay_cores),
                                                   coordinator::ActivationTransport::kRelay));
  const v1::AskResult want = Ask(relay.get(), ask_);
  EXPECT_EQ(want.text(), "52817") << "the built-in model finds this pass key";
  ASSERT_GT(want.evidence_size(), 0);

  auto cores = Workers(2, worker::NewInProcessPeerTransport());
  ASSERT_OK_AND_ASSIGN(auto peer,
                       MakeCoordinator(InProcess(cores), coordinator::ActivationTransport::kPeer));
  ExpectSameAnswer(Ask(peer.get(), ask_), want);
  ExpectSameAnswer(Ask(peer.get(), ask_), want);  // A second session links anew.
  for (const auto& c : cores) EXPECT_EQ(c->GetStats().open_sessions, 0);
}

TEST_F(CoordinatorLinkTest, LinkedGrpcWorkersGiveTheRelayedAnswerAndStoreDocuments) {
  // The baseline runs the same way (gRPC workers, whose OpenMP teams differ from the
  // in-process stages' and so round differently), only relayed.
  auto relay_cores = Workers(3, nullptr, /*stores=*/true);
  std::vector<std::unique_ptr<coordinator::Stage>> relay_stages;
  for (auto& c : relay_cores) relay_stages.push_back(coordinator::NewGrpcStage(Serve(c.get())));
  ASSERT_OK_AND_ASSIGN(auto relay, MakeCoordinator(std::move(relay_stages),
                                                   coordinator::ActivationTransport::kAuto));
  const v1::AskResult want = Ask(relay.get(), ask_);
  relay.reset();

  // Each worker with its own gRPC peer transport, as separate processes would have.
  std::vector<std::shared_ptr<worker::GrpcPeerTransport>> links;
  std::vector<std::unique_ptr<WorkerCore>> cores;
  std::vector<std::unique_ptr<coordinator::Stage>> stages;
  for (int i = 0; i < 3; ++i) {
    links.push_back(std::make_shared<worker::GrpcPeerTransport>());
    cores.push_back(std::move(Workers(1, links.back(), /*stores=*/true)[0]));
    stages.push_back(coordinator::NewGrpcStage(Serve(cores.back().get(), links.back().get())));
  }
  ASSERT_OK_AND_ASSIGN(auto peer,
                       MakeCoordinator(std::move(stages), coordinator::ActivationTransport::kAuto,
                                       /*documents=*/true));
  ExpectSameAnswer(Ask(peer.get(), ask_), want);

  // Ingest and ask a stored document over the links.
  v1::DocumentMetadata meta;
  meta.set_document_id("doc-1");
  NullSink sink;
  ASSERT_OK(
      peer->CreateDocument(meta, ask_.inline_text(), coordinator::CallContext{}, &sink).status());
  v1::AskRequest stored = ask_;
  stored.set_document_id("doc-1");
  stored.set_return_evidence(false);
  EXPECT_EQ(Ask(peer.get(), stored).text(), "52817");
  for (const auto& c : cores) EXPECT_EQ(c->GetStats().open_sessions, 0);
  peer.reset();
  for (auto& s : grpc_servers_) s->Shutdown();  // Before the cores they serve go.
}

TEST_F(CoordinatorLinkTest, PeerNeedsACommonTransportAutoFallsBackToRelay) {
  auto transport = worker::NewInProcessPeerTransport();
  std::vector<std::unique_ptr<WorkerCore>> cores;
  cores.push_back(std::move(Workers(1, transport)[0]));
  cores.push_back(std::move(Workers(1, nullptr)[0]));
  ASSERT_OK_AND_ASSIGN(auto peer,
                       MakeCoordinator(InProcess(cores), coordinator::ActivationTransport::kPeer));
  NullSink sink;
  EXPECT_THAT(peer->Ask(ask_, coordinator::CallContext{}, &sink).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("stage 1 (in-process:1) has none")));
  ASSERT_OK_AND_ASSIGN(auto fallback,
                       MakeCoordinator(InProcess(cores), coordinator::ActivationTransport::kAuto));
  EXPECT_EQ(Ask(fallback.get(), ask_).text(), "52817");
  EXPECT_THAT(coordinator::ParseActivationTransport("nccl").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(CoordinatorLinkTest, AFailingStageAbortsTheLinksInsteadOfBlockingTheOthers) {
  // Stage 1 of 3 fails its third chunk; stage 0 is then blocked sending to it and stage 2
  // receiving from it, with a peer timeout of 10 minutes: only aborting the links ends them.
  auto cores = Workers(3, worker::NewInProcessPeerTransport());
  auto stages = InProcess(cores);
  stages[1] = std::make_unique<FailingStage>(std::move(stages[1]), 3);
  ASSERT_OK_AND_ASSIGN(auto peer,
                       MakeCoordinator(std::move(stages), coordinator::ActivationTransport::kPeer));
  NullSink sink;
  const absl::Time t0 = absl::Now();
  EXPECT_THAT(peer->Ask(ask_, coordinator::CallContext{}, &sink).status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("injected stage failure")));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(60));
  for (const auto& c : cores) {
    EXPECT_EQ(c->GetStats().open_sessions, 0);
    EXPECT_OK(c->health());
  }
}

TEST_F(CoordinatorLinkTest, AnEndFailingToJoinFailsTheRequestAtOnceWithItsOwnError) {
  // gRPC workers: the sending end waits for its receiver to attach, which never happens. Only
  // the coordinator's abort (closing the session) ends that wait before control_timeout (30 s).
  // With a late sender, its join reaches its worker only after the abort closed the session and
  // fails there too (NOT_FOUND), after the receiver: the request still reports the receiver.
  for (const absl::Duration send_delay : {absl::ZeroDuration(), absl::Milliseconds(300)}) {
    SCOPED_TRACE(absl::StrCat("send_join_delay ", absl::FormatDuration(send_delay)));
    std::vector<std::shared_ptr<worker::GrpcPeerTransport>> links;
    std::vector<std::unique_ptr<WorkerCore>> cores;
    std::vector<std::unique_ptr<coordinator::Stage>> stages;
    for (int i = 0; i < 2; ++i) {
      links.push_back(std::make_shared<worker::GrpcPeerTransport>());
      cores.push_back(std::move(Workers(1, links.back())[0]));
      stages.push_back(coordinator::NewGrpcStage(Serve(cores.back().get(), links.back().get())));
    }
    stages[0] = std::make_unique<FailingStage>(std::move(stages[0]), 0,
                                               /*fail_receive_link=*/false, send_delay);
    stages[1] = std::make_unique<FailingStage>(std::move(stages[1]), 0, /*fail_receive_link=*/true);
    ASSERT_OK_AND_ASSIGN(
        auto c, MakeCoordinator(std::move(stages), coordinator::ActivationTransport::kPeer));
    NullSink sink;
    const absl::Time t0 = absl::Now();
    EXPECT_THAT(c->Ask(ask_, coordinator::CallContext{}, &sink).status(),
                StatusIs(absl::StatusCode::kInternal,
                         AllOf(HasSubstr("stage 1 (127.0.0.1:"), HasSubstr("injected link"))));
    EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
    for (const auto& core : cores) EXPECT_EQ(core->GetStats().open_sessions, 0);
    c.reset();
    for (auto& s : grpc_servers_) s->Shutdown();
    grpc_servers_.clear();
  }
}

TEST_F(CoordinatorLinkTest, AnUnhealthyWorkerIsReportedAndRefusedNotUsed) {
  auto cores = Workers(2, std::make_shared<LostDeviceTransport>());
  ASSERT_OK_AND_ASSIGN(auto c,
                       MakeCoordinator(InProcess(cores), coordinator::ActivationTransport::kPeer));
  NullSink sink;
  EXPECT_THAT(c->Ask(ask_, coordinator::CallContext{}, &sink).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
  // A stage lost its device (whichever reached its link first; the other may have seen the
  // session closed): requests are refused up front, naming the stage.
  const int lost = !cores[0]->health().ok() ? 0 : 1;
  EXPECT_THAT(cores[lost]->health(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(c->Ask(ask_, coordinator::CallContext{}, &sink).status(),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::MatchesRegex("pipeline stage [01] \\(in-process:[01]\\) is "
                                               "unhealthy: worker w[01] is unhealthy: .*")));
  EXPECT_THAT(c->CheckStages(absl::Now() + absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("device was lost")));
  const v1::ClusterStatus status = c->GetClusterStatus();
  EXPECT_FALSE(status.serving());
  ASSERT_EQ(status.workers_size(), 2);
  EXPECT_EQ(status.workers(lost).health(), v1::WorkerStatus::HEALTH_NOT_SERVING);
  EXPECT_EQ(status.workers(lost).backend(), "cpu");
  for (const auto& core : cores) EXPECT_EQ(core->GetStats().open_sessions, 0);
}

}  // namespace
}  // namespace qllm
