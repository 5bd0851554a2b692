// The device context memory's orchestration (cuda/layer_memory_engine.h) over host arrays and
// the CPU twins of its ops (cuda/host_layer_memory.h), against worker::LayerMemory: the checks
// of tests/testutil/layer_memory_parity.h in every build, so a wrong offset, count or step
// order in the code DeviceLayerMemory runs fails here without a GPU. The twins share the CPU
// path's arithmetic except for the order in which the attention sums global and pending keys,
// hence the bound of 1e-5.
#include "cuda/host_layer_memory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "tests/testutil/layer_memory_parity.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::MemoryCase;

class HostIo {
 public:
  HostIo() : inv_freq_(testing::ParityInvFreq()) {}
  float* Upload(const std::vector<float>& host) {
    arrays_.push_back(std::make_unique<std::vector<float>>(host));
    return arrays_.back()->data();
  }
  float* Alloc(size_t count) { return Upload(std::vector<float>(count, 0.0f)); }
  std::vector<float> Download(const float* p, size_t count) {
    return std::vector<float>(p, p + count);
  }
  const double* inv_freq() const { return inv_freq_.data(); }
  Stream stream() const { return nullptr; }

 private:
  std::vector<double> inv_freq_;
  std::vector<std::unique_ptr<std::vector<float>>> arrays_;
};

class HostLayerMemoryTest : public ::testing::TestWithParam<MemoryCase> {};

TEST_P(HostLayerMemoryTest, MatchesCpuLayerMemoryChunkByChunk) {
  HostIo io;
  testing::ExpectMatchesLayerMemory<HostLayerMemory>(GetParam(), &io, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Modes, HostLayerMemoryTest, ::testing::ValuesIn(testing::ParityCases()),
                         [](const ::testing::TestParamInfo<MemoryCase>& info) {
                           return info.param.name;
                         });

TEST(HostLayerMemory, RejectsBadArgumentsAndAFullPool) {
  HostIo io;
  testing::ExpectRejectsBadArgumentsAndAFullPool<HostLayerMemory>(&io);
}

TEST(HostLayerMemory, SavedStatesTravelBothWaysWithLayerMemory) {
  HostIo io;
  testing::ExpectSaveLoadInteroperates<HostLayerMemory>(&io, 1e-5);
}

}  // namespace
}  // namespace qllm::cuda
