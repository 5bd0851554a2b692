// CUDA and cuBLAS error codes into Status, and which of them mark the device as lost
// (common/device_error.h): the worker's health hangs on that mark. The conversions only look
// codes up, so they run without a GPU; CUDA builds only.
#include "cuda/cuda_check.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "common/device_error.h"
#include "cuda/cublas_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

TEST(CudaCheckTest, StickyErrorsMarkTheDeviceLostOthersDoNot) {
  for (cudaError_t sticky :
       {cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorLaunchTimeout,
        cudaErrorHardwareStackError, cudaErrorIllegalInstruction, cudaErrorMisalignedAddress,
        cudaErrorInvalidAddressSpace, cudaErrorInvalidPc, cudaErrorAssert,
        cudaErrorECCUncorrectable, cudaErrorNvlinkUncorrectable, cudaErrorContained,
        cudaErrorExternalDevice}) {
    const absl::Status s = CudaErrorToStatus(sticky, "kernel<<<>>>", "f.cu", 7);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("f.cu:7: kernel<<<>>>")));
    EXPECT_TRUE(IsDeviceLost(s)) << s;
  }
  const absl::Status oom = CudaErrorToStatus(cudaErrorMemoryAllocation, "cudaMalloc", "f.cu", 1);
  EXPECT_THAT(oom, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_FALSE(IsDeviceLost(oom));
  const absl::Status bad = CudaErrorToStatus(cudaErrorInvalidValue, "cudaMemcpy", "f.cu", 2);
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kInternal, HasSubstr("cudaErrorInvalidValue")));
  EXPECT_FALSE(IsDeviceLost(bad));
  EXPECT_FALSE(IsDeviceLost(absl::UnavailableError("a peer is down")));
  EXPECT_FALSE(IsDeviceLost(absl::OkStatus()));
}

TEST(CudaCheckTest, CublasCodesMapToPreciseStatuses) {
  EXPECT_THAT(CublasStatusToStatus(CUBLAS_STATUS_ALLOC_FAILED, "x", "f", 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(CublasStatusToStatus(CUBLAS_STATUS_INVALID_VALUE, "x", "f", 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CublasStatusToStatus(CUBLAS_STATUS_NOT_SUPPORTED, "x", "f", 1),
              StatusIs(absl::StatusCode::kUnimplemented));
  const absl::Status init = CublasStatusToStatus(CUBLAS_STATUS_NOT_INITIALIZED, "x", "f", 1);
  EXPECT_THAT(init, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(IsDeviceLost(init)) << "no device at start is not a device lost mid-run";
}

}  // namespace
}  // namespace qllm::cuda
