// LaunchBlockTopK against its CPU twin BlockTopKRef. Integer-valued inputs make every score
// exact in both (so ids, ties included, must match exactly); random inputs check the scores
// within fp32 rounding and the ids wherever the reference's scores are separated by more
// than that rounding.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/block_topk.h"
#include "cuda/device.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

struct Inputs {
  std::vector<float> reprs, qbar, question;
};

// Integer values in [-range, range] (exact products and sums in fp32 for these sizes), or
// N(0, 1) values when range == 0.
Inputs MakeInputs(int64_t num_blocks, int64_t q_dim, int range, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> ints(-range, range);
  std::normal_distribution<float> normal;
  auto fill = [&](std::vector<float>* v, size_t n) {
    v->resize(n);
    for (float& x : *v) x = range > 0 ? static_cast<float>(ints(rng)) : normal(rng);
  };
  Inputs in;
  fill(&in.reprs, num_blocks * q_dim);
  fill(&in.qbar, q_dim);
  fill(&in.question, q_dim);
  return in;
}

struct Selection {
  std::vector<int32_t> ids;
  std::vector<float> scores;
};

class BlockTopKGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_OK_AND_ASSIGN(stream_, CudaStream::Create());
  }

  // The reference selection for `p` (host pointers into `in`).
  static Selection Ref(BlockTopKParams p) {
    Selection s;
    s.ids.resize(p.selected());
    s.scores.resize(p.selected());
    p.ids = s.ids.data();
    p.scores = s.scores.data();
    EXPECT_OK(BlockTopKRef(p));
    return s;
  }

  // The device selection for the same problem, copied back through pinned memory.
  void Device(const Inputs& in, BlockTopKParams p, Selection* out) {
    ASSERT_OK_AND_ASSIGN(auto d_reprs, DeviceBuffer<float>::Create(in.reprs.size()));
    ASSERT_OK_AND_ASSIGN(auto d_qbar, DeviceBuffer<float>::Create(in.qbar.size()));
    ASSERT_OK_AND_ASSIGN(auto d_question, DeviceBuffer<float>::Create(in.question.size()));
    ASSERT_OK(d_reprs.Upload(in.reprs, stream()));
    ASSERT_OK(d_qbar.Upload(in.qbar, stream()));
    ASSERT_OK(d_question.Upload(in.question, stream()));
    const size_t k = static_cast<size_t>(p.selected());
    ASSERT_OK_AND_ASSIGN(auto d_ids, DeviceBuffer<int32_t>::Create(k));
    ASSERT_OK_AND_ASSIGN(auto d_scores, DeviceBuffer<float>::Create(k));
    ASSERT_OK_AND_ASSIGN(auto h_ids, PinnedHostBuffer<int32_t>::Create(k));
    ASSERT_OK_AND_ASSIGN(auto h_scores, PinnedHostBuffer<float>::Create(k));
    ASSERT_OK_AND_ASSIGN(const size_t ws_bytes, BlockTopKWorkspaceBytes(p.num_blocks));
    ASSERT_OK_AND_ASSIGN(auto d_ws, DeviceBuffer<char>::Create(ws_bytes));
    p.reprs = d_reprs.data();
    p.qbar = d_qbar.data();
    p.question = p.question != nullptr ? d_question.data() : nullptr;
    p.ids = d_ids.data();
    p.scores = d_scores.data();
    ASSERT_OK(LaunchBlockTopKToHost(p, d_ws.data(), d_ws.size(), h_ids.data(), h_scores.data(),
                                    stream()));
    ASSERT_OK(stream_.Synchronize());
    out->ids.assign(h_ids.data(), h_ids.data() + k);
    out->scores.assign(h_scores.data(), h_scores.data() + k);
  }

  Stream stream() const { return stream_.get(); }

  CudaStream stream_;
};

BlockTopKParams HostParams(const Inputs& in, int64_t num_blocks, int64_t q_dim, int64_t topk,
                           bool with_question, float w) {
  return {.reprs = in.reprs.data(),
          .qbar = in.qbar.data(),
          .question = with_question ? in.question.data() : nullptr,
          .question_weight = w,
          .num_blocks = num_blocks,
          .q_dim = q_dim,
          .topk = topk};
}

TEST_F(BlockTopKGpuTest, ExactScoresMatchRefIncludingTies) {
  struct Shape {
    int64_t num_blocks, q_dim;
  };
  // Small q_dim and range: many equal scores, so the tie rule decides most positions.
  for (Shape s : {Shape{1, 4}, {5, 3}, {64, 4}, {1000, 8}, {10007, 16}, {300, 4096}}) {
    for (int64_t topk : {1, 4, 16, 100}) {
      for (float w : {0.0f, 1.0f, 4.0f, 0.5f}) {
        SCOPED_TRACE(
            absl::StrCat("blocks ", s.num_blocks, " q_dim ", s.q_dim, " topk ", topk, " w ", w));
        const Inputs in = MakeInputs(s.num_blocks, s.q_dim, s.q_dim > 100 ? 2 : 1, 11);
        const BlockTopKParams p = HostParams(in, s.num_blocks, s.q_dim, topk, true, w);
        const Selection ref = Ref(p);
        Selection out;
        ASSERT_NO_FATAL_FAILURE(Device(in, p, &out));
        EXPECT_EQ(out.ids, ref.ids);
        EXPECT_EQ(out.scores, ref.scores);
      }
    }
  }
}

TEST_F(BlockTopKGpuTest, AllEqualScoresSelectTheLowestIds) {
  Inputs in;
  in.reprs.assign(50 * 8, 0.0f);  // Every score is 0 (some products are -0).
  in.qbar.assign(8, -1.0f);
  in.question.assign(8, 1.0f);
  Selection out;
  ASSERT_NO_FATAL_FAILURE(Device(in, HostParams(in, 50, 8, 6, true, 4.0f), &out));
  EXPECT_THAT(out.ids, ::testing::ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST_F(BlockTopKGpuTest, FewerBlocksThanTopkReturnsAllSorted) {
  const Inputs in = MakeInputs(3, 16, 3, 12);
  const BlockTopKParams p = HostParams(in, 3, 16, 8, true, 1.0f);
  ASSERT_EQ(p.selected(), 3);
  const Selection ref = Ref(p);
  Selection out;
  ASSERT_NO_FATAL_FAILURE(Device(in, p, &out));
  EXPECT_EQ(out.ids, ref.ids);
  EXPECT_EQ(out.scores, ref.scores);
}

TEST_F(BlockTopKGpuTest, RandomScoresMatchRefWithinRounding) {
  const int64_t num_blocks = 3000, q_dim = 4096;  // Llama-3-8B: 32 heads x 128.
  const Inputs in = MakeInputs(num_blocks, q_dim, 0, 13);
  for (bool with_question : {false, true}) {
    SCOPED_TRACE(absl::StrCat("with_question ", with_question));
    const BlockTopKParams p = HostParams(in, num_blocks, q_dim, 16, with_question, 4.0f);
    // Every block's reference score, by id.
    BlockTopKParams all = p;
    all.topk = num_blocks;
    const Selection ranked = Ref(all);
    std::vector<float> score_of(num_blocks);
    for (int64_t i = 0; i < num_blocks; ++i) score_of[ranked.ids[i]] = ranked.scores[i];
    Selection out;
    ASSERT_NO_FATAL_FAILURE(Device(in, p, &out));
    ASSERT_EQ(out.ids.size(), 16u);
    // fp32 dot products of length 4096 with N(0, 1) terms: rounding well below 1e-2
    // (scores are about sqrt(4096) * (1 + w) = 320 in magnitude).
    const float tol = 1e-2f;
    for (size_t i = 0; i < out.ids.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("rank ", i));
      EXPECT_NEAR(out.scores[i], score_of[out.ids[i]], tol);
      EXPECT_NEAR(out.scores[i], ranked.scores[i], tol);
      const bool separated = (i == 0 || ranked.scores[i - 1] - ranked.scores[i] > 2 * tol) &&
                             ranked.scores[i] - ranked.scores[i + 1] > 2 * tol;
      if (separated) {
        EXPECT_EQ(out.ids[i], ranked.ids[i]);
      }
    }
  }
}

TEST_F(BlockTopKGpuTest, SmallWorkspaceIsInvalidArgument) {
  const Inputs in = MakeInputs(100, 8, 1, 14);
  ASSERT_OK_AND_ASSIGN(auto d_reprs, DeviceBuffer<float>::Create(in.reprs.size()));
  ASSERT_OK_AND_ASSIGN(auto d_qbar, DeviceBuffer<float>::Create(8));
  ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(4));
  ASSERT_OK_AND_ASSIGN(auto d_ids, DeviceBuffer<int32_t>::Create(4));
  ASSERT_OK_AND_ASSIGN(const size_t bytes, BlockTopKWorkspaceBytes(100));
  ASSERT_OK_AND_ASSIGN(auto d_ws, DeviceBuffer<char>::Create(bytes));
  const BlockTopKParams p{.reprs = d_reprs.data(),
                          .qbar = d_qbar.data(),
                          .num_blocks = 100,
                          .q_dim = 8,
                          .topk = 4,
                          .ids = d_ids.data(),
                          .scores = d_out.data()};
  EXPECT_THAT(LaunchBlockTopK(p, d_ws.data(), bytes - 1, stream()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchBlockTopK(p, nullptr, bytes, stream()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Validation and empty selections never touch the device, so these run without a GPU too.
TEST(BlockTopKValidation, RejectsInvalidParamsAndSkipsEmptySelections) {
  EXPECT_THAT(LaunchBlockTopK(BlockTopKParams{}, nullptr, 0, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const float qbar = 1.0f;
  EXPECT_OK(LaunchBlockTopK({.qbar = &qbar, .num_blocks = 0, .q_dim = 1, .topk = 4}, nullptr, 0,
                            nullptr));
  EXPECT_OK(LaunchBlockTopKToHost({.reprs = &qbar, .qbar = &qbar, .num_blocks = 1, .q_dim = 1},
                                  nullptr, 0, nullptr, nullptr, nullptr));
  EXPECT_THAT(BlockTopKWorkspaceBytes(-1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BlockTopKWorkspaceBytes(0), ::qllm::testing::IsOkAndHolds(0u));
}

}  // namespace
}  // namespace qllm::cuda
