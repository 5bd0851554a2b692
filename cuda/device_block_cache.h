// The device block tier of one layer (../shared/docs/qllm-algorithm.md, "The fast tier and the
// memory store"): the K and V of up to `num_slots` (max_cached_block) memory blocks resident in
// one device allocation, kept by LRU (cuda/block_cache_lru.h). Ensure makes the blocks a chunk
// selected resident: hits cost nothing, misses are read on the host through a BlockLoader into
// pinned staging buffers and uploaded on the cache's own copy stream, and the compute stream is
// made to wait (cudaStreamWaitEvent) for the uploads only, so they overlap the work already
// enqueued on the compute stream (the local-window part of the attention).
//
// Layout of the allocation: the K of slot s at d_k(s) = base + s * floats_per_block, the V of
// slot s at d_v(s) = base + (num_slots + s) * floats_per_block; within a block, rows are
// [block_size, kv_dim] as the memory stores them (fp32).
//
// Request protocol, per chunk and layer:
//   ASSIGN_OR_RETURN(slots, cache->Ensure(selected, loader, compute));  // pins `selected`
//   ... enqueue the attention reading d_k(slots[i]) / d_v(slots[i]) (or Gather) on compute ...
//   RETURN_IF_ERROR(cache->Release(compute));  // unpins; records when compute is done
// Pinned blocks are never evicted, so a request holds at most num_slots distinct blocks
// (several Ensure calls may add to one request). A later upload into an evicted slot waits on
// the device for the compute work enqueued before the latest Release, never for later work.
//
// CUDA builds only (the header compiles everywhere). Not thread-safe: one layer's thread uses
// it, with one compute stream (or streams the caller orders after each other).
#ifndef QLLM_CUDA_DEVICE_BLOCK_CACHE_H_
#define QLLM_CUDA_DEVICE_BLOCK_CACHE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/block_cache_lru.h"
#include "cuda/device.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Reads memory blocks from the host tiers. The engine's implementation reads
// worker::BlockStorage (host memory or the memstore) with BlockKey -> worker::BlockId.
class BlockLoader {
 public:
  virtual ~BlockLoader() = default;

  // Writes the K and V of keys[i] to h_k / h_v at offset i * floats_per_block (pinned host
  // memory owned by the cache, valid only during the call).
  // Errors: whatever the store reports (NOT_FOUND, DATA_LOSS, UNAVAILABLE, ...); Ensure
  // returns them unchanged.
  virtual absl::Status Load(std::span<const BlockKey> keys, size_t floats_per_block, float* h_k,
                            float* h_v) = 0;

  // Hints that `keys` will be loaded soon (Ensure calls it once with every miss before loading
  // them in staging-sized rounds). Default: nothing.
  virtual void Prefetch(std::span<const BlockKey> /*keys*/) {}
};

struct DeviceBlockCacheOptions {
  // Slots, i.e. blocks resident on the device (the paper's max_cached_block). Required, > 0.
  int32_t num_slots = 0;
  // Floats in the K (and in the V) of one block: block_size * kv_dim. Required, > 0.
  size_t floats_per_block = 0;
  // Blocks per pinned staging buffer; the cache owns two (K and V each), so that the loader
  // fills one while the other uploads. Misses beyond it load in several rounds.
  // Default: 0, meaning min(num_slots, 16).
  int32_t staging_blocks = 0;
};

// Counters since creation (or ResetStats).
struct DeviceBlockCacheStats {
  int64_t hits = 0;            // Distinct requested blocks already resident.
  int64_t misses = 0;          // Blocks loaded and uploaded.
  int64_t evictions = 0;       // Resident blocks dropped for a miss.
  int64_t bytes_uploaded = 0;  // Host-to-device bytes (K and V).
  int64_t load_rounds = 0;     // BlockLoader::Load calls.
};

class DeviceBlockCache {
 public:
  // Allocates the slots (2 * num_slots * floats_per_block floats), the pinned staging buffers,
  // the copy stream and events on the current device.
  // INVALID_ARGUMENT for bad options; RESOURCE_EXHAUSTED when device or pinned memory runs
  // out; UNAVAILABLE without a usable device.
  static absl::StatusOr<std::unique_ptr<DeviceBlockCache>> Create(
      const DeviceBlockCacheOptions& options);

  ~DeviceBlockCache();
  DeviceBlockCache(const DeviceBlockCache&) = delete;
  DeviceBlockCache& operator=(const DeviceBlockCache&) = delete;

  // Makes `keys` resident and pinned for the current request and returns the slot of each
  // (keys[i] -> slots[i]; duplicates share a slot). Misses are loaded through `loader` (not
  // stored; must be valid during the call) and uploaded on the copy stream; `compute` then
  // waits for those uploads on the device, so work enqueued on `compute` after this call sees
  // the data. Blocks the host only while the loader runs and, before it refills a staging
  // buffer, until that buffer's previous upload has finished.
  // Errors: INVALID_ARGUMENT when the request would pin more than num_slots distinct blocks
  // (nothing changes); the loader's error (the blocks of this call that missed are dropped,
  // their slots empty; the hits stay pinned); UNAVAILABLE / INTERNAL from CUDA.
  absl::StatusOr<std::vector<int32_t>> Ensure(std::span<const BlockKey> keys, BlockLoader* loader,
                                              Stream compute);

  // Ends the current request: records an event on `compute` after the work that reads the
  // pinned slots (call it after enqueueing that work) and unpins them.
  // Errors: UNAVAILABLE / INTERNAL from CUDA (the slots are unpinned anyway).
  absl::Status Release(Stream compute);

  // Enqueues on `stream` device-to-device copies of the K (V) of `slots`, in order, into
  // d_k_out (d_v_out), dense [slots.size() * floats_per_block] each: the global keys and
  // values of the attention in one array. Slots must be pinned by the current request.
  // INVALID_ARGUMENT for a slot out of range; UNAVAILABLE / INTERNAL from CUDA.
  absl::Status Gather(std::span<const int32_t> slots, float* d_k_out, float* d_v_out,
                      Stream stream) const;

  // Device pointers to the K / V of `slot` (REQUIRES: 0 <= slot < num_slots). Owned by the
  // cache; valid until it is destroyed. The contents are those of the block in the slot while
  // the request that pinned it lasts.
  const float* d_k(int32_t slot) const;
  const float* d_v(int32_t slot) const;

  // The slot of `key` if resident, else -1.
  int32_t Find(const BlockKey& key) const { return lru_.Find(key); }

  int32_t num_slots() const { return options_.num_slots; }
  size_t floats_per_block() const { return options_.floats_per_block; }
  const DeviceBlockCacheStats& stats() const { return stats_; }
  void ResetStats() { stats_ = DeviceBlockCacheStats{}; }

 private:
  DeviceBlockCache(const DeviceBlockCacheOptions& options, DeviceBuffer<float> d_slots,
                   std::array<PinnedHostBuffer<float>, 2> h_staging, CudaStream copy_stream,
                   std::array<CudaEvent, 2> staging_free, CudaEvent upload_done,
                   CudaEvent released);

  // Loads and uploads keys[misses[...]] into slots[...]; see Ensure.
  absl::Status Upload(std::span<const BlockKey> keys, const BlockCacheLru::Assignment& a,
                      BlockLoader* loader, Stream compute);

  const DeviceBlockCacheOptions options_;  // staging_blocks resolved.
  BlockCacheLru lru_;
  DeviceBuffer<float> d_slots_;
  // Two staging buffers, each [staging_blocks] K blocks then [staging_blocks] V blocks.
  std::array<PinnedHostBuffer<float>, 2> h_staging_;
  CudaStream copy_stream_;
  // Recorded on the copy stream after the uploads out of staging buffer i.
  std::array<CudaEvent, 2> staging_free_;
  CudaEvent upload_done_;  // After the last upload of an Ensure.
  CudaEvent released_;     // On the compute stream at the latest Release.
  int next_staging_ = 0;
  DeviceBlockCacheStats stats_;
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_BLOCK_CACHE_H_
