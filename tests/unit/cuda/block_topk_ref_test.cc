// BlockTopKRef (the CPU twin of the device retrieval step): scores, the tie rule (equal scores
// go to the lower block id), w = 0 and fewer blocks than topk.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/block_topk.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::ElementsAre;

struct Result {
  std::vector<int32_t> ids;
  std::vector<float> scores;
};

// Runs BlockTopKRef on R [rows.size(), q_dim] (rows given one per vector).
absl::StatusOr<Result> RunRef(const std::vector<std::vector<float>>& rows,
                              const std::vector<float>& qbar, const std::vector<float>* question,
                              float w, int64_t topk) {
  std::vector<float> reprs;
  for (const auto& r : rows) reprs.insert(reprs.end(), r.begin(), r.end());
  BlockTopKParams p{.reprs = reprs.data(),
                    .qbar = qbar.data(),
                    .question = question != nullptr ? question->data() : nullptr,
                    .question_weight = w,
                    .num_blocks = static_cast<int64_t>(rows.size()),
                    .q_dim = static_cast<int64_t>(qbar.size()),
                    .topk = topk};
  Result r;
  r.ids.resize(p.selected());
  r.scores.resize(p.selected());
  p.ids = r.ids.data();
  p.scores = r.scores.data();
  if (absl::Status s = BlockTopKRef(p); !s.ok()) return s;
  return r;
}

TEST(BlockTopKRef, EqualScoresGoToTheLowerBlockId) {
  // Scores (qbar = e0): 1, 3, 3, 2, 3, 2.
  const std::vector<std::vector<float>> rows = {{1, 9}, {3, -1}, {3, 0}, {2, 5}, {3, 7}, {2, 0}};
  const std::vector<float> qbar = {1, 0};
  ASSERT_OK_AND_ASSIGN(Result top3, RunRef(rows, qbar, nullptr, 0.0f, 3));
  EXPECT_THAT(top3.ids, ElementsAre(1, 2, 4));
  EXPECT_THAT(top3.scores, ElementsAre(3, 3, 3));
  ASSERT_OK_AND_ASSIGN(Result top5, RunRef(rows, qbar, nullptr, 0.0f, 5));
  EXPECT_THAT(top5.ids, ElementsAre(1, 2, 4, 3, 5));
  EXPECT_THAT(top5.scores, ElementsAre(3, 3, 3, 2, 2));
}

TEST(BlockTopKRef, AllScoresEqualSelectsTheFirstBlocks) {
  const std::vector<std::vector<float>> rows(7, std::vector<float>{0, 0, 0});
  ASSERT_OK_AND_ASSIGN(Result r, RunRef(rows, {1, -2, 3}, nullptr, 0.0f, 4));
  EXPECT_THAT(r.ids, ElementsAre(0, 1, 2, 3));
}

TEST(BlockTopKRef, QuestionTermIsWeighted) {
  // score = R.qbar + w R.Q with qbar = e0, Q = e1, w = 4: 1 + 4, 2 - 4, 0 + 8, 3 + 0.
  const std::vector<std::vector<float>> rows = {{1, 1}, {2, -1}, {0, 2}, {3, 0}};
  const std::vector<float> qbar = {1, 0}, question = {0, 1};
  ASSERT_OK_AND_ASSIGN(Result r, RunRef(rows, qbar, &question, 4.0f, 4));
  EXPECT_THAT(r.ids, ElementsAre(2, 0, 3, 1));
  EXPECT_THAT(r.scores, ElementsAre(8, 5, 3, -2));
}

TEST(BlockTopKRef, ZeroWeightIgnoresTheQuestion) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<std::vector<float>> rows(50, std::vector<float>(16));
  for (auto& row : rows) {
    for (float& x : row) x = d(rng);
  }
  std::vector<float> qbar(16);
  for (float& x : qbar) x = d(rng);
  // A question full of NaN proves the term is not computed at all when w == 0.
  const std::vector<float> question(16, std::numeric_limits<float>::quiet_NaN());
  ASSERT_OK_AND_ASSIGN(Result without, RunRef(rows, qbar, nullptr, 0.0f, 8));
  ASSERT_OK_AND_ASSIGN(Result with_w0, RunRef(rows, qbar, &question, 0.0f, 8));
  EXPECT_EQ(without.ids, with_w0.ids);
  EXPECT_EQ(without.scores, with_w0.scores);
  // A null question with w != 0 is the same as no question.
  ASSERT_OK_AND_ASSIGN(Result null_q, RunRef(rows, qbar, nullptr, 4.0f, 8));
  EXPECT_EQ(without.ids, null_q.ids);
}

TEST(BlockTopKRef, FewerBlocksThanTopkSelectsAll) {
  const std::vector<std::vector<float>> rows = {{1}, {-2}, {5}};
  ASSERT_OK_AND_ASSIGN(Result r, RunRef(rows, {1}, nullptr, 0.0f, 16));
  EXPECT_THAT(r.ids, ElementsAre(2, 0, 1));
  EXPECT_THAT(r.scores, ElementsAre(5, 1, -2));
  ASSERT_OK_AND_ASSIGN(Result none, RunRef({}, {1}, nullptr, 0.0f, 16));
  EXPECT_TRUE(none.ids.empty());
  ASSERT_OK_AND_ASSIGN(Result k0, RunRef(rows, {1}, nullptr, 0.0f, 0));
  EXPECT_TRUE(k0.ids.empty());
}

TEST(BlockTopKRef, MatchesAStableSortOfAllScores) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-2, 2);  // Integer data: exact scores, many ties.
  const int64_t num = 300, dim = 5;
  std::vector<std::vector<float>> rows(num, std::vector<float>(dim));
  for (auto& row : rows) {
    for (float& x : row) x = static_cast<float>(small(rng));
  }
  const std::vector<float> qbar = {1, 2, 0, -1, 1}, question = {0, 1, 1, 1, -2};
  ASSERT_OK_AND_ASSIGN(Result r, RunRef(rows, qbar, &question, 0.5f, 40));
  std::vector<float> s(num);
  for (int64_t b = 0; b < num; ++b) {
    float a = 0, q = 0;
    for (int64_t d = 0; d < dim; ++d) {
      a += rows[b][d] * qbar[d];
      q += rows[b][d] * question[d];
    }
    s[b] = a + 0.5f * q;
  }
  std::vector<int32_t> order(num);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
  order.resize(40);
  EXPECT_EQ(r.ids, order);
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(r.scores[i], s[order[i]]);
}

TEST(BlockTopKRef, RejectsInvalidParams) {
  const std::vector<float> v(4, 1.0f);
  int32_t id = 0;
  float score = 0;
  const BlockTopKParams ok{.reprs = v.data(),
                           .qbar = v.data(),
                           .num_blocks = 2,
                           .q_dim = 2,
                           .topk = 1,
                           .ids = &id,
                           .scores = &score};
  EXPECT_OK(BlockTopKRef(ok));
  auto bad = ok;
  bad.q_dim = 0;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = ok;
  bad.qbar = nullptr;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = ok;
  bad.reprs = nullptr;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = ok;
  bad.ids = nullptr;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = ok;
  bad.topk = -1;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = ok;
  bad.num_blocks = int64_t{1} << 32;
  EXPECT_THAT(BlockTopKRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
