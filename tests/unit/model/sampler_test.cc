#include "model/sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/testutil/status_matchers.h"

namespace qllm::model {
namespace {

using ::qllm::testing::StatusIs;

TEST(Sampler, GreedyTakesArgmaxAndLowestIdOnTies) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  Sampler s(SamplingOptions{});
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 1234;
  Sampler a(o), b(o);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 100; ++i) {
    ta.push_back(a.Sample(logits.data(), 50));
    tb.push_back(b.Sample(logits.data(), 50));
  }
  EXPECT_EQ(ta, tb);
  o.seed = 99;
  Sampler c(o);
  std::vector<int32_t> tc;
  for (int i = 0; i < 100; ++i) tc.push_back(c.Sample(logits.data(), 50));
  EXPECT_NE(ta, tc);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> logits = {0.5f, 0.4f, 0.3f, 0.9f, 0.1f};
  SamplingOptions k1;
  k1.temperature = 5.0f;
  k1.top_k = 1;
  SamplingOptions p;
  p.temperature = 5.0f;
  p.top_p = 1e-6f;
  Sampler a(k1), b(p);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(a.Sample(logits.data(), 5), 3);
    EXPECT_EQ(b.Sample(logits.data(), 5), 3);
  }
}

TEST(Sampler, TopKRestrictsSupport) {
  std::vector<float> logits = {3.0f, 2.9f, 0.0f, -1.0f};
  SamplingOptions o;
  o.temperature = 10.0f;
  o.top_k = 2;
  Sampler s(o);
  for (int i = 0; i < 200; ++i) EXPECT_LT(s.Sample(logits.data(), 4), 2);
}

TEST(Sampler, FrequenciesFollowSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 5;
  Sampler s(o);
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.Sample(logits.data(), 3)];
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.75f;  // 0.5 + 0.3 reaches it: token 2 is never drawn.
  Sampler s(o);
  for (int i = 0; i < 500; ++i) EXPECT_NE(s.Sample(logits.data(), 3), 2);
}

TEST(SamplingOptions, RejectsOutOfRangeValues) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float t : {-0.1f, nan, inf, 101.0f}) {
    SamplingOptions o;
    o.temperature = t;
    EXPECT_THAT(o.Validate(10), StatusIs(absl::StatusCode::kInvalidArgument)) << t;
  }
  for (float p : {0.0f, -1.0f, 1.5f, nan}) {
    SamplingOptions o;
    o.top_p = p;
    EXPECT_THAT(o.Validate(10), StatusIs(absl::StatusCode::kInvalidArgument)) << p;
  }
  for (int32_t k : {-1, 11}) {
    SamplingOptions o;
    o.top_k = k;
    EXPECT_THAT(o.Validate(10), StatusIs(absl::StatusCode::kInvalidArgument)) << k;
  }
  EXPECT_OK(SamplingOptions{}.Validate(10));
}

}  // namespace
}  // namespace qllm::model
