// The bookkeeping of the device block tier (cuda/device_block_cache.h), without any CUDA: which
// memory block occupies which of `num_slots` slots, and which slot a missing block evicts.
// Plain C++ so that the policy is testable on a CPU-only machine.
//
// Requests. The slots handed out by Acquire stay pinned until Release: they belong to the
// current request (the attention that reads them has not run yet), so no Acquire evicts them.
// Among the unpinned slots, empty slots are filled first, then the least recently used block
// is evicted. "Use" is an Acquire that names the block (hit or miss); a request's blocks
// re-enter the LRU order at Release, in the order they were last named.
#ifndef QLLM_CUDA_BLOCK_CACHE_LRU_H_
#define QLLM_CUDA_BLOCK_CACHE_LRU_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <span>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace qllm::cuda {

// Identifies one memory block: the session or document that owns it (worker::BlockId::session,
// document bit included), the layer and the block index within the layer.
struct BlockKey {
  uint64_t owner = 0;
  int32_t layer = 0;
  int32_t block = 0;

  friend bool operator==(const BlockKey& a, const BlockKey& b) {
    return a.owner == b.owner && a.layer == b.layer && a.block == b.block;
  }
  friend bool operator<(const BlockKey& a, const BlockKey& b) {
    return std::tie(a.owner, a.layer, a.block) < std::tie(b.owner, b.layer, b.block);
  }
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const {
    const uint64_t lb = (static_cast<uint64_t>(static_cast<uint32_t>(k.layer)) << 32) |
                        static_cast<uint32_t>(k.block);
    return std::hash<uint64_t>()(k.owner * 0x9E3779B97F4A7C15ull ^ lb);
  }
};

// Not thread-safe: one owner (the layer's cache) calls it.
class BlockCacheLru {
 public:
  // The result of one Acquire. slots[i] is the slot of keys[i] (a key named twice gets the same
  // slot). misses lists, once per missing block, the index into `keys` of its first occurrence;
  // the caller must fill slots[misses[j]] with that block (or Invalidate it).
  struct Assignment {
    std::vector<int32_t> slots;
    std::vector<size_t> misses;
    int64_t hits = 0;       // Distinct keys already resident (pinned by this request or not).
    int64_t evictions = 0;  // Resident blocks dropped to make room.
  };

  // REQUIRES: num_slots > 0.
  explicit BlockCacheLru(int32_t num_slots);
  BlockCacheLru(const BlockCacheLru&) = delete;
  BlockCacheLru& operator=(const BlockCacheLru&) = delete;

  // Adds `keys` to the current request: resident keys are hits, the others get a slot (empty
  // first, else the least recently used unpinned one, whose block is evicted). Every returned
  // slot is pinned until Release.
  // INVALID_ARGUMENT, with nothing changed, when the request would pin more than num_slots
  // distinct blocks.
  absl::StatusOr<Assignment> Acquire(std::span<const BlockKey> keys);

  // Ends the current request: unpins its slots, which re-enter the LRU order as most recently
  // used (in the order they were last acquired).
  void Release();

  // Drops the blocks in `slots` (e.g. a load failed): each slot becomes empty, unpinned and the
  // first to be filled. Slots that are already empty are ignored. REQUIRES: valid slot numbers.
  void Invalidate(std::span<const int32_t> slots);

  // The slot holding `key`, or -1.
  int32_t Find(const BlockKey& key) const;

  int32_t num_slots() const { return static_cast<int32_t>(slots_.size()); }
  int32_t num_pinned() const { return num_pinned_; }
  int32_t num_resident() const { return static_cast<int32_t>(index_.size()); }

 private:
  struct Slot {
    BlockKey key;
    bool valid = false;
    bool pinned = false;
    uint64_t last_use = 0;
    std::list<int32_t>::iterator pos;  // In order_ iff !pinned.
  };

  // Unpinned slots, eviction candidates first: empty slots, then valid ones from least to
  // most recently used.
  std::list<int32_t> order_;
  std::vector<Slot> slots_;
  std::unordered_map<BlockKey, int32_t, BlockKeyHash> index_;
  std::vector<int32_t> pinned_;  // The current request's slots.
  int32_t num_pinned_ = 0;
  uint64_t tick_ = 0;
};

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_BLOCK_CACHE_LRU_H_
