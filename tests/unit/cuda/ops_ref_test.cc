// The CPU backend of each op against plain loops written here, over shapes incl. odd sizes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "cuda/attention.h"
#include "cuda/cast.h"
#include "cuda/embedding.h"
#include "cuda/gemm.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"
#include "cuda/softmax_ref.h"
#include "cuda/swiglu.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(GemmRef, MatchesNaiveForOddShapes) {
  for (auto [m, n, k] : {std::tuple{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 31, 128}}) {
    auto a = Random(m * k, 1), b = Random(n * k, 2);
    std::vector<float> c(m * n);
    ASSERT_OK(MatMulNT(a.data(), b.data(), c.data(), m, n, k));
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        double ref = 0;
        for (int t = 0; t < k; ++t) ref += double(a[i * k + t]) * b[j * k + t];
        ASSERT_NEAR(c[i * n + j], ref, 1e-4 * (1 + std::abs(ref))) << m << "x" << n << "x" << k;
      }
    }
  }
  GemmParams bad;
  EXPECT_THAT(GemmRef(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RmsNormRef, MatchesNaive) {
  for (int dim : {1, 7, 64, 129}) {
    const int rows = 5;
    auto x = Random(rows * dim, 3), w = Random(dim, 4);
    std::vector<float> y(rows * dim);
    ASSERT_OK(RmsNormRef({.x = x.data(),
                          .weight = w.data(),
                          .y = y.data(),
                          .rows = rows,
                          .dim = dim,
                          .eps = 1e-5f}));
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int i = 0; i < dim; ++i) {
        ASSERT_NEAR(y[r * dim + i], x[r * dim + i] * inv * w[i], 1e-5);
      }
    }
  }
}

TEST(RopeRef, RotatesPairsByPositionTimesFrequency) {
  const int D = 8, heads = 3;
  RopeConfig config{.head_dim = D, .theta = 10000.0};
  auto inv = RopeInverseFrequencies(config);
  ASSERT_EQ(inv.size(), 4u);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[1], std::pow(10000.0, -2.0 / 8), 1e-15);
  const std::vector<int64_t> pos = {0, 5, 1000003};
  auto x = Random(3 * heads * D, 5);
  auto y = x;
  ASSERT_OK(RopeRef({.x = y.data(),
                     .positions = pos.data(),
                     .inv_freq = inv.data(),
                     .tokens = 3,
                     .heads = heads,
                     .head_dim = D,
                     .row_stride = heads * D}));
  for (int t = 0; t < 3; ++t) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < D / 2; ++i) {
        const double a = pos[t] * inv[i];
        const float* in = &x[(t * heads + h) * D];
        const float* out = &y[(t * heads + h) * D];
        EXPECT_NEAR(out[i], in[i] * std::cos(a) - in[i + D / 2] * std::sin(a), 1e-5);
        EXPECT_NEAR(out[i + D / 2], in[i + D / 2] * std::cos(a) + in[i] * std::sin(a), 1e-5);
      }
    }
  }
}

TEST(RopeRef, DotProductDependsOnlyOnRelativePosition) {
  const int D = 16;
  auto inv = RopeInverseFrequencies({.head_dim = D, .theta = 500000.0});
  auto q = Random(D, 6), k = Random(D, 7);
  auto dot_at = [&](int64_t pq, int64_t pk) {
    auto qq = q, kk = k;
    RopeParams p{.x = qq.data(),
                 .positions = &pq,
                 .inv_freq = inv.data(),
                 .tokens = 1,
                 .heads = 1,
                 .head_dim = D,
                 .row_stride = D};
    EXPECT_OK(RopeRef(p));
    p.x = kk.data();
    p.positions = &pk;
    EXPECT_OK(RopeRef(p));
    double s = 0;
    for (int i = 0; i < D; ++i) s += double(qq[i]) * kk[i];
    return s;
  };
  EXPECT_NEAR(dot_at(10, 3), dot_at(1010, 1003), 1e-4);
}

TEST(RopeInverseFrequencies, Llama3ScalingFollowsTheThreeBands) {
  RopeConfig c{.head_dim = 128,
               .theta = 500000.0,
               .llama3_factor = 8.0,
               .llama3_low_freq_factor = 1.0,
               .llama3_high_freq_factor = 4.0,
               .llama3_original_max_position = 8192.0};
  auto scaled = RopeInverseFrequencies(c);
  c.llama3_factor = 0.0;
  auto plain = RopeInverseFrequencies(c);
  int kept = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i]);
      ++kept;
    } else if (wavelen > 8192.0) {
      EXPECT_NEAR(scaled[i], plain[i] / 8.0, 1e-18);
      ++divided;
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], 1e-15);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(FastExp, MatchesLibmAcrossTheRange) {
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(FastExp(x) - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(FastExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(FastExp(-100.0f), 0.0f);
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_TRUE(std::isinf(FastExp(100.0f)));
}

TEST(SoftmaxRow, NormalizesAndZeroesMaskedEntries) {
  std::vector<float> row = {1.0f, -std::numeric_limits<float>::infinity(), 3.0f, 2.0f};
  SoftmaxRow(row.data(), 4);
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(row[0], std::exp(1.0) / z, 1e-7);
  EXPECT_EQ(row[1], 0.0f);
  EXPECT_NEAR(row[2], std::exp(3.0) / z, 1e-7);
  EXPECT_NEAR(row[3], std::exp(2.0) / z, 1e-7);
}

TEST(SwiGluRef, MatchesNaive) {
  const int rows = 3, dim = 11;
  auto gu = Random(rows * 2 * dim, 8);
  std::vector<float> out(rows * dim);
  ASSERT_OK(SwiGluRef({.gate_up = gu.data(), .out = out.data(), .rows = rows, .dim = dim}));
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < dim; ++i) {
      const double g = gu[r * 2 * dim + i], u = gu[r * 2 * dim + dim + i];
      EXPECT_NEAR(out[r * dim + i], g / (1 + std::exp(-g)) * u, 1e-6);
    }
  }
}

TEST(CastToBf16Ref, RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6 and goes up.
  const std::vector<float> x = {1.0f,
                                -2.5f,
                                1.0f + 0.00390625f,
                                1.0f + 3 * 0.00390625f,
                                1.0f + 0.005f,
                                std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN()};
  std::vector<uint16_t> y(x.size());
  ASSERT_OK(CastToBf16Ref({.x = x.data(), .y = y.data(), .n = static_cast<int64_t>(x.size())}));
  EXPECT_EQ(y[0], 0x3f80);
  EXPECT_EQ(y[1], 0xc020);
  EXPECT_EQ(y[2], 0x3f80);
  EXPECT_EQ(y[3], 0x3f82);
  EXPECT_EQ(y[4], 0x3f81);
  EXPECT_EQ(y[5], 0x7f80);
  EXPECT_EQ(y[6] & 0x7f80, 0x7f80);  // Still a NaN: all-ones exponent ...
  EXPECT_NE(y[6] & 0x007f, 0);       // ... and a non-zero mantissa.
  EXPECT_THAT(CastToBf16Ref({.x = x.data(), .y = nullptr, .n = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CastToBf16Ref({.x = x.data(), .y = y.data(), .n = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EmbeddingRef, CopiesRowsAndRejectsBadIds) {
  auto table = Random(10 * 4, 9);
  const std::vector<int32_t> ids = {3, 0, 9};
  std::vector<float> out(3 * 4);
  EmbeddingParams p{.tokens = ids.data(),
                    .table = table.data(),
                    .out = out.data(),
                    .n = 3,
                    .vocab = 10,
                    .dim = 4};
  ASSERT_OK(EmbeddingRef(p));
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 4),
            std::vector<float>(table.begin() + 12, table.begin() + 16));
  for (int32_t bad : {-1, 10}) {
    const std::vector<int32_t> bad_ids = {1, bad};
    p.tokens = bad_ids.data();
    p.n = 2;
    EXPECT_THAT(EmbeddingRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

// Naive causal GQA attention in double precision.
std::vector<double> NaiveAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int n_q, int q_offset, int heads,
                                   int kv_heads, int D) {
  std::vector<double> out(n_q * heads * D);
  const int group = heads / kv_heads;
  for (int i = 0; i < n_q; ++i) {
    for (int h = 0; h < heads; ++h) {
      const int g = h / group, visible = q_offset + i + 1;
      std::vector<double> s(visible);
      double mx = -1e300;
      for (int j = 0; j < visible; ++j) {
        double dot = 0;
        for (int t = 0; t < D; ++t)
          dot += double(q[(i * heads + h) * D + t]) * k[(j * kv_heads + g) * D + t];
        s[j] = dot / std::sqrt(double(D));
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - mx));
      for (int j = 0; j < visible; ++j) {
        for (int t = 0; t < D; ++t)
          out[(i * heads + h) * D + t] += s[j] / z * v[(j * kv_heads + g) * D + t];
      }
    }
  }
  return out;
}

TEST(CausalAttentionRef, MatchesNaiveForMhaAndGqa) {
  for (auto [heads, kv_heads, D, n_q, q_offset] :
       {std::tuple{4, 4, 8, 5, 0}, {4, 2, 16, 1, 37}, {6, 2, 6, 13, 20}, {8, 1, 32, 64, 0}}) {
    const int n_kv = q_offset + n_q;
    auto q = Random(n_q * heads * D, 10), k = Random(n_kv * kv_heads * D, 11),
         v = Random(n_kv * kv_heads * D, 12);
    std::vector<float> out(n_q * heads * D);
    CausalAttentionParams p{.q = q.data(),
                            .k = k.data(),
                            .v = v.data(),
                            .out = out.data(),
                            .n_q = n_q,
                            .n_kv = n_kv,
                            .q_offset = q_offset,
                            .heads = heads,
                            .kv_heads = kv_heads,
                            .head_dim = D,
                            .q_stride = heads * D,
                            .kv_stride = kv_heads * D,
                            .out_stride = heads * D,
                            .scale = static_cast<float>(1 / std::sqrt(double(D)))};
    ASSERT_OK(CausalAttentionRef(p));
    auto ref = NaiveAttention(q, k, v, n_q, q_offset, heads, kv_heads, D);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(out[i], ref[i], 1e-5) << heads << "/" << kv_heads << " at " << i;
    }
  }
}

TEST(CausalAttentionRef, RejectsInconsistentShapes) {
  float buf[64] = {};
  CausalAttentionParams p{.q = buf,
                          .k = buf,
                          .v = buf,
                          .out = buf,
                          .n_q = 2,
                          .n_kv = 1,
                          .q_offset = 0,
                          .heads = 2,
                          .kv_heads = 1,
                          .head_dim = 4,
                          .q_stride = 8,
                          .kv_stride = 4,
                          .out_stride = 8};
  EXPECT_THAT(CausalAttentionRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p.n_kv = 2;
  p.kv_heads = 3;
  EXPECT_THAT(CausalAttentionRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
