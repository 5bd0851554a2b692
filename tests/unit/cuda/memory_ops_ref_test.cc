// The CPU twins of cuda/memory_ops.h: hand-computed cases (rank order and ties of TopMean,
// GQA head mapping, invalid gather ids) and argument validation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda/memory_ops.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

TEST(CopyRowsRef, CopiesStridedRows) {
  const std::vector<float> src = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // [3, 3]
  std::vector<float> dst(3 * 2, 0.0f);                         // [3, 2]
  ASSERT_OK(CopyRowsRef({.src = src.data() + 1,
                         .dst = dst.data(),
                         .rows = 3,
                         .cols = 2,
                         .src_stride = 3,
                         .dst_stride = 2}));
  EXPECT_THAT(dst, ElementsAre(2, 3, 5, 6, 8, 9));
  EXPECT_THAT(CopyRowsRef({.src = src.data(),
                           .dst = dst.data(),
                           .rows = 1,
                           .cols = 3,
                           .src_stride = 3,
                           .dst_stride = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CopyRowsRef({.rows = 1, .cols = 1, .src_stride = 1, .dst_stride = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_OK(CopyRowsRef({.rows = 0, .cols = 4, .src_stride = 4, .dst_stride = 4}));
}

TEST(FillPositionsRef, ArithmeticSequence) {
  std::vector<int64_t> out(4);
  ASSERT_OK(FillPositionsRef({.out = out.data(), .n = 4, .first = 10, .step = 3}));
  EXPECT_THAT(out, ElementsAre(10, 13, 16, 19));
  ASSERT_OK(FillPositionsRef({.out = out.data(), .n = 2, .first = -5, .step = 0}));
  EXPECT_THAT(out, ElementsAre(-5, -5, 16, 19));
  EXPECT_THAT(FillPositionsRef({.out = nullptr, .n = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MeanRowsRef, MeanOfStridedRows) {
  const std::vector<float> x = {1, 2, 100, 3, 6, 100};  // two rows of stride 3, dim 2
  std::vector<float> out(2);
  ASSERT_OK(MeanRowsRef({.x = x.data(), .out = out.data(), .rows = 2, .dim = 2, .stride = 3}));
  EXPECT_THAT(out, ElementsAre(2.0f, 4.0f));
  EXPECT_THAT(MeanRowsRef({.x = x.data(), .out = out.data(), .rows = 0, .dim = 2, .stride = 3}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// 4 rows, 2 heads sharing one vector head (group 2), head_dim 2. Head 0's scores pick rows 2
// and 0 (row 3 ties row 0 and loses to the lower index); head 1's pick rows 1 and 3.
TEST(TopMeanRef, MeansTheTopRowsPerHeadWithTiesToTheLowerRow) {
  const std::vector<float> scores = {
      5, 0,  // row 0
      1, 9,  // row 1
      7, 2,  // row 2
      5, 8,  // row 3
  };
  const std::vector<float> vectors = {10, 20, 30, 40, 50, 60, 70, 80};  // [4, 2]
  std::vector<float> out(4);
  TopMeanParams p{.scores = scores.data(),
                  .vectors = vectors.data(),
                  .out = out.data(),
                  .rows = 4,
                  .heads = 2,
                  .group = 2,
                  .head_dim = 2,
                  .k = 2,
                  .score_stride = 2,
                  .vector_stride = 2};
  ASSERT_OK(TopMeanRef(p));
  EXPECT_THAT(out,
              ElementsAre((50 + 10) / 2.0f, (60 + 20) / 2.0f, (30 + 70) / 2.0f, (40 + 80) / 2.0f));
  // k above rows averages every row.
  p.k = 9;
  ASSERT_OK(TopMeanRef(p));
  EXPECT_THAT(out, ElementsAre(40, 50, 40, 50));
  // group 1: head h reads vector columns [h * head_dim, (h + 1) * head_dim).
  const std::vector<float> wide = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  p.vectors = wide.data();
  p.vector_stride = 4;
  p.group = 1;
  p.k = 1;
  ASSERT_OK(TopMeanRef(p));
  EXPECT_THAT(out, ElementsAre(9, 10, 7, 8));  // head 0: row 2; head 1: row 1
  p.group = 3;
  EXPECT_THAT(TopMeanRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p.group = 1;
  p.vector_stride = 3;
  EXPECT_THAT(TopMeanRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GatherBlocksRef, CopiesBlocksByIdAndZerosInvalidIds) {
  const std::vector<float> pool_k = {1, 2, 3, 4, 5, 6};  // 3 blocks of 2
  const std::vector<float> pool_v = {-1, -2, -3, -4, -5, -6};
  const std::vector<int32_t> ids = {2, 0, 7};
  std::vector<float> k(6, 9.0f), v(6, 9.0f);
  ASSERT_OK(GatherBlocksRef({.ids = ids.data(),
                             .pool_k = pool_k.data(),
                             .pool_v = pool_v.data(),
                             .dst_k = k.data(),
                             .dst_v = v.data(),
                             .count = 3,
                             .num_blocks = 3,
                             .block_elems = 2}));
  EXPECT_THAT(k, ElementsAreArray({5, 6, 1, 2, 0, 0}));
  EXPECT_THAT(v, ElementsAreArray({-5, -6, -1, -2, 0, 0}));
  EXPECT_THAT(GatherBlocksRef({.count = 1, .num_blocks = 3, .block_elems = 2}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(GatherBlocksRef({.count = 0, .num_blocks = 3, .block_elems = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
