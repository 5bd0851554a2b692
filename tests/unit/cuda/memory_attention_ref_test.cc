// MemoryAttentionRef (the CPU twin of the device two-stage attention) against a plain
// double-precision evaluation of the formula in cuda/memory_attention.h: GQA, decode and
// chunks, global-key visibility by position, empty key sets, and the mass bookkeeping of the
// local scores.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/memory_attention.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

struct Shape {
  int64_t n, start, num_local, local_first, num_global, n_local, heads, kv_heads, head_dim;
  // Global keys g < num_far get positions in [far_lo, far_lo + num_far); the rest are
  // kAlwaysVisible. num_far < 0: global_pos = null.
  int64_t num_far = 0, far_lo = 0;
};

struct Problem {
  Shape shape;
  std::vector<float> q_local, q_global, local_k, local_v, global_k, global_v;
  std::vector<int64_t> global_pos;

  MemoryAttentionParams Params(float* out, float* local_scores) const {
    const Shape& s = shape;
    return {.q_local = q_local.data(),
            .q_global = q_global.data(),
            .local_k = local_k.data(),
            .local_v = local_v.data(),
            .global_k = global_k.data(),
            .global_v = global_v.data(),
            .global_pos = s.num_far >= 0 ? global_pos.data() : nullptr,
            .out = out,
            .local_scores = local_scores,
            .n = s.n,
            .start = s.start,
            .num_local = s.num_local,
            .local_first = s.local_first,
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
  auto fill = [&](std::vector<float>* v, int64_t rows, int64_t width) {
    v->resize(rows * width);
    for (float& x : *v) x = normal(rng);
  };
  Problem p{.shape = s};
  const int64_t q_dim = s.heads * s.head_dim, kv_dim = s.kv_heads * s.head_dim;
  fill(&p.q_local, s.n, q_dim);
  fill(&p.q_global, s.n, q_dim);
  fill(&p.local_k, s.num_local, kv_dim);
  fill(&p.local_v, s.num_local, kv_dim);
  fill(&p.global_k, s.num_global, kv_dim);
  fill(&p.global_v, s.num_global, kv_dim);
  p.global_pos.assign(s.num_global, kAlwaysVisible);
  for (int64_t g = 0; g < std::min(s.num_far, s.num_global); ++g) p.global_pos[g] = s.far_lo + g;
  return p;
}

struct Result {
  std::vector<double> out;           // [n, q_dim]
  std::vector<double> local_scores;  // [num_local, heads]
  std::vector<double> global_mass;   // [n, heads]
};

// The formula, key by key, in double.
Result Expected(const Problem& pr) {
  const Shape& s = pr.shape;
  const int64_t d = s.head_dim, q_dim = s.heads * d, kv_dim = s.kv_heads * d;
  const int64_t group = s.heads / s.kv_heads;
  const double scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  Result r{std::vector<double>(s.n * q_dim, 0.0), std::vector<double>(s.num_local * s.heads, 0.0),
           std::vector<double>(s.n * s.heads, 0.0)};
  auto dot = [&](const float* a, const float* b) {
    double acc = 0.0;
    for (int64_t t = 0; t < d; ++t) acc += static_cast<double>(a[t]) * b[t];
    return acc * scale;
  };
  for (int64_t i = 0; i < s.n; ++i) {
    const int64_t pos = s.start + i;
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t g = h / group;
      // (score, value row, local key index or -1) of every visible key.
      struct Key {
        double score;
        const float* v;
        int64_t local;
      };
      std::vector<Key> keys;
      for (int64_t k = 0; k < s.num_global; ++k) {
        const bool visible = s.num_far < 0 || pr.global_pos[k] == kAlwaysVisible ||
                             pos - pr.global_pos[k] >= s.n_local;
        if (!visible) continue;
        const int64_t off = k * kv_dim + g * d;
        keys.push_back(
            {dot(&pr.q_global[i * q_dim + h * d], &pr.global_k[off]), &pr.global_v[off], -1});
      }
      for (int64_t j = 0; j < s.num_local; ++j) {
        const int64_t pj = s.local_first + j;
        if (!(pos - s.n_local < pj && pj <= pos)) continue;
        const int64_t off = j * kv_dim + g * d;
        keys.push_back(
            {dot(&pr.q_local[i * q_dim + h * d], &pr.local_k[off]), &pr.local_v[off], j});
      }
      if (keys.empty()) continue;
      double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (const Key& k : keys) mx = std::max(mx, k.score);
      for (const Key& k : keys) sum += std::exp(k.score - mx);
      for (const Key& k : keys) {
        const double prob = std::exp(k.score - mx) / sum;
        for (int64_t t = 0; t < d; ++t) r.out[i * q_dim + h * d + t] += prob * k.v[t];
        if (k.local >= 0) {
          r.local_scores[k.local * s.heads + h] += prob;
        } else {
          r.global_mass[i * s.heads + h] += prob;
        }
      }
    }
  }
  return r;
}

// Runs the twin; local scores start at `initial`.
void RunRef(const Problem& pr, float initial, std::vector<float>* out,
            std::vector<float>* local_scores) {
  const Shape& s = pr.shape;
  out->assign(s.n * s.heads * s.head_dim, std::numeric_limits<float>::quiet_NaN());
  local_scores->assign(s.num_local * s.heads, initial);
  ASSERT_OK(MemoryAttentionRef(pr.Params(out->data(), local_scores->data())));
}

void ExpectNear(const std::vector<double>& expected, const std::vector<float>& actual,
                double offset = 0.0) {
  ASSERT_EQ(expected.size(), actual.size());
  int reported = 0;
  for (size_t k = 0; k < expected.size(); ++k) {
    const double e = expected[k] + offset;
    if (std::abs(actual[k] - e) <= 1e-5 + 1e-4 * std::abs(e)) continue;
    ADD_FAILURE() << "[" << k << "] expected " << e << ", actual " << actual[k];
    if (++reported == 8) return;
  }
}

void CheckAgainstFormula(const Shape& s, uint32_t seed) {
  SCOPED_TRACE(absl::StrCat("n ", s.n, " start ", s.start, " L ", s.num_local, " first ",
                            s.local_first, " Ng ", s.num_global, " far ", s.num_far, " n_local ",
                            s.n_local, " H ", s.heads, " Hkv ", s.kv_heads, " D ", s.head_dim));
  const Problem pr = MakeProblem(s, seed);
  std::vector<float> out, scores;
  ASSERT_NO_FATAL_FAILURE(RunRef(pr, 0.5f, &out, &scores));
  const Result want = Expected(pr);
  ExpectNear(want.out, out);
  ExpectNear(want.local_scores, scores, 0.5);
}

// Pending tokens from position 200 form the local window; the first ones also act as global
// keys for queries at least n_local past them (the engine's far_pending_global).
std::vector<Shape> GqaShapes() {
  return {
      // Decode: one query at the end of the window.
      {.n = 1,
       .start = 263,
       .num_local = 64,
       .local_first = 200,
       .num_global = 40,
       .n_local = 48,
       .heads = 6,
       .kv_heads = 2,
       .head_dim = 16,
       .num_far = 10,
       .far_lo = 200},
      // A chunk whose window slides over the pending tokens.
      {.n = 7,
       .start = 257,
       .num_local = 64,
       .local_first = 200,
       .num_global = 30,
       .n_local = 50,
       .heads = 6,
       .kv_heads = 2,
       .head_dim = 40,
       .num_far = 20,
       .far_lo = 200},
      // A longer chunk, every query within the window of every earlier key; no positions.
      {.n = 33,
       .start = 100,
       .num_local = 133,
       .local_first = 0,
       .num_global = 17,
       .n_local = 512,
       .heads = 6,
       .kv_heads = 2,
       .head_dim = 32,
       .num_far = -1},
      // No GQA, all globals always visible.
      {.n = 5,
       .start = 20,
       .num_local = 25,
       .local_first = 0,
       .num_global = 9,
       .n_local = 8,
       .heads = 3,
       .kv_heads = 3,
       .head_dim = 8},
      // Multi-query attention (one kv head).
      {.n = 4,
       .start = 90,
       .num_local = 30,
       .local_first = 64,
       .num_global = 70,
       .n_local = 16,
       .heads = 4,
       .kv_heads = 1,
       .head_dim = 64,
       .num_far = 25,
       .far_lo = 64},
  };
}

// Two queries, GQA, a few keys of each kind: for the validation tests.
Problem SmallProblem(uint32_t seed) {
  return MakeProblem({.n = 2,
                      .start = 4,
                      .num_local = 6,
                      .local_first = 0,
                      .num_global = 3,
                      .n_local = 4,
                      .heads = 6,
                      .kv_heads = 2,
                      .head_dim = 8},
                     seed);
}

TEST(MemoryAttentionRef, MatchesFormulaWithGqaDecodeAndChunks) {
  uint32_t seed = 1;
  for (const Shape& s : GqaShapes()) CheckAgainstFormula(s, seed++);
}

// Split attention (memory_attention.h): part A = the local keys and global keys [0, cut),
// part B = global keys [cut, num_global); merged, then the local scores from the merged
// statistics. Must give the formula's output and local scores, and the joint call's row
// statistics.
void CheckSplit(const Shape& s, int64_t cut, uint32_t seed) {
  SCOPED_TRACE(absl::StrCat("n ", s.n, " L ", s.num_local, " Ng ", s.num_global, " cut ", cut));
  const Problem pr = MakeProblem(s, seed);
  const int64_t out_size = s.n * s.heads * s.head_dim, rows = s.n * s.heads;
  std::vector<float> joint_out(out_size), joint_stats(2 * rows);
  MemoryAttentionParams joint = pr.Params(joint_out.data(), nullptr);
  joint.row_stats = joint_stats.data();
  ASSERT_OK(MemoryAttentionRef(joint));

  std::vector<float> out(out_size), stats(2 * rows), out_b(out_size), stats_b(2 * rows);
  MemoryAttentionParams a = pr.Params(out.data(), nullptr);
  a.num_global = cut;
  a.row_stats = stats.data();
  ASSERT_OK(MemoryAttentionRef(a));
  MemoryAttentionParams b = pr.Params(out_b.data(), nullptr);
  b.local_k = b.local_v = nullptr;
  b.num_local = 0;
  b.global_k += cut * s.kv_heads * s.head_dim;
  b.global_v += cut * s.kv_heads * s.head_dim;
  if (b.global_pos != nullptr) b.global_pos += cut;
  b.num_global = s.num_global - cut;
  b.row_stats = stats_b.data();
  ASSERT_OK(MemoryAttentionRef(b));
  ASSERT_OK(MergeAttentionRef({.out = out.data(),
                               .stats = stats.data(),
                               .out_b = out_b.data(),
                               .stats_b = stats_b.data(),
                               .n = s.n,
                               .heads = s.heads,
                               .head_dim = s.head_dim}));
  std::vector<float> scores(s.num_local * s.heads, 0.5f);
  a.local_scores = scores.data();
  ASSERT_OK(MemoryAttentionLocalScoresRef(a));

  const Result want = Expected(pr);
  ExpectNear(want.out, out);
  ExpectNear(want.local_scores, scores, 0.5);
  for (int64_t r = 0; r < rows; ++r) {
    SCOPED_TRACE(absl::StrCat("row ", r));
    // The same scores up to SGEMM blocking (-inf and 0 exactly for a row that sees nothing).
    if (std::isinf(joint_stats[r])) {
      EXPECT_EQ(stats[r], joint_stats[r]);
      EXPECT_EQ(stats[rows + r], 0.0f);
    } else {
      EXPECT_NEAR(stats[r], joint_stats[r], 1e-5 * (1.0 + std::abs(joint_stats[r])));
    }
    EXPECT_NEAR(stats[rows + r], joint_stats[rows + r], 1e-5 * joint_stats[rows + r]);
  }
}

TEST(MemoryAttentionRef, SplitAttentionMergesToTheJointSoftmax) {
  std::vector<Shape> shapes = GqaShapes();
  // Queries 0 and 1 see no key at all (the local keys are ahead of them, the global ones too
  // recent), query 2 one local key: rows empty in one part or in both.
  shapes.push_back({.n = 3,
                    .start = 10,
                    .num_local = 2,
                    .local_first = 12,
                    .num_global = 6,
                    .n_local = 4,
                    .heads = 2,
                    .kv_heads = 1,
                    .head_dim = 8,
                    .num_far = 6,
                    .far_lo = 8});
  uint32_t seed = 100;
  for (const Shape& s : shapes) {
    for (int64_t cut : {int64_t{0}, s.num_global / 2, s.num_global}) CheckSplit(s, cut, seed++);
  }
}

TEST(MemoryAttentionRef, SplitAttentionOpsRejectInvalidParams) {
  const Problem pr = SmallProblem(72);
  std::vector<float> out(2 * 6 * 8), stats(2 * 2 * 6), scores(6 * 6);
  MemoryAttentionParams p = pr.Params(out.data(), scores.data());
  p.row_stats = stats.data();
  EXPECT_OK(MemoryAttentionLocalScoresRef(p));
  p.row_stats = nullptr;  // The joint statistics are the input.
  EXPECT_THAT(MemoryAttentionLocalScoresRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p.row_stats = stats.data();
  p.local_scores = nullptr;
  EXPECT_THAT(MemoryAttentionLocalScoresRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p.num_local = 0;  // Nothing to score: nothing required.
  p.local_k = p.local_v = nullptr;
  EXPECT_OK(MemoryAttentionLocalScoresRef(p));

  MergeAttentionParams m{.out = out.data(),
                         .stats = stats.data(),
                         .out_b = out.data(),
                         .stats_b = stats.data(),
                         .n = 2,
                         .heads = 6,
                         .head_dim = 8};
  EXPECT_OK(m.Validate());
  MergeAttentionParams bad = m;
  bad.heads = 0;
  EXPECT_THAT(MergeAttentionRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = m;
  bad.stats_b = nullptr;
  EXPECT_THAT(MergeAttentionRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad.n = 0;  // No rows: no pointers needed.
  EXPECT_OK(MergeAttentionRef(bad));
}

TEST(MemoryAttentionRef, EmptyGlobalSetIsCausalWindowAttention) {
  CheckAgainstFormula({.n = 9,
                       .start = 30,
                       .num_local = 39,
                       .local_first = 0,
                       .num_global = 0,
                       .n_local = 12,
                       .heads = 6,
                       .kv_heads = 2,
                       .head_dim = 16},
                      21);
  CheckAgainstFormula({.n = 1,
                       .start = 5,
                       .num_local = 6,
                       .local_first = 0,
                       .num_global = 0,
                       .n_local = 100,
                       .heads = 6,
                       .kv_heads = 2,
                       .head_dim = 32},
                      22);
}

TEST(MemoryAttentionRef, NoVisibleLocalKeysAttendsGlobalsOnly) {
  // Every local key lies after the queries, or the window holds no key at all.
  CheckAgainstFormula({.n = 3,
                       .start = 10,
                       .num_local = 8,
                       .local_first = 20,
                       .num_global = 12,
                       .n_local = 4,
                       .heads = 6,
                       .kv_heads = 2,
                       .head_dim = 16},
                      31);
  CheckAgainstFormula({.n = 2,
                       .start = 10,
                       .num_local = 0,
                       .local_first = 0,
                       .num_global = 12,
                       .n_local = 4,
                       .heads = 6,
                       .kv_heads = 2,
                       .head_dim = 16},
                      32);
}

TEST(MemoryAttentionRef, QueryWithoutVisibleKeysGetsZero) {
  // Query 0 (position 5) sees nothing: the local keys start at 6 and the global key at 3 is
  // within n_local = 4 of it. Query 2 (position 7) sees the global key and local keys 6-7.
  Shape s{.n = 3,
          .start = 5,
          .num_local = 2,
          .local_first = 6,
          .num_global = 1,
          .n_local = 4,
          .heads = 6,
          .kv_heads = 2,
          .head_dim = 8,
          .num_far = 1,
          .far_lo = 3};
  const Problem pr = MakeProblem(s, 41);
  std::vector<float> out, scores;
  ASSERT_NO_FATAL_FAILURE(RunRef(pr, 0.0f, &out, &scores));
  const int64_t q_dim = s.heads * s.head_dim;
  for (int64_t t = 0; t < q_dim; ++t) EXPECT_EQ(out[t], 0.0f) << t;
  const Result want = Expected(pr);
  ExpectNear(want.out, out);
  ExpectNear(want.local_scores, scores);
  for (int64_t h = 0; h < s.heads; ++h) EXPECT_GT(want.global_mass[2 * s.heads + h], 0.0);
}

// With global values 1 and local values 0, out_i[h, :] is the global mass of (i, h); so the
// local scores of a single query plus that output sum to 1 per head.
TEST(MemoryAttentionRef, LocalScoresAndGlobalMassSumToOne) {
  const Shape base{.n = 1,
                   .start = 0,
                   .num_local = 96,
                   .local_first = 100,
                   .num_global = 50,
                   .n_local = 32,
                   .heads = 6,
                   .kv_heads = 2,
                   .head_dim = 16,
                   .num_far = 30,
                   .far_lo = 100};
  Problem pr = MakeProblem(base, 51);
  std::fill(pr.global_v.begin(), pr.global_v.end(), 1.0f);
  std::fill(pr.local_v.begin(), pr.local_v.end(), 0.0f);
  const int64_t d = base.head_dim;
  for (int64_t pos : {100, 120, 131, 132, 150, 195}) {
    pr.shape.start = pos;
    SCOPED_TRACE(absl::StrCat("query at ", pos));
    std::vector<float> out, scores;
    ASSERT_NO_FATAL_FAILURE(RunRef(pr, 0.0f, &out, &scores));
    for (int64_t h = 0; h < base.heads; ++h) {
      double local = 0.0;
      for (int64_t j = 0; j < base.num_local; ++j) local += scores[j * base.heads + h];
      for (int64_t t = 0; t < d; ++t) EXPECT_NEAR(out[h * d + t], out[h * d], 1e-6);
      EXPECT_NEAR(local + out[h * d], 1.0, 1e-5) << "head " << h;
    }
  }
  // A chunk of n queries: the totals over the chunk sum to n per head.
  pr = MakeProblem({.n = 20,
                    .start = 150,
                    .num_local = 96,
                    .local_first = 100,
                    .num_global = 50,
                    .n_local = 32,
                    .heads = 6,
                    .kv_heads = 2,
                    .head_dim = 16,
                    .num_far = 30,
                    .far_lo = 100},
                   52);
  std::fill(pr.global_v.begin(), pr.global_v.end(), 1.0f);
  std::fill(pr.local_v.begin(), pr.local_v.end(), 0.0f);
  std::vector<float> out, scores;
  ASSERT_NO_FATAL_FAILURE(RunRef(pr, 0.0f, &out, &scores));
  for (int64_t h = 0; h < base.heads; ++h) {
    double total = 0.0;
    for (int64_t j = 0; j < pr.shape.num_local; ++j) total += scores[j * base.heads + h];
    for (int64_t i = 0; i < pr.shape.n; ++i) total += out[i * base.heads * d + h * d];
    EXPECT_NEAR(total, static_cast<double>(pr.shape.n), 1e-4) << "head " << h;
  }
}

TEST(MemoryAttentionRef, NullLocalScoresComputesOutputOnly) {
  const Problem pr = MakeProblem({.n = 4,
                                  .start = 40,
                                  .num_local = 44,
                                  .local_first = 0,
                                  .num_global = 10,
                                  .n_local = 16,
                                  .heads = 6,
                                  .kv_heads = 2,
                                  .head_dim = 16},
                                 61);
  std::vector<float> out(4 * 6 * 16);
  ASSERT_OK(MemoryAttentionRef(pr.Params(out.data(), nullptr)));
  ExpectNear(Expected(pr).out, out);
}

TEST(MemoryAttentionRef, RejectsInvalidParams) {
  const Problem pr = SmallProblem(71);
  std::vector<float> out(2 * 6 * 8);
  const MemoryAttentionParams good = pr.Params(out.data(), nullptr);
  EXPECT_OK(good.Validate());
  auto expect_invalid = [](MemoryAttentionParams p) {
    EXPECT_THAT(MemoryAttentionRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  };
  MemoryAttentionParams p = good;
  p.kv_heads = 4;  // Does not divide 6.
  expect_invalid(p);
  p = good;
  p.n_local = 0;
  expect_invalid(p);
  p = good;
  p.start = -1;
  expect_invalid(p);
  p = good;
  p.local_k = nullptr;
  expect_invalid(p);
  p = good;
  p.global_v = nullptr;
  expect_invalid(p);
  p = good;
  p.out = nullptr;
  expect_invalid(p);
  // Empty sets need no pointers.
  p = good;
  p.num_local = 0;
  p.local_k = p.local_v = nullptr;
  p.num_global = 0;
  p.global_k = p.global_v = nullptr;
  EXPECT_OK(MemoryAttentionRef(p));
  p.n = 0;
  p.q_local = p.q_global = nullptr;
  p.out = nullptr;
  EXPECT_OK(MemoryAttentionRef(p));
}

}  // namespace
}  // namespace qllm::cuda
