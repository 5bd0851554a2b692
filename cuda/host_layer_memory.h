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
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/block_cache_lru.h"
#include "cuda/block_topk.h"
#include "cuda/device_block_cache.h"
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
  absl::Status Upload(const T* h_src, size_t count, Stream /*stream*/) {
    if (count > size_) return absl::InvalidArgumentError("HostArray::Upload past the end");
    if (count > 0) std::memcpy(data_.get(), h_src, count * sizeof(T));
    return absl::OkStatus();
  }
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

// DeviceBlockCache's protocol over host memory: the same LRU (cuda/block_cache_lru.h), misses
// loaded straight into their slots.
class HostBlockCache {
 public:
  static absl::StatusOr<std::unique_ptr<HostBlockCache>> Create(
      const DeviceBlockCacheOptions& options) {
    if (options.num_slots <= 0 || options.floats_per_block == 0) {
      return absl::InvalidArgumentError("host block cache: num_slots and floats_per_block > 0");
    }
    return std::unique_ptr<HostBlockCache>(new HostBlockCache(options));
  }
  absl::StatusOr<std::vector<int32_t>> Ensure(std::span<const BlockKey> keys, BlockLoader* loader,
                                              Stream /*compute*/) {
    absl::StatusOr<BlockCacheLru::Assignment> a = lru_.Acquire(keys);
    if (!a.ok()) return a.status();
    if (a->misses.empty()) return std::move(a->slots);
    std::vector<BlockKey> miss_keys;
    std::vector<int32_t> miss_slots;
    for (size_t i : a->misses) {
      miss_keys.push_back(keys[i]);
      miss_slots.push_back(a->slots[i]);
    }
    const size_t fpb = options_.floats_per_block;
    std::vector<float> k(miss_keys.size() * fpb), v(miss_keys.size() * fpb);
    if (absl::Status s = loader->Load(miss_keys, fpb, k.data(), v.data()); !s.ok()) {
      lru_.Invalidate(miss_slots);
      return s;
    }
    for (size_t j = 0; j < miss_slots.size(); ++j) {
      std::memcpy(slot_k(miss_slots[j]), k.data() + j * fpb, fpb * sizeof(float));
      std::memcpy(slot_v(miss_slots[j]), v.data() + j * fpb, fpb * sizeof(float));
    }
    misses_ += static_cast<int64_t>(miss_slots.size());
    return std::move(a->slots);
  }
  absl::Status Release(Stream /*compute*/) {
    lru_.Release();
    return absl::OkStatus();
  }
  const float* d_k(int32_t slot) const { return data_.data() + slot * options_.floats_per_block; }
  const float* d_v(int32_t slot) const {
    return data_.data() + (options_.num_slots + slot) * options_.floats_per_block;
  }
  int32_t num_slots() const { return options_.num_slots; }
  // Blocks loaded since creation.
  int64_t misses() const { return misses_; }

 private:
  explicit HostBlockCache(const DeviceBlockCacheOptions& options)
      : options_(options),
        lru_(options.num_slots),
        data_(2 * static_cast<size_t>(options.num_slots) * options.floats_per_block, 0.0f) {}
  float* slot_k(int32_t slot) { return data_.data() + slot * options_.floats_per_block; }
  float* slot_v(int32_t slot) {
    return data_.data() + (options_.num_slots + slot) * options_.floats_per_block;
  }

  const DeviceBlockCacheOptions options_;
  BlockCacheLru lru_;
  std::vector<float> data_;
  int64_t misses_ = 0;
};

// CudaEvent's protocol where every op has completed when it returns.
class HostEvent {
 public:
  static absl::StatusOr<HostEvent> Create() { return HostEvent(); }
  absl::Status Record(Stream /*stream*/) const { return absl::OkStatus(); }
  absl::Status Synchronize() const { return absl::OkStatus(); }
};

struct HostMemoryBackend {
  template <typename T>
  using Buffer = HostArray<T>;
  template <typename T>
  using HostBuffer = HostArray<T>;
  using BlockCache = HostBlockCache;
  using Event = HostEvent;

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
  static absl::Status MemoryAttentionLocalScores(const MemoryAttentionParams& p, Stream) {
    return MemoryAttentionLocalScoresRef(p);
  }
  static absl::Status MergeAttention(const MergeAttentionParams& p, Stream) {
    return MergeAttentionRef(p);
  }
  static absl::Status Zero(float* x, int64_t count, Stream) {
    if (count > 0) std::fill(x, x + count, 0.0f);
    return absl::OkStatus();
  }
  static absl::Status CopyToHost(float* host, const float* src, int64_t count, Stream) {
    if (count > 0) std::memcpy(host, src, static_cast<size_t>(count) * sizeof(float));
    return absl::OkStatus();
  }
  static absl::Status Synchronize(Stream) { return absl::OkStatus(); }
};

using HostLayerMemory = LayerMemoryEngine<HostMemoryBackend>;

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_HOST_LAYER_MEMORY_H_
