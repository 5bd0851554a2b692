#include "memstore/internal/host_cache.h"

#include <utility>

#include "absl/hash/hash.h"
#include "common/logging.h"

namespace qllm::memstore::internal {

HostCache::HostCache(size_t capacity_bytes, int num_shards)
    : capacity_bytes_(capacity_bytes),
      shard_capacity_(capacity_bytes / static_cast<size_t>(num_shards > 0 ? num_shards : 1)) {
  QLLM_CHECK(num_shards >= 1) << "num_shards=" << num_shards;
  for (int i = 0; i < num_shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

HostCache::Shard& HostCache::ShardFor(const BlockId& id) {
  return *shards_[absl::Hash<BlockId>()(id) % shards_.size()];
}

void HostCache::EraseLocked(Shard& shard, std::list<std::pair<BlockId, BlockRef>>::iterator it) {
  shard.bytes -= it->second->data().size();
  shard.index.erase(it->first);
  shard.lru.erase(it);
}

BlockRef HostCache::Lookup(const BlockId& id, bool count) {
  Shard& shard = ShardFor(id);
  absl::MutexLock lock(&shard.mu);
  auto found = shard.index.find(id);
  if (found == shard.index.end()) {
    if (count) misses_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  if (count) hits_.fetch_add(1, std::memory_order_relaxed);
  shard.lru.splice(shard.lru.begin(), shard.lru, found->second);
  return found->second->second;
}

void HostCache::Insert(const BlockId& id, BlockRef block) {
  const size_t charge = block->data().size();
  if (charge > shard_capacity_) return;
  Shard& shard = ShardFor(id);
  absl::MutexLock lock(&shard.mu);
  if (auto found = shard.index.find(id); found != shard.index.end()) {
    EraseLocked(shard, found->second);
  }
  while (shard.bytes + charge > shard_capacity_ && !shard.lru.empty()) {
    EraseLocked(shard, std::prev(shard.lru.end()));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  shard.lru.emplace_front(id, std::move(block));
  shard.index[id] = shard.lru.begin();
  shard.bytes += charge;
}

void HostCache::Erase(const BlockId& id) {
  Shard& shard = ShardFor(id);
  absl::MutexLock lock(&shard.mu);
  if (auto found = shard.index.find(id); found != shard.index.end()) {
    EraseLocked(shard, found->second);
  }
}

void HostCache::EraseOwner(const OwnerId& owner) {
  for (auto& shard : shards_) {
    absl::MutexLock lock(&shard->mu);
    for (auto it = shard->lru.begin(); it != shard->lru.end();) {
      auto next = std::next(it);
      if (it->first.owner == owner) EraseLocked(*shard, it);
      it = next;
    }
  }
}

HostCacheStats HostCache::GetStats() const {
  HostCacheStats stats;
  for (const auto& shard : shards_) {
    absl::MutexLock lock(&shard->mu);
    stats.blocks += shard->lru.size();
    stats.bytes += shard->bytes;
  }
  stats.capacity_bytes = capacity_bytes_;
  stats.hits = hits_.load(std::memory_order_relaxed);
  stats.misses = misses_.load(std::memory_order_relaxed);
  stats.evictions = evictions_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace qllm::memstore::internal
