// Shared checks of LayerMemoryEngine (cuda/layer_memory_engine.h) against the engine's CPU
// context memory worker::LayerMemory, run over the host backend in every build
// (tests/unit/cuda/host_layer_memory_test.cc) and over the device backend where there is a GPU
// (tests/gpu/device_layer_memory_gpu_test.cc).
//
// `Io` moves arrays to and from the backend's memory:
//   float* Upload(const std::vector<float>&)      (the array lives as long as the Io)
//   float* Alloc(size_t count)
//   std::vector<float> Download(const float*, size_t count)   (waits for the stream)
//   const double* inv_freq()                       (RopeInverseFrequencies of kParityShape)
//   Stream stream()
#ifndef QLLM_TESTS_TESTUTIL_LAYER_MEMORY_PARITY_H_
#define QLLM_TESTS_TESTUTIL_LAYER_MEMORY_PARITY_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/layer_memory_engine.h"
#include "cuda/rope.h"
#include "tests/testutil/status_matchers.h"
#include "worker/block_storage.h"
#include "worker/context_memory.h"
#include "worker/memory_config.h"

namespace qllm::testing {

inline constexpr worker::LayerShape kParityShape{.heads = 6, .kv_heads = 2, .head_dim = 16};
inline constexpr int64_t kParityQDim = 6 * 16, kParityKvDim = 2 * 16;
inline constexpr int64_t kParityWidth = kParityQDim + 2 * kParityKvDim;

inline worker::MemoryConfig ParityConfig(worker::AttentionMode mode) {
  worker::MemoryConfig c;
  c.mode = mode;
  c.n_init = 4;
  c.n_local = 32;
  c.block_size = 8;
  c.topk = 3;
  c.repr_topk = 2;
  c.exc_block_size = 16;
  c.question_weight = 4.0f;
  c.max_cached_block = 4;  // Tiered mode: topk 3 of ~33 blocks, so most chunks miss.
  return c;
}

// RopeInverseFrequencies of kParityShape.
inline std::vector<double> ParityInvFreq() {
  return cuda::RopeInverseFrequencies({.head_dim = kParityShape.head_dim, .theta = 10000.0});
}

// `tokens` rows of N(0, 1) projections (q, k, v per row, kParityWidth floats).
inline std::vector<float> RandomProjections(int64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> qkv(tokens * kParityWidth);
  for (float& x : qkv) x = normal(rng);
  return qkv;
}

struct MemoryCase {
  std::string name;
  worker::AttentionMode mode = worker::AttentionMode::kQllm;
  std::optional<worker::QuestionSpan> question;
  bool late_question = false;
  // The engine's tiered mode: blocks in an InMemoryBlockStorage, a cache of 4 blocks (topk 3,
  // so most chunks miss and evict).
  bool tiered = false;
  // Tiered: LayerMemoryEngineOptions::overlap_loads (the split attention, or one joint call).
  bool overlap = true;
};

inline void PrintTo(const MemoryCase& c, std::ostream* os) { *os << c.name; }

// qllm with an early and a late question, infllm, both tiered (qllm also without the overlap),
// streaming.
inline std::vector<MemoryCase> ParityCases() {
  return {
      MemoryCase{.name = "QllmEarlyQuestion", .question = worker::QuestionSpan{2, 9}},
      MemoryCase{.name = "QllmLateQuestion",
                 .question = worker::QuestionSpan{150, 161},
                 .late_question = true},
      MemoryCase{.name = "Infllm", .mode = worker::AttentionMode::kInfLlm},
      MemoryCase{.name = "QllmTiered", .question = worker::QuestionSpan{2, 9}, .tiered = true},
      MemoryCase{.name = "InfllmTiered", .mode = worker::AttentionMode::kInfLlm, .tiered = true},
      MemoryCase{.name = "QllmTieredNoOverlap",
                 .question = worker::QuestionSpan{2, 9},
                 .tiered = true,
                 .overlap = false},
      MemoryCase{.name = "Streaming", .mode = worker::AttentionMode::kStreaming}};
}

// Chunk sizes in [1, exc] summing to `tokens`.
inline std::vector<int64_t> ParityChunkSizes(int64_t tokens, int64_t exc, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> d(1, exc);
  std::vector<int64_t> sizes;
  for (int64_t done = 0; done < tokens;) {
    const int64_t n = std::min(d(rng), tokens - done);
    sizes.push_back(n);
    done += n;
  }
  return sizes;
}

// |a - b| <= atol + rtol * |a| elementwise (NaN never matches), with the first mismatch named.
inline ::testing::AssertionResult Near(std::span<const float> want, std::span<const float> got,
                                       double atol, double rtol) {
  if (want.size() != got.size()) {
    return ::testing::AssertionFailure() << "sizes " << want.size() << " vs " << got.size();
  }
  for (size_t i = 0; i < want.size(); ++i) {
    const double diff = std::abs(static_cast<double>(want[i]) - got[i]);
    if (!(diff <= atol + rtol * std::abs(static_cast<double>(want[i])))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": want " << want[i] << ", got " << got[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// The same random projections through worker::LayerMemory and Engine in chunks of varied size:
// per chunk, outputs within `tolerance` (absolute and relative), the same selected blocks and
// block starts, scores within `tolerance`, the same counts; the question vectors at the end.
template <typename Engine, typename Io>
void ExpectMatchesLayerMemory(const MemoryCase& c, Io* io, double tolerance) {
  const worker::MemoryConfig config = ParityConfig(c.mode);
  constexpr int64_t kTokens = 300;  // About 33 blocks of 8 beyond sinks and window.
  const std::vector<float> qkv = RandomProjections(kTokens, 7);
  const std::vector<double> inv_freq = ParityInvFreq();

  worker::InMemoryBlockStorage storage;
  worker::LayerMemory cpu(config, kParityShape, /*layer=*/1, /*session=*/5, c.question,
                          c.late_question, &storage, inv_freq.data());
  worker::InMemoryBlockStorage tier;
  // Room for 4 representative vectors at first: the ~33 blocks grow the array three times.
  cuda::LayerMemoryEngineOptions options{.max_blocks = 64, .initial_repr_blocks = 4};
  if (c.tiered) {
    options.storage = &tier;
    options.session = 9;
    options.overlap_loads = c.overlap;
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> eng,
                       Engine::Create(config, kParityShape, 1, c.question, c.late_question,
                                      io->inv_freq(), io->stream(), options));
  const float* d_qkv = io->Upload(qkv);
  float* d_out = io->Alloc(config.exc_block_size * kParityQDim);

  int64_t start = 0, chunks_with_blocks = 0;
  for (int64_t n : ParityChunkSizes(kTokens, config.exc_block_size, 3)) {
    SCOPED_TRACE(::testing::Message() << "chunk at " << start << " of " << n << " tokens");
    std::vector<float> want(n * kParityQDim);
    std::vector<worker::ChunkSelection> cpu_sel, eng_sel;
    ASSERT_OK(cpu.Process(qkv.data() + start * kParityWidth, kParityWidth, n, start, want.data(),
                          &cpu_sel));
    ASSERT_OK(eng->Process(d_qkv + start * kParityWidth, kParityWidth, n, start, d_out, &eng_sel));
    const std::vector<float> got = io->Download(d_out, n * kParityQDim);
    EXPECT_TRUE(Near(want, got, tolerance, tolerance));

    ASSERT_EQ(cpu_sel.size(), 1u);
    ASSERT_EQ(eng_sel.size(), 1u);
    EXPECT_EQ(eng_sel[0].layer, cpu_sel[0].layer);
    EXPECT_EQ(eng_sel[0].chunk_begin, cpu_sel[0].chunk_begin);
    EXPECT_EQ(eng_sel[0].chunk_end, cpu_sel[0].chunk_end);
    EXPECT_EQ(eng_sel[0].candidates, cpu_sel[0].candidates);
    EXPECT_EQ(eng_sel[0].blocks, cpu_sel[0].blocks);
    EXPECT_EQ(eng_sel[0].block_starts, cpu_sel[0].block_starts);
    EXPECT_TRUE(Near(cpu_sel[0].scores, eng_sel[0].scores, tolerance, tolerance));
    chunks_with_blocks += cpu_sel[0].blocks.empty() ? 0 : 1;

    EXPECT_EQ(eng->tokens(), cpu.tokens());
    EXPECT_EQ(eng->num_blocks(), cpu.num_blocks());
    EXPECT_EQ(eng->init_size(), cpu.init_size());
    EXPECT_EQ(eng->pending_size(), cpu.pending_size());
    EXPECT_EQ(eng->has_question_vector(), cpu.has_question_vector());
    start += n;
  }
  EXPECT_GT(cpu.num_blocks(), 25);
  EXPECT_EQ(tier.num_blocks(), c.tiered ? static_cast<size_t>(cpu.num_blocks()) : 0u);
  if (c.mode == worker::AttentionMode::kStreaming) {
    EXPECT_EQ(chunks_with_blocks, 0);
  } else {
    EXPECT_GT(chunks_with_blocks, 10);
  }
  if (c.question.has_value()) {
    ASSERT_TRUE(cpu.has_question_vector());
    ASSERT_OK_AND_ASSIGN(std::vector<float> q, eng->QuestionVector());
    EXPECT_TRUE(Near(cpu.question_vector(), q, tolerance, tolerance));
  } else {
    EXPECT_THAT(eng->QuestionVector(), StatusIs(absl::StatusCode::kFailedPrecondition));
  }
}

// Argument errors leave the memory untouched; a full block pool is RESOURCE_EXHAUSTED; Reset()
// starts over.
template <typename Engine, typename Io>
void ExpectRejectsBadArgumentsAndAFullPool(Io* io) {
  const worker::MemoryConfig config = ParityConfig(worker::AttentionMode::kInfLlm);
  worker::MemoryConfig full = config;
  full.mode = worker::AttentionMode::kFull;
  EXPECT_THAT(
      Engine::Create(full, kParityShape, 0, std::nullopt, false, io->inv_freq(), io->stream()),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Engine::Create(config, {.heads = 6, .kv_heads = 4, .head_dim = 16}, 0, std::nullopt,
                             false, io->inv_freq(), io->stream()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Engine::Create(config, kParityShape, 0, worker::QuestionSpan{5, 5}, false,
                             io->inv_freq(), io->stream()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Engine::Create(config, kParityShape, 0, std::nullopt, false, nullptr, io->stream()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  worker::InMemoryBlockStorage tier;
  worker::MemoryConfig small_cache = config;
  small_cache.max_cached_block = config.topk - 1;  // A chunk's selection would not fit.
  EXPECT_THAT(Engine::Create(small_cache, kParityShape, 0, std::nullopt, false, io->inv_freq(),
                             io->stream(), {.storage = &tier}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Engine::Create(config, kParityShape, 0, std::nullopt, false, io->inv_freq(),
                             io->stream(), {.initial_repr_blocks = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> eng,
                       Engine::Create(config, kParityShape, 0, std::nullopt, false, io->inv_freq(),
                                      io->stream(), {.max_blocks = 2}));
  constexpr int64_t kTokens = 80;
  const float* qkv = io->Upload(std::vector<float>(kTokens * kParityWidth, 0.5f));
  float* out = io->Alloc(16 * kParityQDim);
  EXPECT_THAT(eng->Process(qkv, kParityWidth, 17, 0, out, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(eng->Process(qkv, kParityWidth - 1, 4, 0, out, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(eng->Process(qkv, kParityWidth, 4, 3, out, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(eng->Process(nullptr, kParityWidth, 4, 0, out, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(eng->tokens(), 0);
  // Sinks 4 + window 32 + 2 blocks of 8 hold 52 tokens; the chunk ending at 64 cuts a third
  // block, which the pool of 2 cannot take.
  absl::Status s;
  int64_t start = 0;
  while (start < kTokens && s.ok()) {
    s = eng->Process(qkv + start * kParityWidth, kParityWidth, 16, start, out, nullptr);
    start += 16;
  }
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(start, 64);
  EXPECT_EQ(eng->num_blocks(), 2);
  EXPECT_OK(eng->Reset());
  EXPECT_EQ(eng->tokens(), 0);
  EXPECT_EQ(eng->num_blocks(), 0);
  EXPECT_OK(eng->Process(qkv, kParityWidth, 16, 0, out, nullptr));
  EXPECT_EQ(eng->tokens(), 16);
  io->Download(out, 16 * kParityQDim);

  // Tiered: Reset deletes the session's blocks from the storage.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> tiered,
                       Engine::Create(config, kParityShape, 0, std::nullopt, false, io->inv_freq(),
                                      io->stream(), {.storage = &tier, .session = 3}));
  for (start = 0; start < kTokens; start += 16) {
    ASSERT_OK(tiered->Process(qkv + start * kParityWidth, kParityWidth, 16, start, out, nullptr));
  }
  // 80 tokens: 4 sinks, 5 blocks of 8, 36 pending (a block is cut once 8 + 32 are pending).
  EXPECT_EQ(tiered->num_blocks(), 5);
  EXPECT_EQ(tiered->pending_size(), 36);
  EXPECT_EQ(tier.num_blocks(), 5u);
  EXPECT_OK(tiered->Reset());
  EXPECT_EQ(tier.num_blocks(), 0u);
  EXPECT_OK(tiered->Process(qkv, kParityWidth, 16, 0, out, nullptr));
  io->Download(out, 16 * kParityQDim);
}

// Saved states travel both ways: a worker::LayerMemory saves after 150 tokens, the engine (tiered,
// same storage) loads it and both continue to 300 tokens with equal outputs and selections
// (restored blocks read under their saved owner); then the engine saves, a fresh LayerMemory
// loads that, and it continues to 400 tokens as the first one does. Plus the refusals.
template <typename Engine, typename Io>
void ExpectSaveLoadInteroperates(Io* io, double tolerance) {
  const worker::MemoryConfig config = ParityConfig(worker::AttentionMode::kQllm);
  const worker::QuestionSpan question{2, 9};
  constexpr int64_t kTokens = 400;
  const std::vector<float> qkv = RandomProjections(kTokens, 11);
  const std::vector<double> inv_freq = ParityInvFreq();

  worker::InMemoryBlockStorage storage;
  worker::LayerMemory cpu(config, kParityShape, 1, /*session=*/5, question, false, &storage,
                          inv_freq.data());
  const float* d_qkv = io->Upload(qkv);
  float* d_out = io->Alloc(config.exc_block_size * kParityQDim);
  std::vector<float> scratch(config.exc_block_size * kParityQDim);
  auto run_cpu = [&](worker::LayerMemory* m, int64_t begin, int64_t end, std::vector<float>* outs) {
    for (int64_t s = begin; s < end; s += 16) {
      const int64_t n = std::min<int64_t>(16, end - s);
      ASSERT_OK(
          m->Process(qkv.data() + s * kParityWidth, kParityWidth, n, s, scratch.data(), nullptr));
      outs->insert(outs->end(), scratch.begin(), scratch.begin() + n * kParityQDim);
    }
  };
  std::vector<float> cpu_out, eng_out, cpu_tail, b_tail;
  ASSERT_NO_FATAL_FAILURE(run_cpu(&cpu, 0, 150, &cpu_out));
  std::string blob;
  ASSERT_OK(cpu.Save(&blob));
  ASSERT_GT(cpu.num_blocks(), 10);

  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Engine> eng,
      Engine::Create(config, kParityShape, 1, question, false, io->inv_freq(), io->stream(),
                     {.initial_repr_blocks = 2, .storage = &storage, .session = 9}));
  ASSERT_OK(eng->Load(blob));  // Grows the representative vectors from 2 to the blocks' count.
  EXPECT_EQ(eng->tokens(), 150);
  EXPECT_EQ(eng->num_blocks(), cpu.num_blocks());
  EXPECT_TRUE(eng->has_question_vector());
  EXPECT_THAT(eng->Load(blob), StatusIs(absl::StatusCode::kFailedPrecondition));
  cpu_out.clear();
  ASSERT_NO_FATAL_FAILURE(run_cpu(&cpu, 150, 300, &cpu_out));
  for (int64_t s = 150; s < 300; s += 16) {
    const int64_t n = std::min<int64_t>(16, 300 - s);
    std::vector<worker::ChunkSelection> sel;
    ASSERT_OK(eng->Process(d_qkv + s * kParityWidth, kParityWidth, n, s, d_out, &sel));
    const std::vector<float> got = io->Download(d_out, n * kParityQDim);
    eng_out.insert(eng_out.end(), got.begin(), got.end());
  }
  EXPECT_TRUE(Near(cpu_out, eng_out, tolerance, tolerance));

  std::string eng_blob;
  ASSERT_OK(eng->Save(&eng_blob));
  worker::LayerMemory restored(config, kParityShape, 1, /*session=*/11, question, false, &storage,
                               inv_freq.data());
  ASSERT_OK(restored.Load(eng_blob));
  EXPECT_EQ(restored.tokens(), 300);
  EXPECT_EQ(restored.num_blocks(), cpu.num_blocks());
  ASSERT_NO_FATAL_FAILURE(run_cpu(&cpu, 300, kTokens, &cpu_tail));
  ASSERT_NO_FATAL_FAILURE(run_cpu(&restored, 300, kTokens, &b_tail));
  EXPECT_TRUE(Near(cpu_tail, b_tail, 10 * tolerance, 10 * tolerance));

  // Refusals: a pool-mode memory neither saves nor loads blocks; garbage is DATA_LOSS.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> pool,
                       Engine::Create(config, kParityShape, 1, question, false, io->inv_freq(),
                                      io->stream(), {.max_blocks = 64}));
  EXPECT_THAT(pool->Load(blob), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(pool->Load("not a state"), StatusIs(absl::StatusCode::kDataLoss));
  for (int64_t s = 0; s < 100; s += 16) {
    ASSERT_OK(pool->Process(d_qkv + s * kParityWidth, kParityWidth, 16, s, d_out, nullptr));
  }
  EXPECT_THAT(pool->Save(&eng_blob), StatusIs(absl::StatusCode::kFailedPrecondition));
  io->Download(d_out, kParityQDim);
}

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_LAYER_MEMORY_PARITY_H_
