// GPU parity of the worker's CUDA backend (cuda/device_shard.h) with its CPU backend
// (worker/shard_backend.h): a random bf16 checkpoint split into two stages on the device, fed
// the same tokens as the whole model on the CPU, in full attention and in the memory modes;
// several sessions interleaved; the errors; and a WorkerCore running on the device. The tests
// skip themselves without a device. Tolerances as in device_model_gpu_test.cc, whose
// derivation applies unchanged: the backend runs the layers through the same code
// (cuda/device_layers.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "cuda/device_shard.h"
#include "model/weights.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/block_storage.h"
#include "worker/memory_config.h"
#include "worker/model_shard.h"
#include "worker/shard_backend.h"
#include "worker/worker_core.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::AllClose;
using ::qllm::testing::ArgmaxAgreement;
using ::qllm::testing::MaxAbs;
using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kLogitTolerance = 0.03;  // Max |device - cpu| / logit scale.
constexpr double kMinArgmaxAgreement = 0.95;
constexpr double kMinSameSelections = 0.9;

constexpr int kTokens = 240, kFirst = 150;

worker::MemoryConfig Memory(worker::AttentionMode mode) {
  worker::MemoryConfig m;
  m.mode = mode;
  if (mode == worker::AttentionMode::kFull) return m;
  m.n_init = 4;
  m.n_local = 32;
  m.block_size = 8;
  m.topk = 3;
  m.repr_topk = 2;
  m.exc_block_size = 16;
  m.max_cached_block = 4;
  return m;
}

class DeviceShardGpuTest : public ::testing::TestWithParam<worker::AttentionMode> {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    dir_ = qllm::testing::MakeScratchDir();
    // GQA 3 (6 heads, 2 KV heads, head_dim 16), untied head, odd intermediate and vocab.
    qllm::testing::WriteTinyModel(dir_, {.hidden = 96,
                                         .intermediate = 150,
                                         .layers = 3,
                                         .heads = 6,
                                         .kv_heads = 2,
                                         .vocab = 301,
                                         .tied = false,
                                         .dtype = "BF16"});
    std::mt19937 rng(5);
    std::uniform_int_distribution<int32_t> d(0, 300);
    ids_.resize(kTokens);
    for (int32_t& id : ids_) id = d(rng);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Layers [begin, end) with the embedding on the first stage and the head on the last; the
  // projections halved (exact in bf16) to tame the random network, as device_model_gpu_test.
  absl::StatusOr<model::ModelWeights> Weights(int begin, int end) const {
    model::LoadOptions o;
    o.layer_begin = begin;
    o.layer_end = end;
    o.load_embedding = begin == 0;
    o.load_head = end == 3;
    ASSIGN_OR_RETURN(model::ModelWeights w, model::LoadWeights(dir_, o));
    for (model::LayerWeights& l : w.layers) {
      for (std::vector<float>* m : {&l.wqkv, &l.wo, &l.w13, &l.w2}) {
        for (float& x : *m) x *= 0.5f;
      }
    }
    return w;
  }

  worker::SessionOptions Options(worker::BlockStorage* storage, uint64_t id) const {
    worker::SessionOptions o;
    o.memory = Memory(GetParam());
    if (GetParam() != worker::AttentionMode::kFull) o.question = worker::QuestionSpan{1, 9};
    o.storage = storage;
    o.session_id = id;
    o.record_selections = true;
    return o;
  }

  // Runs ids_ in two calls through `stages` (first embeds, last has the head) with one state
  // per stage; returns all logits and appends every stage's selections to `selections`.
  static absl::StatusOr<std::vector<float>> Run(std::span<const worker::ShardBackend* const> stages,
                                                std::span<worker::ShardState* const> states,
                                                std::span<const int32_t> ids) {
    const int64_t hidden = stages[0]->config().hidden_size;
    const int64_t vocab = stages[0]->config().vocab_size;
    std::vector<float> logits(ids.size() * vocab);
    const std::pair<int, int> calls[] = {{0, kFirst}, {kFirst, kTokens - kFirst}};
    for (const auto& [begin, len] : calls) {
      std::vector<float> h(len * hidden);
      RETURN_IF_ERROR(stages[0]->Embed(ids.subspan(begin, len), h.data()));
      for (size_t i = 0; i < stages.size(); ++i) {
        RETURN_IF_ERROR(stages[i]->Forward(states[i], h.data(), len));
      }
      RETURN_IF_ERROR(stages.back()->Logits(h.data(), len, logits.data() + begin * vocab));
    }
    return logits;
  }

  std::string dir_;
  std::vector<int32_t> ids_;
};

TEST_P(DeviceShardGpuTest, TwoDeviceStagesMatchTheCpuEngine) {
  ASSERT_OK_AND_ASSIGN(model::ModelWeights all, Weights(0, 3));
  std::unique_ptr<worker::ShardBackend> cpu =
      worker::NewCpuShardBackend(std::make_unique<worker::ModelShard>(all));
  ASSERT_OK_AND_ASSIGN(model::ModelWeights w0, Weights(0, 2));
  ASSERT_OK_AND_ASSIGN(model::ModelWeights w1, Weights(2, 3));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> dev0,
                       NewCudaShardBackend(w0, {.max_tokens = 512, .max_chunk = 64}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> dev1,
                       NewCudaShardBackend(w1, {.max_tokens = 512, .max_chunk = 64}));
  EXPECT_EQ(dev0->name(), "cuda");
  EXPECT_TRUE(dev0->has_embedding());
  EXPECT_FALSE(dev0->has_head());
  EXPECT_EQ(dev1->layer_begin(), 2);
  EXPECT_TRUE(dev1->has_head());

  worker::InMemoryBlockStorage cpu_storage, dev_storage;
  ASSERT_OK_AND_ASSIGN(auto cpu_state, cpu->NewSession(Options(&cpu_storage, 7)));
  ASSERT_OK_AND_ASSIGN(auto s0, dev0->NewSession(Options(&dev_storage, 7)));
  ASSERT_OK_AND_ASSIGN(auto s1, dev1->NewSession(Options(&dev_storage, 7)));
  const worker::ShardBackend* cpu_stages[] = {cpu.get()};
  worker::ShardState* cpu_states[] = {cpu_state.get()};
  ASSERT_OK_AND_ASSIGN(std::vector<float> want, Run(cpu_stages, cpu_states, ids_));
  const worker::ShardBackend* dev_stages[] = {dev0.get(), dev1.get()};
  worker::ShardState* dev_states[] = {s0.get(), s1.get()};
  ASSERT_OK_AND_ASSIGN(std::vector<float> got, Run(dev_stages, dev_states, ids_));
  EXPECT_EQ(s0->position(), kTokens);
  EXPECT_EQ(s1->position(), kTokens);

  const double scale = MaxAbs(want);
  ASSERT_GT(scale, 0.0);
  EXPECT_TRUE(AllClose(want, got, kLogitTolerance * scale, 0.0));
  const int agree = ArgmaxAgreement(want, got, all.config.vocab_size);
  EXPECT_GE(agree, kMinArgmaxAgreement * kTokens) << agree << " of " << kTokens;

  // Selections: the CPU's layers 0..2 against stage 0's layers 0..1 then stage 1's layer 2.
  std::vector<worker::ChunkSelection> dev_sel = s0->selections();
  dev_sel.insert(dev_sel.end(), s1->selections().begin(), s1->selections().end());
  const std::vector<worker::ChunkSelection>& cpu_sel = cpu_state->selections();
  ASSERT_EQ(dev_sel.size(), cpu_sel.size());
  if (GetParam() == worker::AttentionMode::kFull) {
    EXPECT_TRUE(cpu_sel.empty());
    return;
  }
  std::sort(dev_sel.begin(), dev_sel.end(), [](const auto& a, const auto& b) {
    return std::pair(a.chunk_begin, a.layer) < std::pair(b.chunk_begin, b.layer);
  });
  std::vector<worker::ChunkSelection> cpu_sorted = cpu_sel;
  std::sort(cpu_sorted.begin(), cpu_sorted.end(), [](const auto& a, const auto& b) {
    return std::pair(a.chunk_begin, a.layer) < std::pair(b.chunk_begin, b.layer);
  });
  int same = 0;
  for (size_t i = 0; i < cpu_sorted.size(); ++i) {
    EXPECT_EQ(dev_sel[i].layer, cpu_sorted[i].layer);
    EXPECT_EQ(dev_sel[i].chunk_begin, cpu_sorted[i].chunk_begin);
    same += dev_sel[i].blocks == cpu_sorted[i].blocks ? 1 : 0;
  }
  EXPECT_GE(same, kMinSameSelections * static_cast<double>(cpu_sorted.size()))
      << same << " of " << cpu_sorted.size();
}

// Sessions share the device's weights and buffers but not their state: two sessions fed in
// alternation give what each gives alone.
TEST_P(DeviceShardGpuTest, InterleavedSessionsKeepTheirOwnState) {
  ASSERT_OK_AND_ASSIGN(model::ModelWeights all, Weights(0, 3));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> dev,
                       NewCudaShardBackend(all, {.max_tokens = 512, .max_chunk = 64}));
  const int64_t hidden = all.config.hidden_size, vocab = all.config.vocab_size;
  std::vector<int32_t> other(ids_.rbegin(), ids_.rend());
  worker::InMemoryBlockStorage storage;

  auto solo = [&](std::span<const int32_t> ids, uint64_t id) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(auto state, dev->NewSession(Options(&storage, id)));
    const worker::ShardBackend* stages[] = {dev.get()};
    worker::ShardState* states[] = {state.get()};
    return Run(stages, states, ids);
  };
  ASSERT_OK_AND_ASSIGN(std::vector<float> want_a, solo(ids_, 1));
  ASSERT_OK_AND_ASSIGN(std::vector<float> want_b, solo(other, 2));

  ASSERT_OK_AND_ASSIGN(auto a, dev->NewSession(Options(&storage, 3)));
  ASSERT_OK_AND_ASSIGN(auto b, dev->NewSession(Options(&storage, 4)));
  std::vector<float> got_a(kTokens * vocab), got_b(kTokens * vocab);
  // The calls of Run (the same execution chunks), alternating between the sessions.
  for (const auto& [begin, len] : {std::pair{0, kFirst}, std::pair{kFirst, kTokens - kFirst}}) {
    for (auto [state, ids, out] : {std::tuple{a.get(), std::span<const int32_t>(ids_), &got_a},
                                   std::tuple{b.get(), std::span<const int32_t>(other), &got_b}}) {
      std::vector<float> h(len * hidden);
      ASSERT_OK(dev->Embed(ids.subspan(begin, len), h.data()));
      ASSERT_OK(dev->Forward(state, h.data(), len));
      ASSERT_OK(dev->Logits(h.data(), len, out->data() + begin * vocab));
    }
  }
  const double scale = MaxAbs(want_a);
  // The same computation on the same device: far below what a shared or stale state does.
  const double tol = 1e-3;
  EXPECT_TRUE(AllClose(want_a, got_a, tol * scale, 0.0));
  EXPECT_TRUE(AllClose(want_b, got_b, tol * scale, 0.0));
}

// A session saved on one backend restores on the other (both write the CPU engine's blobs;
// the memories' blocks stay in the shared block storage) and goes on as if never moved: the
// second call's logits after a move either way match the CPU engine's uninterrupted session.
TEST_P(DeviceShardGpuTest, SavedSessionsMoveBetweenBackends) {
  ASSERT_OK_AND_ASSIGN(model::ModelWeights all, Weights(0, 3));
  std::unique_ptr<worker::ShardBackend> cpu =
      worker::NewCpuShardBackend(std::make_unique<worker::ModelShard>(all));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> dev,
                       NewCudaShardBackend(all, {.max_tokens = 512, .max_chunk = 64}));
  const int64_t hidden = all.config.hidden_size, vocab = all.config.vocab_size;
  const int tail = kTokens - kFirst;
  const std::span<const int32_t> ids(ids_);
  worker::InMemoryBlockStorage storage;

  // Runs `len` tokens from `begin` through one whole-model backend; returns the logits.
  auto step = [&](const worker::ShardBackend& b, worker::ShardState* state, int begin,
                  int len) -> absl::StatusOr<std::vector<float>> {
    std::vector<float> h(len * hidden), logits(len * vocab);
    RETURN_IF_ERROR(b.Embed(ids.subspan(begin, len), h.data()));
    RETURN_IF_ERROR(b.Forward(state, h.data(), len));
    RETURN_IF_ERROR(b.Logits(h.data(), len, logits.data()));
    return logits;
  };
  // The restored sessions' options: a question, if any, is asked after the document.
  worker::SessionOptions restore = Options(&storage, 20);
  if (GetParam() != worker::AttentionMode::kFull) {
    restore.question = worker::QuestionSpan{kTokens, kTokens + 4};
    restore.late_question = true;
  }

  ASSERT_OK_AND_ASSIGN(auto cpu_state, cpu->NewSession(Options(&storage, 1)));
  ASSERT_OK(step(*cpu, cpu_state.get(), 0, kFirst).status());
  ASSERT_OK_AND_ASSIGN(auto dev_state, dev->NewSession(Options(&storage, 2)));
  ASSERT_OK(step(*dev, dev_state.get(), 0, kFirst).status());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> cpu_blobs, cpu->SaveSession(*cpu_state));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> dev_blobs, dev->SaveSession(*dev_state));
  ASSERT_OK_AND_ASSIGN(std::vector<float> want, step(*cpu, cpu_state.get(), kFirst, tail));

  ASSERT_OK_AND_ASSIGN(auto on_dev, dev->RestoreSession(restore, cpu_blobs));
  EXPECT_EQ(on_dev->position(), kFirst);
  ASSERT_OK_AND_ASSIGN(std::vector<float> cpu_to_dev, step(*dev, on_dev.get(), kFirst, tail));
  restore.session_id = 21;
  ASSERT_OK_AND_ASSIGN(auto on_cpu, cpu->RestoreSession(restore, dev_blobs));
  EXPECT_EQ(on_cpu->position(), kFirst);
  ASSERT_OK_AND_ASSIGN(std::vector<float> dev_to_cpu, step(*cpu, on_cpu.get(), kFirst, tail));

  const double scale = MaxAbs(want);
  ASSERT_GT(scale, 0.0);
  EXPECT_TRUE(AllClose(want, cpu_to_dev, kLogitTolerance * scale, 0.0));
  EXPECT_TRUE(AllClose(want, dev_to_cpu, kLogitTolerance * scale, 0.0));

  // Damaged or mismatched blobs get the CPU engine's errors.
  std::vector<std::string> damaged = cpu_blobs;
  damaged[1][0] = 'X';
  EXPECT_THAT(dev->RestoreSession(restore, damaged).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("layer 1")));
  EXPECT_THAT(dev->RestoreSession(restore, std::span(cpu_blobs).first(2)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(Modes, DeviceShardGpuTest,
                         ::testing::Values(worker::AttentionMode::kFull,
                                           worker::AttentionMode::kInfLlm,
                                           worker::AttentionMode::kQllm),
                         [](const ::testing::TestParamInfo<worker::AttentionMode>& info) {
                           return std::string(worker::AttentionModeName(info.param));
                         });

TEST(DeviceShardGpuErrorsTest, BadInputGetsPreciseErrors) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string dir = qllm::testing::MakeScratchDir();
  qllm::testing::WriteTinyModel(dir, {});
  ASSERT_OK_AND_ASSIGN(model::ModelWeights weights, model::LoadWeights(dir));
  std::filesystem::remove_all(dir);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> dev,
                       NewCudaShardBackend(weights, {.max_tokens = 32, .max_chunk = 16}));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<worker::ShardBackend> other,
                       NewCudaShardBackend(weights, {.max_tokens = 32, .max_chunk = 16}));
  const int64_t hidden = weights.config.hidden_size;
  std::vector<float> h(40 * hidden);

  EXPECT_THAT(dev->Embed(std::vector<int32_t>{1, 64}, h.data()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 64")));
  EXPECT_THAT(NewCudaShardBackend(weights, {.device = 99}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CUDA device 99")));
  EXPECT_OK(dev->CanSaveSessions());

  worker::InMemoryBlockStorage storage;
  worker::SessionOptions memory;
  memory.memory = Memory(worker::AttentionMode::kInfLlm);
  memory.memory.exc_block_size = 32;  // Above max_chunk 16.
  memory.storage = &storage;
  EXPECT_THAT(dev->NewSession(memory).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exc_block_size 32")));
  memory.storage = nullptr;
  EXPECT_THAT(dev->NewSession(memory).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("block storage")));

  ASSERT_OK_AND_ASSIGN(auto full, dev->NewSession({}));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> empty, dev->SaveSession(*full));
  EXPECT_EQ(empty.size(), static_cast<size_t>(weights.config.num_layers));  // Position 0.
  EXPECT_THAT(dev->RestoreSession({}, std::vector<std::string>(empty.size(), "junk")).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_OK(dev->Embed(std::vector<int32_t>(30, 3), h.data()));
  ASSERT_OK(dev->Forward(full.get(), h.data(), 30));
  EXPECT_THAT(dev->Forward(full.get(), h.data(), 3),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit of 32")));
  EXPECT_EQ(full->position(), 30);  // Unchanged; the session still works.
  ASSERT_OK(dev->Forward(full.get(), h.data(), 2));
  EXPECT_THAT(other->Forward(full.get(), h.data(), 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not belong")));
}

// A document ingested by a WorkerCore on the device is stored in its memory store and asked
// from a CPU WorkerCore over the same store afterwards, as a CPU ingest would be.
TEST(DeviceShardGpuWorkerTest, ADocumentIngestedOnTheDeviceIsAskedOnTheCpu) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string dir = qllm::testing::MakeScratchDir();
  qllm::testing::WriteTinyModel(dir, {.dtype = "BF16"});
  const worker::ShardSpec spec{dir, 0, 3, true, true};
  worker::MemoryConfig memory = Memory(worker::AttentionMode::kQllm);
  std::vector<int32_t> doc;
  for (int t = 0; t < 120; ++t) doc.push_back((t * 13 + 5) % 64);
  worker::WorkerOptions options;
  options.store_dir = dir + "/store";
  {
    options.backend_factory = [](model::ModelWeights weights) {
      return NewCudaShardBackend(weights, {});
    };
    worker::WorkerCore dev(options);
    ASSERT_OK(dev.LoadShard(spec).status());
    worker::SessionSpec ingest{
        .session_id = 1, .memory = memory, .question = worker::QuestionSpan{0, 4}};
    ingest.ingest_document_key = 9;
    ASSERT_OK(dev.OpenSession(ingest));
    worker::Activations a;
    a.session_id = 1;
    a.tokens = static_cast<int32_t>(doc.size());
    a.ids = doc;
    ASSERT_OK(dev.RunChunk(&a));
    ASSERT_OK(dev.PersistDocument(1, 9));
    ASSERT_OK(dev.CloseSession(1));
  }
  options.backend_factory = nullptr;  // The CPU engine, same store.
  worker::WorkerCore cpu(options);
  ASSERT_OK(cpu.LoadShard(spec).status());
  worker::SessionSpec ask{.session_id = 2,
                          .memory = memory,
                          .question = worker::QuestionSpan{120, 124},
                          .late_question = true};
  ASSERT_OK_AND_ASSIGN(const int64_t tokens, cpu.RestoreDocument(9, ask));
  EXPECT_EQ(tokens, 120);
  worker::Activations q;
  q.session_id = 2;
  q.position = 120;
  q.tokens = 4;
  q.ids = {1, 2, 3, 4};
  ASSERT_OK(cpu.RunChunk(&q));
  EXPECT_EQ(q.logits.size(), 64u);
  std::filesystem::remove_all(dir);
}

// A WorkerCore whose factory makes the CUDA backend answers like the CPU worker.
TEST(DeviceShardGpuWorkerTest, WorkerCoreOnTheDeviceMatchesTheCpuWorker) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  const std::string dir = qllm::testing::MakeScratchDir();
  qllm::testing::WriteTinyModel(dir, {.dtype = "BF16"});
  const worker::ShardSpec spec{dir, 0, 3, true, true};
  worker::WorkerCore cpu(worker::WorkerOptions{});
  worker::WorkerOptions options;
  options.backend_factory = [](model::ModelWeights weights) {
    return NewCudaShardBackend(weights, {});
  };
  worker::WorkerCore dev(options);
  ASSERT_OK(cpu.LoadShard(spec).status());
  ASSERT_OK(dev.LoadShard(spec).status());
  std::vector<float> logits[2];
  int i = 0;
  for (worker::WorkerCore* core : {&cpu, &dev}) {
    ASSERT_OK(core->OpenSession({.session_id = 5}));
    worker::Activations a;
    a.session_id = 5;
    a.tokens = 24;
    a.all_logits = true;
    for (int t = 0; t < 24; ++t) a.ids.push_back((t * 11 + 2) % 64);
    ASSERT_OK(core->RunChunk(&a));
    logits[i++] = a.logits;
  }
  std::filesystem::remove_all(dir);
  const double scale = MaxAbs(logits[0]);
  ASSERT_GT(scale, 0.0);
  // A check of the wiring (the numerics are the tests above): this checkpoint's projections are
  // not tamed, so bf16 rounding moves its logits more; a wrong layer range, a missing stage or
  // garbage moves them by the whole scale.
  EXPECT_TRUE(AllClose(logits[0], logits[1], 0.1 * scale, 0.0));
}

}  // namespace
}  // namespace qllm::cuda
