#include "cuda/device_block_cache.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda {
namespace {

constexpr int32_t kDefaultStagingBlocks = 16;

// Calls fn(first, begin, count) for each maximal run of consecutive slots
// slots[begin], slots[begin] + 1, ..., so that blocks that landed in adjacent slots move in one
// copy (a fresh cache fills its slots in order).
template <typename Fn>
absl::Status ForEachRun(std::span<const int32_t> slots, Fn fn) {
  size_t begin = 0;
  while (begin < slots.size()) {
    size_t end = begin + 1;
    while (end < slots.size() && slots[end] == slots[end - 1] + 1) ++end;
    RETURN_IF_ERROR(fn(slots[begin], begin, end - begin));
    begin = end;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceBlockCache>> DeviceBlockCache::Create(
    const DeviceBlockCacheOptions& options) {
  if (options.num_slots <= 0 || options.floats_per_block == 0 || options.staging_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceBlockCache: num_slots ", options.num_slots, ", floats_per_block ",
                     options.floats_per_block, ", staging_blocks ", options.staging_blocks));
  }
  DeviceBlockCacheOptions resolved = options;
  if (resolved.staging_blocks == 0) {
    resolved.staging_blocks = std::min(resolved.num_slots, kDefaultStagingBlocks);
  }
  resolved.staging_blocks = std::min(resolved.staging_blocks, resolved.num_slots);
  const size_t fpb = resolved.floats_per_block;
  ASSIGN_OR_RETURN(DeviceBuffer<float> d_slots,
                   DeviceBuffer<float>::Create(2 * static_cast<size_t>(resolved.num_slots) * fpb));
  std::array<PinnedHostBuffer<float>, 2> staging;
  std::array<CudaEvent, 2> staging_free;
  for (int i = 0; i < 2; ++i) {
    ASSIGN_OR_RETURN(staging[i], PinnedHostBuffer<float>::Create(
                                     2 * static_cast<size_t>(resolved.staging_blocks) * fpb));
    ASSIGN_OR_RETURN(staging_free[i], CudaEvent::Create());
  }
  ASSIGN_OR_RETURN(CudaStream copy_stream, CudaStream::Create());
  ASSIGN_OR_RETURN(CudaEvent upload_done, CudaEvent::Create());
  ASSIGN_OR_RETURN(CudaEvent released, CudaEvent::Create());
  return std::unique_ptr<DeviceBlockCache>(
      new DeviceBlockCache(resolved, std::move(d_slots), std::move(staging), std::move(copy_stream),
                           std::move(staging_free), std::move(upload_done), std::move(released)));
}

DeviceBlockCache::DeviceBlockCache(const DeviceBlockCacheOptions& options,
                                   DeviceBuffer<float> d_slots,
                                   std::array<PinnedHostBuffer<float>, 2> h_staging,
                                   CudaStream copy_stream, std::array<CudaEvent, 2> staging_free,
                                   CudaEvent upload_done, CudaEvent released)
    : options_(options),
      lru_(options.num_slots),
      d_slots_(std::move(d_slots)),
      h_staging_(std::move(h_staging)),
      copy_stream_(std::move(copy_stream)),
      staging_free_(std::move(staging_free)),
      upload_done_(std::move(upload_done)),
      released_(std::move(released)) {}

DeviceBlockCache::~DeviceBlockCache() {
  // The copy stream may still read the staging buffers; they are freed after it drains.
  if (absl::Status s = copy_stream_.Synchronize(); !s.ok()) {
    QLLM_LOG(ERROR) << "DeviceBlockCache: copy stream: " << s;
  }
}

const float* DeviceBlockCache::d_k(int32_t slot) const {
  QLLM_CHECK(slot >= 0 && slot < options_.num_slots) << "DeviceBlockCache: slot " << slot;
  return d_slots_.data() + static_cast<size_t>(slot) * options_.floats_per_block;
}

const float* DeviceBlockCache::d_v(int32_t slot) const {
  QLLM_CHECK(slot >= 0 && slot < options_.num_slots) << "DeviceBlockCache: slot " << slot;
  return d_slots_.data() +
         static_cast<size_t>(options_.num_slots + slot) * options_.floats_per_block;
}

absl::StatusOr<std::vector<int32_t>> DeviceBlockCache::Ensure(std::span<const BlockKey> keys,
                                                              BlockLoader* loader, Stream compute) {
  ASSIGN_OR_RETURN(BlockCacheLru::Assignment a, lru_.Acquire(keys));
  stats_.hits += a.hits;
  stats_.evictions += a.evictions;
  if (a.misses.empty()) return std::move(a.slots);
  if (absl::Status s = Upload(keys, a, loader, compute); !s.ok()) {
    // The missed slots hold partial data: drop them. Uploads still in flight into them are
    // ordered before any later upload (one copy stream), and no compute work waited for them.
    std::vector<int32_t> missed;
    missed.reserve(a.misses.size());
    for (size_t i : a.misses) missed.push_back(a.slots[i]);
    lru_.Invalidate(missed);
    return s;
  }
  stats_.misses += static_cast<int64_t>(a.misses.size());
  return std::move(a.slots);
}

absl::Status DeviceBlockCache::Upload(std::span<const BlockKey> keys,
                                      const BlockCacheLru::Assignment& a, BlockLoader* loader,
                                      Stream compute) {
  const size_t fpb = options_.floats_per_block;
  const size_t staging = static_cast<size_t>(options_.staging_blocks);
  std::vector<BlockKey> miss_keys;
  std::vector<int32_t> miss_slots;
  miss_keys.reserve(a.misses.size());
  miss_slots.reserve(a.misses.size());
  for (size_t i : a.misses) {
    miss_keys.push_back(keys[i]);
    miss_slots.push_back(a.slots[i]);
  }
  if (miss_keys.size() > staging) loader->Prefetch(miss_keys);

  // An evicted slot may still be read by compute work enqueued before the latest Release; the
  // uploads wait for that work (and only that: later compute work overlaps them).
  const Stream copy = copy_stream_.get();
  RETURN_IF_ERROR(released_.StreamWait(copy));
  for (size_t start = 0; start < miss_keys.size(); start += staging) {
    const size_t count = std::min(staging, miss_keys.size() - start);
    const int b = next_staging_;
    next_staging_ ^= 1;
    // The buffer's previous uploads must be done before the loader overwrites it.
    RETURN_IF_ERROR(staging_free_[b].Synchronize());
    float* h_k = h_staging_[b].data();
    float* h_v = h_k + staging * fpb;
    RETURN_IF_ERROR(
        loader->Load(std::span<const BlockKey>(miss_keys).subspan(start, count), fpb, h_k, h_v));
    ++stats_.load_rounds;
    RETURN_IF_ERROR(
        ForEachRun(std::span<const int32_t>(miss_slots).subspan(start, count),
                   [&](int32_t first, size_t begin, size_t n) -> absl::Status {
                     const size_t k_off = static_cast<size_t>(first) * fpb;
                     const size_t v_off = static_cast<size_t>(options_.num_slots + first) * fpb;
                     RETURN_IF_ERROR(d_slots_.Upload(h_k + begin * fpb, n * fpb, copy, k_off));
                     return d_slots_.Upload(h_v + begin * fpb, n * fpb, copy, v_off);
                   }));
    RETURN_IF_ERROR(staging_free_[b].Record(copy));
    stats_.bytes_uploaded += static_cast<int64_t>(2 * count * fpb * sizeof(float));
  }
  RETURN_IF_ERROR(upload_done_.Record(copy));
  return upload_done_.StreamWait(compute);
}

absl::Status DeviceBlockCache::Release(Stream compute) {
  lru_.Release();
  return released_.Record(compute);
}

absl::Status DeviceBlockCache::Gather(std::span<const int32_t> slots, float* d_k_out,
                                      float* d_v_out, Stream stream) const {
  for (int32_t s : slots) {
    if (s < 0 || s >= options_.num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("DeviceBlockCache::Gather: slot ", s,
                                                     " outside [0, ", options_.num_slots, ")"));
    }
  }
  const size_t fpb = options_.floats_per_block;
  return ForEachRun(slots, [&](int32_t first, size_t begin, size_t n) -> absl::Status {
    const size_t bytes = n * fpb * sizeof(float);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_k_out + begin * fpb, d_k(first), bytes,
                                         cudaMemcpyDeviceToDevice, stream));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_v_out + begin * fpb, d_v(first), bytes,
                                         cudaMemcpyDeviceToDevice, stream));
    return absl::OkStatus();
  });
}

}  // namespace qllm::cuda
