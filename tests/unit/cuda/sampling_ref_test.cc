// cuda::SampleRef (cuda/sampling.h) against model::Sampler: given the sampler's own draw
// (NextUniform of a sampler with the same seed) it picks the same token, for greedy,
// temperature, top-k and top-p settings over logits with many ties; and its validation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda/sampling.h"
#include "model/sampler.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

constexpr uint64_t kSeededDigest = 6411895826394690929ull;

TEST(SampleRef, EqualsModelSamplerGivenItsDraw) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  constexpr int32_t kVocab = 1000;
  int checked = 0;
  for (float temperature : {0.0f, 0.7f, 1.5f}) {
    for (int32_t top_k : {0, 1, 40, kVocab}) {
      for (float top_p : {1.0f, 0.9f, 0.3f}) {
        const model::SamplingOptions o{
            .temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = 17};
        model::Sampler host(o), draws(o);
        for (int step = 0; step < 40; ++step) {
          std::vector<float> logits(kVocab);
          // Rounded to halves: many exact ties exercise the tie rule.
          for (float& x : logits) x = std::round(2.0f * normal(rng)) / 2.0f;
          const int32_t want = host.Sample(logits.data(), kVocab);
          int32_t got = -1;
          ASSERT_OK(SampleRef({.logits = logits.data(),
                               .vocab = kVocab,
                               .temperature = temperature,
                               .top_k = top_k,
                               .top_p = top_p,
                               .u01 = temperature == 0.0f ? 0.0 : draws.NextUniform(),
                               .out = &got}));
          ASSERT_EQ(got, want) << "T " << temperature << " top_k " << top_k << " top_p " << top_p
                               << " step " << step;
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 * 3 * 40);
}

// The tokens of seeded sampling are part of the API (equal seeds, equal answers across
// versions): a digest of 1,440 tokens that Sampler drew when SampleRef was written (the
// digest was computed with Sampler's own implementation before both shared one).
TEST(SampleRef, SeededTokensAreStable) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  constexpr int32_t kVocab = 1000;
  uint64_t digest = 1469598103934665603ull;
  for (float temperature : {0.0f, 0.7f, 1.5f}) {
    for (int32_t top_k : {0, 1, 40, kVocab}) {
      for (float top_p : {1.0f, 0.9f, 0.3f}) {
        model::Sampler s({.temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = 17});
        for (int step = 0; step < 40; ++step) {
          std::vector<float> logits(kVocab);
          for (float& x : logits) x = std::round(2.0f * normal(rng)) / 2.0f;
          digest =
              (digest ^ static_cast<uint64_t>(s.Sample(logits.data(), kVocab))) * 1099511628211ull;
        }
      }
    }
  }
  EXPECT_EQ(digest, kSeededDigest) << "digest " << digest;
}

TEST(SampleRef, RejectsBadParams) {
  const std::vector<float> logits = {1, 2, 3};
  int32_t out = 0;
  const SampleParams ok{.logits = logits.data(), .vocab = 3, .temperature = 1.0f, .out = &out};
  ASSERT_OK(SampleRef(ok));
  SampleParams p = ok;
  p.out = nullptr;
  EXPECT_THAT(SampleRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.top_k = 4;
  EXPECT_THAT(SampleRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.top_p = 0.0f;
  EXPECT_THAT(SampleRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.u01 = 1.0;
  EXPECT_THAT(SampleRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.temperature = NAN;
  EXPECT_THAT(SampleRef(p), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
