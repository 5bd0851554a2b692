// The host-memory tier: a sharded LRU of blocks bounded in bytes of K+V data.
#ifndef QLLM_MEMSTORE_INTERNAL_HOST_CACHE_H_
#define QLLM_MEMSTORE_INTERNAL_HOST_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "memstore/types.h"

namespace qllm::memstore::internal {

// Counters of a HostCache.
struct HostCacheStats {
  uint64_t blocks = 0;
  uint64_t bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
};

// An LRU map BlockId -> BlockRef whose total charge (Block::data().size()) stays at or below
// the capacity. The capacity is split evenly over the shards; a block larger than one shard's
// share is not cached. Readers share the cached Block, so eviction never invalidates a ref a
// reader holds. Thread-safe.
class HostCache {
 public:
  // `capacity_bytes` == 0 makes every Insert a no-op. REQUIRES: num_shards >= 1.
  HostCache(size_t capacity_bytes, int num_shards);
  HostCache(const HostCache&) = delete;
  HostCache& operator=(const HostCache&) = delete;

  // Returns the cached block and marks it most recently used, or nullptr. Counts a hit or miss
  // when `count` is true.
  BlockRef Lookup(const BlockId& id, bool count = true);
  // Inserts or replaces `id`, evicting least recently used blocks of the shard as needed.
  void Insert(const BlockId& id, BlockRef block);
  // Removes `id` if present.
  void Erase(const BlockId& id);
  // Removes every block of `owner`. Walks every entry: O(cached blocks).
  void EraseOwner(const OwnerId& owner);

  HostCacheStats GetStats() const;

 private:
  struct Shard {
    mutable absl::Mutex mu;
    std::list<std::pair<BlockId, BlockRef>> lru ABSL_GUARDED_BY(mu);  // Front = most recent.
    absl::flat_hash_map<BlockId, std::list<std::pair<BlockId, BlockRef>>::iterator> index
        ABSL_GUARDED_BY(mu);
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardFor(const BlockId& id);
  static void EraseLocked(Shard& shard, std::list<std::pair<BlockId, BlockRef>>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const size_t capacity_bytes_;
  const size_t shard_capacity_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace qllm::memstore::internal

#endif  // QLLM_MEMSTORE_INTERNAL_HOST_CACHE_H_
