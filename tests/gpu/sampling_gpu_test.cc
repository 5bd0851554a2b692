// LaunchSample (cuda/sampling.h) against its CPU twin SampleRef with the same draws: greedy
// must agree exactly; sampled tokens may differ only where a draw falls within expf's last-bit
// difference of a cumulative boundary, which these cases make vanishingly rare (at most 1 of
// the draws is allowed to differ).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/sampling.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

TEST(SamplingGpuTest, MatchesRef) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  ASSERT_OK_AND_ASSIGN(CudaStream stream, CudaStream::Create());
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int draws = 0, differ = 0;
  for (int32_t vocab : {1000, 128256}) {
    ASSERT_OK_AND_ASSIGN(const size_t ws_bytes, SampleWorkspaceBytes(vocab));
    ASSERT_OK_AND_ASSIGN(DeviceBuffer<uint8_t> ws, DeviceBuffer<uint8_t>::Create(ws_bytes));
    ASSERT_OK_AND_ASSIGN(DeviceBuffer<float> d_logits, DeviceBuffer<float>::Create(vocab));
    ASSERT_OK_AND_ASSIGN(DeviceBuffer<int32_t> d_out, DeviceBuffer<int32_t>::Create(1));
    for (float temperature : {0.0f, 0.8f}) {
      for (int32_t top_k : {0, 50}) {
        for (float top_p : {1.0f, 0.9f}) {
          for (int step = 0; step < 10; ++step) {
            std::vector<float> logits(vocab);
            for (float& x : logits) x = std::round(4.0f * normal(rng)) / 4.0f;
            SampleParams p{.logits = logits.data(),
                           .vocab = vocab,
                           .temperature = temperature,
                           .top_k = top_k,
                           .top_p = top_p,
                           .u01 = uniform(rng)};
            int32_t want = -1, got = -2;
            p.out = &want;
            ASSERT_OK(SampleRef(p));
            ASSERT_OK(d_logits.Upload(logits, stream.get()));
            p.logits = d_logits.data();
            p.out = d_out.data();
            ASSERT_OK(LaunchSample(p, ws.data(), ws.bytes(), stream.get()));
            ASSERT_OK(d_out.Download(&got, 1, stream.get()));
            ASSERT_OK(stream.Synchronize());
            if (temperature == 0.0f) {
              ASSERT_EQ(got, want) << "greedy, vocab " << vocab;
            } else {
              ++draws;
              differ += got != want ? 1 : 0;
            }
          }
        }
      }
    }
  }
  EXPECT_LE(differ, 1) << differ << " of " << draws << " sampled tokens differ";
}

TEST(SamplingGpuValidation, RejectsBadParamsWithoutTouchingTheDevice) {
  const std::vector<float> logits = {1, 2};
  int32_t out = 0;
  EXPECT_THAT(LaunchSample({.logits = logits.data(), .vocab = 2, .top_k = 3, .out = &out}, nullptr,
                           0, nullptr),
              ::qllm::testing::StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
