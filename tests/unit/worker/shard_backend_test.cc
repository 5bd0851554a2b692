// The worker's backend seam (worker/shard_backend.h): the CPU backend is the CPU engine
// unchanged, and WorkerCore runs whatever backend its factory makes (the CUDA backend of
// `--backend=cuda` in production; here a wrapper around the CPU one that can refuse to save
// sessions or lose its device).
#include "worker/shard_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/device_error.h"
#include "common/status_macros.h"
#include "model/weights.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/block_storage.h"
#include "worker/model_shard.h"
#include "worker/worker_core.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

worker::MemoryConfig QllmMemory() {
  MemoryConfig m;
  m.mode = AttentionMode::kQllm;
  m.n_init = 4;
  m.n_local = 16;
  m.block_size = 4;
  m.topk = 2;
  m.repr_topk = 2;
  m.exc_block_size = 8;
  m.max_cached_block = 4;
  return m;
}

class ShardBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    qllm::testing::WriteTinyModel(dir_, qllm::testing::TinyModelSpec{});
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<int32_t> Tokens(int n) const {
    std::vector<int32_t> ids(n);
    for (int i = 0; i < n; ++i) ids[i] = (i * 7 + 3) % 64;
    return ids;
  }

  std::string dir_;
};

// The CPU backend gives the CPU engine's activations, logits and selections bit for bit, and
// its sessions save and restore through it.
TEST_F(ShardBackendTest, CpuBackendIsTheCpuEngine) {
  ASSERT_OK_AND_ASSIGN(model::ModelWeights weights, model::LoadWeights(dir_));
  const ModelShard shard(weights);
  std::unique_ptr<ShardBackend> backend = NewCpuShardBackend(std::make_unique<ModelShard>(weights));
  EXPECT_EQ(backend->name(), "cpu");
  EXPECT_EQ(backend->layer_begin(), 0);
  EXPECT_EQ(backend->layer_end(), 3);
  EXPECT_TRUE(backend->has_embedding());
  EXPECT_TRUE(backend->has_head());
  EXPECT_OK(backend->CanSaveSessions());

  InMemoryBlockStorage storage_a, storage_b;
  SessionOptions options;
  options.memory = QllmMemory();
  options.question = QuestionSpan{1, 5};
  options.record_selections = true;
  options.session_id = 9;
  options.storage = &storage_a;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ShardSession> direct, shard.NewSession(options));
  options.storage = &storage_b;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ShardState> state, backend->NewSession(options));

  const int64_t hidden = weights.config.hidden_size, vocab = weights.config.vocab_size;
  const std::vector<int32_t> ids = Tokens(60);
  std::vector<float> h1(ids.size() * hidden), h2(ids.size() * hidden);
  ASSERT_OK(shard.Embed(ids, h1.data()));
  ASSERT_OK(backend->Embed(ids, h2.data()));
  EXPECT_EQ(h1, h2);
  ASSERT_OK(shard.Forward(direct.get(), h1.data(), static_cast<int64_t>(ids.size())));
  ASSERT_OK(backend->Forward(state.get(), h2.data(), static_cast<int64_t>(ids.size())));
  EXPECT_EQ(h1, h2);
  EXPECT_EQ(state->position(), 60);
  ASSERT_EQ(state->selections().size(), direct->selections().size());
  ASSERT_FALSE(state->selections().empty());
  for (size_t i = 0; i < state->selections().size(); ++i) {
    EXPECT_EQ(state->selections()[i].blocks, direct->selections()[i].blocks) << i;
  }
  std::vector<float> l1(vocab), l2(vocab);
  ASSERT_OK(shard.Logits(h1.data() + 59 * hidden, 1, l1.data()));
  ASSERT_OK(backend->Logits(h2.data() + 59 * hidden, 1, l2.data()));
  EXPECT_EQ(l1, l2);

  ASSERT_OK_AND_ASSIGN(std::vector<std::string> blobs, backend->SaveSession(*state));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> direct_blobs, shard.SaveSession(*direct));
  EXPECT_EQ(blobs, direct_blobs);
  options.question = QuestionSpan{60, 64};
  options.late_question = true;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ShardState> restored,
                       backend->RestoreSession(options, blobs));
  EXPECT_EQ(restored->position(), 60);

  // Bad input keeps the engine's precise errors.
  EXPECT_THAT(backend->Embed(std::vector<int32_t>{64}, h2.data()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.memory.mode = AttentionMode::kQllm;
  options.question.reset();
  EXPECT_THAT(backend->NewSession(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("question")));
}

// A backend as the factory makes it: the CPU backend, optionally refusing to save sessions
// (ShardBackend::CanSaveSessions, for backends that cannot) or failing its next Forward with a
// lost device.
class WrappedBackend final : public ShardBackend {
 public:
  WrappedBackend(std::unique_ptr<ShardBackend> inner, bool can_save,
                 std::shared_ptr<std::atomic<bool>> lose_device)
      : inner_(std::move(inner)), can_save_(can_save), lose_device_(std::move(lose_device)) {}

  std::string_view name() const override { return "wrapped"; }
  const model::ModelConfig& config() const override { return inner_->config(); }
  int32_t layer_begin() const override { return inner_->layer_begin(); }
  int32_t layer_end() const override { return inner_->layer_end(); }
  bool has_embedding() const override { return inner_->has_embedding(); }
  bool has_head() const override { return inner_->has_head(); }
  absl::Status CanSaveSessions() const override {
    return can_save_ ? absl::OkStatus() : absl::UnimplementedError("this backend cannot save");
  }
  absl::StatusOr<std::unique_ptr<ShardState>> NewSession(
      const SessionOptions& options) const override {
    return inner_->NewSession(options);
  }
  absl::StatusOr<std::vector<std::string>> SaveSession(const ShardState& state) const override {
    RETURN_IF_ERROR(CanSaveSessions());
    if (lose_device_ != nullptr && lose_device_->load()) {
      return InLayer(1, DeviceLostError("cudaMemcpy: an illegal memory access was encountered"));
    }
    return inner_->SaveSession(state);
  }
  absl::StatusOr<std::unique_ptr<ShardState>> RestoreSession(
      const SessionOptions& options, std::span<const std::string> blobs) const override {
    RETURN_IF_ERROR(CanSaveSessions());
    return inner_->RestoreSession(options, blobs);
  }
  absl::Status Embed(std::span<const int32_t> tokens, float* hidden) const override {
    return inner_->Embed(tokens, hidden);
  }
  absl::Status Forward(ShardState* state, float* hidden, int64_t n) const override {
    if (lose_device_ != nullptr && lose_device_->load()) {
      // As a device backend reports it: with the layer where it happened.
      return InLayer(2, DeviceLostError("an illegal memory access was encountered"));
    }
    return inner_->Forward(state, hidden, n);
  }
  absl::Status Logits(const float* hidden, int64_t rows, float* logits) const override {
    return inner_->Logits(hidden, rows, logits);
  }

 private:
  const std::unique_ptr<ShardBackend> inner_;
  const bool can_save_;
  const std::shared_ptr<std::atomic<bool>> lose_device_;
};

Activations Chunk(uint64_t session, int64_t position, std::vector<int32_t> ids) {
  Activations a;
  a.session_id = session;
  a.position = position;
  a.tokens = static_cast<int32_t>(ids.size());
  a.ids = std::move(ids);
  return a;
}

TEST_F(ShardBackendTest, WorkerCoreRunsTheFactorysBackend) {
  const ShardSpec spec{dir_, 0, 3, true, true};
  // The default (CPU) worker, for the expected logits.
  WorkerCore cpu(WorkerOptions{});
  ASSERT_OK(cpu.LoadShard(spec).status());
  ASSERT_OK(cpu.OpenSession({.session_id = 1}));
  Activations want = Chunk(1, 0, Tokens(20));
  ASSERT_OK(cpu.RunChunk(&want));

  WorkerOptions options;
  int made = 0;
  ShardSpec seen_layers;
  options.backend_factory = [&](model::ModelWeights weights) {
    ++made;
    seen_layers = {"", weights.layer_begin, weights.layer_end, weights.has_embedding(),
                   weights.has_head()};
    return absl::StatusOr<std::unique_ptr<ShardBackend>>(std::make_unique<WrappedBackend>(
        NewCpuShardBackend(std::make_unique<ModelShard>(std::move(weights))), true, nullptr));
  };
  WorkerCore core(options);
  EXPECT_EQ(core.backend_name(), "");
  ASSERT_OK(core.LoadShard(spec).status());
  ASSERT_OK(core.LoadShard(spec).status());  // Idempotent: the backend is made once.
  EXPECT_EQ(core.backend_name(), "wrapped");
  EXPECT_EQ(made, 1);
  EXPECT_EQ(seen_layers, (ShardSpec{"", 0, 3, true, true}));
  ASSERT_OK(core.OpenSession({.session_id = 1}));
  Activations got = Chunk(1, 0, Tokens(20));
  ASSERT_OK(core.RunChunk(&got));
  EXPECT_EQ(got.logits, want.logits);
}

TEST_F(ShardBackendTest, AFactoryErrorFailsTheLoadAndALostDeviceMarksTheWorker) {
  const ShardSpec spec{dir_, 0, 3, true, true};
  WorkerOptions options;
  options.backend_factory =
      [](model::ModelWeights) -> absl::StatusOr<std::unique_ptr<ShardBackend>> {
    return absl::InvalidArgumentError("cuda shard: no CUDA device is visible to this process");
  };
  WorkerCore refused(options);
  EXPECT_THAT(refused.LoadShard(spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no CUDA device")));
  EXPECT_OK(refused.health());
  EXPECT_FALSE(refused.shard().has_value());

  options.backend_factory =
      [](model::ModelWeights) -> absl::StatusOr<std::unique_ptr<ShardBackend>> {
    return DeviceLostError("cudaMalloc: unspecified launch failure");
  };
  WorkerCore lost(options);
  EXPECT_THAT(lost.LoadShard(spec).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(lost.health(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("launch failure")));

  // A device lost in the middle of serving.
  auto lose = std::make_shared<std::atomic<bool>>(false);
  options.backend_factory = [lose](model::ModelWeights weights) {
    return absl::StatusOr<std::unique_ptr<ShardBackend>>(std::make_unique<WrappedBackend>(
        NewCpuShardBackend(std::make_unique<ModelShard>(std::move(weights))), true, lose));
  };
  WorkerCore serving(options);
  ASSERT_OK(serving.LoadShard(spec).status());
  ASSERT_OK(serving.OpenSession({.session_id = 1}));
  Activations a = Chunk(1, 0, Tokens(4));
  ASSERT_OK(serving.RunChunk(&a));
  lose->store(true);
  Activations b = Chunk(1, 4, Tokens(4));
  EXPECT_THAT(serving.RunChunk(&b), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(serving.health(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_OK(serving.CloseSession(1));  // Closing still works.
}

TEST(AnnotateStatus, AddsContextAndKeepsTheCodeAndTheDeviceLostMark) {
  EXPECT_OK(AnnotateStatus(absl::OkStatus(), "layer 3"));
  const absl::Status lost = InLayer(3, DeviceLostError("cudaErrorIllegalAddress"));
  EXPECT_TRUE(IsDeviceLost(lost));
  EXPECT_THAT(lost, StatusIs(absl::StatusCode::kUnavailable, "layer 3: cudaErrorIllegalAddress"));
  const absl::Status plain = AnnotateStatus(absl::InvalidArgumentError("bad"), "piece 2");
  EXPECT_FALSE(IsDeviceLost(plain));
  EXPECT_THAT(plain, StatusIs(absl::StatusCode::kInvalidArgument, "piece 2: bad"));
}

// A device lost while a document is saved marks the worker too.
TEST_F(ShardBackendTest, ALostDeviceWhileSavingADocumentMarksTheWorker) {
  WorkerOptions options;
  options.store_dir = absl::StrCat(dir_, "/store");
  auto lose = std::make_shared<std::atomic<bool>>(false);
  options.backend_factory = [lose](model::ModelWeights weights) {
    return absl::StatusOr<std::unique_ptr<ShardBackend>>(std::make_unique<WrappedBackend>(
        NewCpuShardBackend(std::make_unique<ModelShard>(std::move(weights))), true, lose));
  };
  WorkerCore core(options);
  ASSERT_OK(core.LoadShard({dir_, 0, 3, true, true}).status());
  SessionSpec ingest{.session_id = 1, .memory = QllmMemory(), .question = QuestionSpan{0, 4}};
  ingest.ingest_document_key = 42;
  ASSERT_OK(core.OpenSession(ingest));
  Activations a = Chunk(1, 0, Tokens(8));
  ASSERT_OK(core.RunChunk(&a));
  lose->store(true);
  EXPECT_THAT(core.PersistDocument(1, 42),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("layer 1: cudaMemcpy")));
  EXPECT_THAT(core.health(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("illegal")));
}

// A backend that cannot save sessions refuses document ingests and restores up front, before
// any prefill, and serves plain sessions as usual.
TEST_F(ShardBackendTest, ABackendThatCannotSaveRefusesDocumentsUpFront) {
  const std::string store = absl::StrCat(dir_, "/store");
  WorkerOptions options;
  options.store_dir = store;
  options.backend_factory = [](model::ModelWeights weights) {
    return absl::StatusOr<std::unique_ptr<ShardBackend>>(std::make_unique<WrappedBackend>(
        NewCpuShardBackend(std::make_unique<ModelShard>(std::move(weights))), false, nullptr));
  };
  WorkerCore core(options);
  ASSERT_OK(core.LoadShard({dir_, 0, 3, true, true}).status());
  SessionSpec ingest{.session_id = 1, .memory = QllmMemory(), .question = QuestionSpan{0, 4}};
  ingest.ingest_document_key = 42;
  EXPECT_THAT(core.OpenSession(ingest),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("cannot save")));
  EXPECT_TRUE(core.ListDocuments().empty());  // Nothing was begun in the store.
  EXPECT_THAT(core.RestoreDocument(42, {.session_id = 2}).status(),
              StatusIs(absl::StatusCode::kUnimplemented));
  ASSERT_OK(core.OpenSession({.session_id = 3}));
  Activations a = Chunk(3, 0, Tokens(8));
  EXPECT_OK(core.RunChunk(&a));
  EXPECT_OK(core.health());
}

}  // namespace
}  // namespace qllm::worker
