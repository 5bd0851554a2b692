// DeviceLayerMemory (cuda/device_layer_memory.h) against the engine's CPU context memory
// worker::LayerMemory: the checks of tests/testutil/layer_memory_parity.h (random projections
// in chunks of varied sizes; qllm with an early and a late question, infllm, both tiered with
// the split attention around the loads, qllm tiered without it, streaming) on the device. Both
// sides compute in fp32; the device sums in other orders and uses expf, so the bound is 1e-4 where
// a wrong position, head or block moves outputs by O(1).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "common/logging.h"
#include "cuda/device.h"
#include "cuda/device_layer_memory.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/layer_memory_parity.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::MemoryCase;

// Device arrays for the parity checks; every array lives as long as this object.
class DeviceIo {
 public:
  DeviceIo() {
    auto stream = CudaStream::Create();
    QLLM_CHECK(stream.ok()) << stream.status();
    stream_ = std::move(*stream);
    const std::vector<double> f = testing::ParityInvFreq();
    auto d = DeviceBuffer<double>::Create(f.size());
    QLLM_CHECK(d.ok()) << d.status();
    QLLM_CHECK(d->Upload(f, stream_.get()).ok());
    inv_freq_ = std::move(*d);
  }
  float* Upload(const std::vector<float>& host) {
    float* p = Alloc(host.size());
    QLLM_CHECK(arrays_.back().Upload(host, stream_.get()).ok());
    return p;
  }
  float* Alloc(size_t count) {
    auto d = DeviceBuffer<float>::Create(count);
    QLLM_CHECK(d.ok()) << d.status();
    arrays_.push_back(std::move(*d));
    return arrays_.back().data();
  }
  std::vector<float> Download(const float* d, size_t count) {
    std::vector<float> h(count);
    for (const DeviceBuffer<float>& a : arrays_) {
      if (d >= a.data() && d + count <= a.data() + a.size()) {
        QLLM_CHECK(a.Download(h.data(), count, stream_.get(), d - a.data()).ok());
        QLLM_CHECK(stream_.Synchronize().ok());
        return h;
      }
    }
    QLLM_CHECK(false) << "not an array of this DeviceIo";
    return h;
  }
  const double* inv_freq() const { return inv_freq_.data(); }
  Stream stream() const { return stream_.get(); }

 private:
  CudaStream stream_;
  DeviceBuffer<double> inv_freq_;
  std::vector<DeviceBuffer<float>> arrays_;
};

class DeviceLayerMemoryGpuTest : public ::testing::TestWithParam<MemoryCase> {
 protected:
  void SetUp() override { QLLM_SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(DeviceLayerMemoryGpuTest, MatchesCpuLayerMemoryChunkByChunk) {
  DeviceIo io;
  testing::ExpectMatchesLayerMemory<DeviceLayerMemory>(GetParam(), &io, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Modes, DeviceLayerMemoryGpuTest,
                         ::testing::ValuesIn(testing::ParityCases()),
                         [](const ::testing::TestParamInfo<MemoryCase>& info) {
                           return info.param.name;
                         });

TEST(DeviceLayerMemoryGpu, RejectsBadArgumentsAndAFullPool) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceIo io;
  testing::ExpectRejectsBadArgumentsAndAFullPool<DeviceLayerMemory>(&io);
}

TEST(DeviceLayerMemoryGpu, SavedStatesTravelBothWaysWithLayerMemory) {
  QLLM_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceIo io;
  testing::ExpectSaveLoadInteroperates<DeviceLayerMemory>(&io, 1e-4);
}

}  // namespace
}  // namespace qllm::cuda
