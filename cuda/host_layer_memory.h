// LayerMemoryEngine (cuda/layer_memory_engine.h) over host arrays and the CPU twins of the
// device ops: the device context memory's orchestration, runnable in every build. It exists so
// that tests/unit/cuda/host_layer_memory_test.cc can hold that orchestration (offsets, counts,
// the order of the steps) to worker::LayerMemory on machines without a GPU; the engine itself
// serves from worker::LayerMemory on the CPU and from DeviceLayerMemory on the device.
// Header-only. The stream argument is ignored (pass nullptr); every op completes before it
// returns.
#ifndef QLLM_CUDA_HOST_LAYER_MEMORY_H_
#define QLLM_CUDA_HOST_LAYER_MEMORY_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/block_topk.h"
#include "cuda/layer_memory_engine.h"
#include "cuda/memory_attention.h"
#include "cuda/memory_ops.h"
#include "cuda/rope.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// A zero-initialized host array with the interface LayerMemoryEngine uses.
template <typename T>
class HostArray {
 public:
  static absl::StatusOr<HostArray> Create(size_t size) { return HostArray(size); }
  HostArray() = default;
  T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  T& operator[](size_t i) const { return data_[i]; }
  absl::Status Download(T* h_dst, size_t count, Stream /*stream*/) const {
    if (count > size_) return absl::InvalidArgumentError("HostArray::Download past the end");
    if (count > 0) std::memcpy(h_dst, data_.get(), count * sizeof(T));
    return absl::OkStatus();
  }

 private:
  explicit HostArray(size_t size)
      : data_(size > 0 ? std::make_unique<T[]>(size) : nullptr), size_(size) {}
  std::unique_ptr<T[]> data_;
  size_t size_ = 0;
};

struct HostMemoryBackend {
  template <typename T>
  using Buffer = HostArray<T>;
  template <typename T>
  using HostBuffer = HostArray<T>;

  static absl::Status CopyRows(const CopyRowsParams& p, Stream) { return CopyRowsRef(p); }
  static absl::Status FillPositions(const FillPositionsParams& p, Stream) {
    return FillPositionsRef(p);
  }
  static absl::Status MeanRows(const MeanRowsParams& p, Stream) { return MeanRowsRef(p); }
  static absl::Status TopMean(const TopMeanParams& p, Stream) { return TopMeanRef(p); }
  static absl::Status GatherBlocks(const GatherBlocksParams& p, Stream) {
    return GatherBlocksRef(p);
  }
  static absl::Status Rope(const RopeParams& p, Stream) { return RopeRef(p); }
  static absl::StatusOr<size_t> BlockTopKWorkspaceBytes(int64_t) { return size_t{0}; }
  static absl::Status BlockTopK(const BlockTopKParams& p, void*, size_t, Stream) {
    return BlockTopKRef(p);
  }
  static absl::Status BlockTopKToHost(const BlockTopKParams& p, void*, size_t, int32_t* h_ids,
                                      float* h_scores, Stream) {
    if (absl::Status s = BlockTopKRef(p); !s.ok()) return s;
    std::copy(p.ids, p.ids + p.selected(), h_ids);
    std::copy(p.scores, p.scores + p.selected(), h_scores);
    return absl::OkStatus();
  }
  static absl::Status MemoryAttention(const MemoryAttentionParams& p, void*, size_t, Stream) {
    return MemoryAttentionRef(p);
  }
  static absl::Status Zero(float* x, int64_t count, Stream) {
    if (count > 0) std::fill(x, x + count, 0.0f);
    return absl::OkStatus();
  }
  static absl::Status Synchronize(Stream) { return absl::OkStatus(); }
};

using HostLayerMemory = LayerMemoryEngine<HostMemoryBackend>;

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_HOST_LAYER_MEMORY_H_
