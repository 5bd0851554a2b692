// The CUDA shard backend (cuda/device_shard.h) where there is no GPU, as on CI: creating it
// fails with a clear INVALID_ARGUMENT instead of crashing, and so does --backend=cuda's device
// selection. CUDA builds only; on a machine with a device tests/gpu/device_shard_gpu_test.cc
// covers the backend and this test skips.
#include "cuda/device_shard.h"

#include <filesystem>
#include <string>

#include "cuda/device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/weights.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

TEST(CudaShardBackendTest, WithoutADeviceCreationFailsClearly) {
  if (VisibleDeviceCount() > 0) GTEST_SKIP() << "a device is visible: see the GPU tests";
  const std::string dir = qllm::testing::MakeScratchDir();
  qllm::testing::WriteTinyModel(dir, qllm::testing::TinyModelSpec{});
  ASSERT_OK_AND_ASSIGN(model::ModelWeights weights, model::LoadWeights(dir));
  std::filesystem::remove_all(dir);

  EXPECT_THAT(NewCudaShardBackend(weights).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no CUDA device")));
  EXPECT_THAT(NewCudaShardBackend(weights, {.max_chunk = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_chunk 0")));
  EXPECT_THAT(NewCudaShardBackend(weights, {.max_blocks = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_blocks 0")));
  EXPECT_THAT(UseDevice(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("outside the 0 visible device(s)")));
  EXPECT_EQ(VisibleDeviceCount(), 0);  // Asking twice leaves no error behind.
}

}  // namespace
}  // namespace qllm::cuda
