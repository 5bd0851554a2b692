// LaunchMemoryAttention and the SGEMM path MemoryAttentionGemm (cuda/memory_attention_gemm.h)
// against their CPU twin MemoryAttentionRef over a sweep of shapes (head
// dims incl. an odd 40, decode and chunks, windows up to 512 keys, up to 1000 global keys
// with some pending-global positions), outputs and accumulated local scores, the split
// attention of the tiered memory (two parts, LaunchMergeAttention, the local scores from the
// merged statistics) on both paths, plus the determinism of the local-score pass and the
// launcher's validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/device.h"
#include "cuda/memory_attention.h"
#include "cuda/memory_attention_gemm.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::AllClose;
using ::qllm::testing::StatusIs;

struct Shape {
  int64_t n, num_local, num_global, n_local, heads, kv_heads, head_dim;
  int64_t num_far;  // Global keys with real positions (pending tokens), the first num_far.
};

// Host inputs. The local window holds positions [first, first + L); the queries are its last
// n positions (the chunk's own tokens are in the window, as in the engine); the far global
// keys are the window's first num_far tokens.
struct Problem {
  Shape s;
  int64_t start = 0, local_first = 1000;
  std::vector<float> q_local, q_global, local_k, local_v, global_k, global_v, scores;
  std::vector<int64_t> global_pos;

  MemoryAttentionParams Host(float* out, float* local_scores) const {
    return {.q_local = q_local.data(),
            .q_global = q_global.data(),
            .local_k = local_k.data(),
            .local_v = local_v.data(),
            .global_k = global_k.data(),
            .global_v = global_v.data(),
            .global_pos = global_pos.data(),
            .out = out,
            .local_scores = local_scores,
            .n = s.n,
            .start = start,
            .num_local = s.num_local,
            .local_first = local_first,
            .num_global = s.num_global,
            .n_local = s.n_local,
            .heads = s.heads,
            .kv_heads = s.kv_heads,
            .head_dim = s.head_dim,
            .scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.head_dim)))};
  }
};

Problem MakeProblem(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.0f, 2.0f);
  auto fill = [&](std::vector<float>* v, int64_t size) {
    v->resize(size);
    for (float& x : *v) x = normal(rng);
  };
  Problem p{.s = s};
  const int64_t q_dim = s.heads * s.head_dim, kv_dim = s.kv_heads * s.head_dim;
  p.start = p.local_first + std::max<int64_t>(0, s.num_local - s.n);
  fill(&p.q_local, s.n * q_dim);
  fill(&p.q_global, s.n * q_dim);
  fill(&p.local_k, s.num_local * kv_dim);
  fill(&p.local_v, s.num_local * kv_dim);
  fill(&p.global_k, s.num_global * kv_dim);
  fill(&p.global_v, s.num_global * kv_dim);
  p.scores.resize(s.num_local * s.heads);
  for (float& x : p.scores) x = uniform(rng);  // Scores of earlier chunks.
  p.global_pos.assign(s.num_global, kAlwaysVisible);
  for (int64_t g = 0; g < std::min(s.num_far, s.num_global); ++g) {
    p.global_pos[g] = p.local_first + g;
  }
  return p;
}

class MemoryAttentionGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_OK_AND_ASSIGN(stream_, CudaStream::Create());
  }

  // Runs the device op on `pr`; returns out and the accumulated local scores.
  // The scalar kernel (LaunchMemoryAttention), or with `gemm` the SGEMM path
  // (cuda/memory_attention_gemm.h). With `cut` >= 0, as a split attention
  // (cuda/memory_attention.h): part A the local keys and global keys [0, cut), part B the
  // rest, merged (LaunchMergeAttention), then the local scores from the merged statistics;
  // `stats`, when set, receives the merged row statistics.
  void Device(const Problem& pr, std::vector<float>* out, std::vector<float>* scores,
              bool gemm = false, int64_t cut = -1, std::vector<float>* stats = nullptr) {
    auto upload = [&](const auto& host) {
      using T = typename std::decay_t<decltype(host)>::value_type;
      absl::StatusOr<DeviceBuffer<T>> buf = DeviceBuffer<T>::Create(host.size());
      if (buf.ok() && !host.empty()) {
        absl::Status s = buf->Upload(host, stream_.get());
        if (!s.ok()) return absl::StatusOr<DeviceBuffer<T>>(s);
      }
      return buf;
    };
    ASSERT_OK_AND_ASSIGN(auto d_ql, upload(pr.q_local));
    ASSERT_OK_AND_ASSIGN(auto d_qg, upload(pr.q_global));
    ASSERT_OK_AND_ASSIGN(auto d_lk, upload(pr.local_k));
    ASSERT_OK_AND_ASSIGN(auto d_lv, upload(pr.local_v));
    ASSERT_OK_AND_ASSIGN(auto d_gk, upload(pr.global_k));
    ASSERT_OK_AND_ASSIGN(auto d_gv, upload(pr.global_v));
    ASSERT_OK_AND_ASSIGN(auto d_pos, upload(pr.global_pos));
    ASSERT_OK_AND_ASSIGN(auto d_scores, upload(pr.scores));
    ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(pr.q_local.size()));
    MemoryAttentionParams p = pr.Host(d_out.data(), d_scores.data());
    p.q_local = d_ql.data();
    p.q_global = d_qg.data();
    p.local_k = d_lk.data();
    p.local_v = d_lv.data();
    p.global_k = d_gk.data();
    p.global_v = d_gv.data();
    p.global_pos = d_pos.data();
    const size_t ws_bytes = MemoryAttentionWorkspaceBytes(p);
    ASSERT_OK_AND_ASSIGN(auto d_ws, DeviceBuffer<char>::Create(ws_bytes));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<MemoryAttentionGemm> g, MemoryAttentionGemm::Create());
    auto attend = [&](const MemoryAttentionParams& q) {
      return gemm ? g->Launch(q, stream_.get())
                  : LaunchMemoryAttention(q, d_ws.data(), ws_bytes, stream_.get());
    };
    if (cut < 0) {
      ASSERT_OK(attend(p));
    } else {
      const int64_t rows = pr.s.n * pr.s.heads;
      ASSERT_OK_AND_ASSIGN(auto d_stats, DeviceBuffer<float>::Create(2 * rows));
      ASSERT_OK_AND_ASSIGN(auto d_stats_b, DeviceBuffer<float>::Create(2 * rows));
      ASSERT_OK_AND_ASSIGN(auto d_out_b, DeviceBuffer<float>::Create(pr.q_local.size()));
      MemoryAttentionParams a = p;
      a.local_scores = nullptr;
      a.num_global = cut;
      a.row_stats = d_stats.data();
      ASSERT_OK(attend(a));
      MemoryAttentionParams b = a;
      b.local_k = b.local_v = nullptr;
      b.num_local = 0;
      b.global_k += cut * pr.s.kv_heads * pr.s.head_dim;
      b.global_v += cut * pr.s.kv_heads * pr.s.head_dim;
      b.global_pos += cut;
      b.num_global = pr.s.num_global - cut;
      b.out = d_out_b.data();
      b.row_stats = d_stats_b.data();
      ASSERT_OK(attend(b));
      ASSERT_OK(LaunchMergeAttention({.out = a.out,
                                      .stats = a.row_stats,
                                      .out_b = b.out,
                                      .stats_b = b.row_stats,
                                      .n = pr.s.n,
                                      .heads = pr.s.heads,
                                      .head_dim = pr.s.head_dim},
                                     stream_.get()));
      a.local_scores = d_scores.data();
      ASSERT_OK(gemm ? g->LaunchLocalScores(a, stream_.get())
                     : LaunchMemoryAttentionLocalScores(a, stream_.get()));
      if (stats != nullptr) {
        ASSERT_OK_AND_ASSIGN(*stats, d_stats.ToHost(stream_.get()));
      }
      ASSERT_OK(stream_.Synchronize());  // Before the statistics go away.
    }
    ASSERT_OK(stream_.Synchronize());  // Before g (and its workspace) goes away.
    ASSERT_OK_AND_ASSIGN(*out, d_out.ToHost(stream_.get()));
    ASSERT_OK_AND_ASSIGN(*scores, d_scores.ToHost(stream_.get()));
  }

  CudaStream stream_;
};

// `stats`, when set, receives the row statistics.
void Ref(const Problem& pr, std::vector<float>* out, std::vector<float>* scores,
         std::vector<float>* stats = nullptr) {
  out->assign(pr.q_local.size(), 0.0f);
  *scores = pr.scores;
  MemoryAttentionParams p = pr.Host(out->data(), scores->data());
  if (stats != nullptr) {
    stats->assign(2 * pr.s.n * pr.s.heads, 0.0f);
    p.row_stats = stats->data();
  }
  ASSERT_OK(MemoryAttentionRef(p));
}

class MemoryAttentionPathTest : public MemoryAttentionGpuTest,
                                public ::testing::WithParamInterface<bool> {};

TEST_P(MemoryAttentionPathTest, MatchesRefOverShapes) {
  uint32_t seed = 1;
  for (int64_t d : {32, 40, 64, 128}) {
    for (int64_t n : {1, 7, 64}) {
      const Shape shapes[] = {
          {n, 512, 1000, 256, 6, 2, d, 200},  // Long window, pending-global keys.
          {n, 100, 0, 64, 6, 2, d, 0},        // No global keys.
          {n, 37, 1, 16, 8, 8, d, 1},         // Odd sizes, no GQA.
          {n, 200, 333, 512, 32, 8, d, 0},    // Llama-3 heads, everything within the window.
      };
      for (const Shape& s : shapes) {
        SCOPED_TRACE(absl::StrCat("D ", d, " n ", n, " L ", s.num_local, " Ng ", s.num_global,
                                  " n_local ", s.n_local, " H ", s.heads, " Hkv ", s.kv_heads));
        const Problem pr = MakeProblem(s, seed++);
        std::vector<float> want_out, want_scores, out, scores;
        ASSERT_NO_FATAL_FAILURE(Ref(pr, &want_out, &want_scores));
        ASSERT_NO_FATAL_FAILURE(Device(pr, &out, &scores, GetParam()));
        EXPECT_TRUE(AllClose(want_out, out, 1e-5, 1e-4));
        EXPECT_TRUE(AllClose(want_scores, scores, 1e-5, 1e-4));
      }
    }
  }
}

// The tiered memory's split attention: parts merged on the device give the joint attention.
TEST_P(MemoryAttentionPathTest, SplitAttentionMatchesTheJointRef) {
  uint32_t seed = 500;
  for (int64_t n : {1, 7, 64}) {
    const Shape shapes[] = {
        {n, 512, 1000, 256, 6, 2, 128, 200},  // Pending-global keys in part A.
        {n, 37, 9, 16, 8, 8, 40, 9},          // Odd sizes, every global key far.
        {n, 200, 333, 512, 32, 8, 128, 0},    // Llama-3 heads.
        {n, 64, 100, 32, 4, 2, 256, 10},      // The largest head_dim.
    };
    for (const Shape& s : shapes) {
      for (int64_t cut : {int64_t{0}, s.num_global / 3, s.num_global}) {
        SCOPED_TRACE(absl::StrCat("n ", n, " L ", s.num_local, " Ng ", s.num_global, " cut ", cut,
                                  " H ", s.heads, " D ", s.head_dim));
        const Problem pr = MakeProblem(s, seed++);
        std::vector<float> want_out, want_scores, want_stats, out, scores, stats;
        ASSERT_NO_FATAL_FAILURE(Ref(pr, &want_out, &want_scores, &want_stats));
        ASSERT_NO_FATAL_FAILURE(Device(pr, &out, &scores, GetParam(), cut, &stats));
        EXPECT_TRUE(AllClose(want_out, out, 1e-5, 1e-4));
        EXPECT_TRUE(AllClose(want_scores, scores, 1e-5, 1e-4));
        EXPECT_TRUE(AllClose(want_stats, stats, 1e-5, 1e-4));  // Every row sees a key.
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, MemoryAttentionPathTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Gemm") : std::string("Scalar");
                         });

TEST_F(MemoryAttentionGpuTest, QueriesWithoutVisibleKeysGetZero) {
  // The window lies after the queries and no global key is old enough.
  Problem pr = MakeProblem({4, 16, 5, 8, 6, 2, 64, 5}, 99);
  pr.start = pr.local_first - 10;
  std::vector<float> out, scores, stats;
  const int64_t rows = 4 * 6;
  for (bool gemm : {false, true}) {
    // Joint, then split with the global keys in part A, in part B, or in both.
    for (int64_t cut : {int64_t{-1}, int64_t{0}, int64_t{2}, int64_t{5}}) {
      SCOPED_TRACE(absl::StrCat(gemm ? "gemm" : "scalar", " cut ", cut));
      ASSERT_NO_FATAL_FAILURE(Device(pr, &out, &scores, gemm, cut, &stats));
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float x) { return x == 0.0f; }));
      EXPECT_EQ(scores, pr.scores);
      if (cut < 0) continue;
      for (int64_t r = 0; r < rows; ++r) {  // Merged statistics of empty rows: -inf and 0.
        EXPECT_TRUE(std::isinf(stats[r]) && stats[r] < 0) << "row " << r << ": " << stats[r];
        EXPECT_EQ(stats[rows + r], 0.0f) << "row " << r;
      }
    }
  }
}

TEST_F(MemoryAttentionGpuTest, LocalScoresAreDeterministic) {
  const Problem pr = MakeProblem({64, 512, 300, 128, 6, 2, 128, 100}, 7);
  std::vector<float> out1, scores1, out2, scores2;
  for (bool gemm : {false, true}) {
    ASSERT_NO_FATAL_FAILURE(Device(pr, &out1, &scores1, gemm));
    ASSERT_NO_FATAL_FAILURE(Device(pr, &out2, &scores2, gemm));
    EXPECT_EQ(out1, out2);
    EXPECT_EQ(scores1, scores2);
  }
}

// Validation and empty chunks never touch the device, so these run without a GPU too.
TEST(MemoryAttentionValidation, RejectsInvalidParamsAndSkipsEmptyChunks) {
  const float x = 0.0f;
  float y = 0.0f;
  MemoryAttentionParams p{.q_local = &x,
                          .q_global = &x,
                          .out = &y,
                          .n = 1,
                          .n_local = 4,
                          .heads = 1,
                          .kv_heads = 1,
                          .head_dim = kMemoryAttentionMaxHeadDim + 1};
  EXPECT_THAT(LaunchMemoryAttention(p, &y, 8, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  p.head_dim = 1;
  EXPECT_EQ(MemoryAttentionWorkspaceBytes(p), 2 * sizeof(float));
  EXPECT_THAT(LaunchMemoryAttention(p, nullptr, 8, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchMemoryAttention(p, &y, 7, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  p.kv_heads = 0;
  EXPECT_THAT(LaunchMemoryAttention(p, &y, 8, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  p.kv_heads = 1;
  // Split attention: the local scores need the joint statistics, the merge a full set.
  MemoryAttentionParams local = p;
  local.local_k = local.local_v = &x;
  local.num_local = 1;
  local.local_scores = &y;
  EXPECT_THAT(LaunchMemoryAttentionLocalScores(local, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      LaunchMergeAttention({.out = &y, .stats = &y, .n = 1, .heads = 1, .head_dim = 1}, nullptr),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(LaunchMergeAttention({.n = 0, .heads = 1, .head_dim = 1}, nullptr));
  p.n = 0;
  EXPECT_EQ(MemoryAttentionWorkspaceBytes(p), 0u);
  EXPECT_OK(LaunchMemoryAttention(p, nullptr, 0, nullptr));
  local.n = 0;
  EXPECT_OK(LaunchMemoryAttentionLocalScores(local, nullptr));
}

}  // namespace
}  // namespace qllm::cuda
