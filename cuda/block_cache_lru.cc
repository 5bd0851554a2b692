#include "cuda/block_cache_lru.h"

#include <algorithm>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace qllm::cuda {

BlockCacheLru::BlockCacheLru(int32_t num_slots) {
  QLLM_CHECK(num_slots > 0) << "BlockCacheLru: num_slots " << num_slots;
  slots_.resize(static_cast<size_t>(num_slots));
  for (int32_t s = 0; s < num_slots; ++s) {
    slots_[static_cast<size_t>(s)].pos = order_.insert(order_.end(), s);
  }
}

int32_t BlockCacheLru::Find(const BlockKey& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? -1 : it->second;
}

absl::StatusOr<BlockCacheLru::Assignment> BlockCacheLru::Acquire(std::span<const BlockKey> keys) {
  // Count the slots this request would newly pin before changing anything.
  std::unordered_set<BlockKey, BlockKeyHash> fresh;
  for (const BlockKey& key : keys) {
    const int32_t s = Find(key);
    if (s < 0 || !slots_[static_cast<size_t>(s)].pinned) fresh.insert(key);
  }
  if (static_cast<size_t>(num_pinned_) + fresh.size() > slots_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BlockCacheLru: a request of ", num_pinned_ + static_cast<int64_t>(fresh.size()),
        " distinct blocks does not fit ", slots_.size(), " slots"));
  }

  Assignment a;
  a.slots.assign(keys.size(), -1);
  auto pin = [&](int32_t s) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    slot.last_use = ++tick_;
    if (slot.pinned) return;
    order_.erase(slot.pos);
    slot.pinned = true;
    pinned_.push_back(s);
    ++num_pinned_;
  };
  // Hits first, so that a miss never evicts a block that this same request names later.
  std::unordered_set<BlockKey, BlockKeyHash> seen;
  for (size_t i = 0; i < keys.size(); ++i) {
    const int32_t s = Find(keys[i]);
    if (s < 0) continue;
    if (seen.insert(keys[i]).second) ++a.hits;
    a.slots[i] = s;
    pin(s);
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (a.slots[i] >= 0) continue;
    const int32_t s = Find(keys[i]);
    if (s >= 0) {  // Named twice in `keys`: the first occurrence took the slot.
      a.slots[i] = s;
      continue;
    }
    QLLM_CHECK(!order_.empty()) << "BlockCacheLru: no unpinned slot";
    const int32_t victim = order_.front();
    Slot& slot = slots_[static_cast<size_t>(victim)];
    if (slot.valid) {
      index_.erase(slot.key);
      ++a.evictions;
    }
    slot.key = keys[i];
    slot.valid = true;
    index_.emplace(keys[i], victim);
    a.slots[i] = victim;
    a.misses.push_back(i);
    pin(victim);
  }
  return a;
}

void BlockCacheLru::Release() {
  std::sort(pinned_.begin(), pinned_.end(), [this](int32_t x, int32_t y) {
    return slots_[static_cast<size_t>(x)].last_use < slots_[static_cast<size_t>(y)].last_use;
  });
  for (int32_t s : pinned_) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    slot.pinned = false;
    slot.pos = order_.insert(order_.end(), s);
  }
  pinned_.clear();
  num_pinned_ = 0;
}

void BlockCacheLru::Invalidate(std::span<const int32_t> slots) {
  for (int32_t s : slots) {
    QLLM_CHECK(s >= 0 && s < num_slots()) << "BlockCacheLru::Invalidate: slot " << s;
    Slot& slot = slots_[static_cast<size_t>(s)];
    if (!slot.valid) continue;
    index_.erase(slot.key);
    slot.valid = false;
    if (slot.pinned) {
      slot.pinned = false;
      pinned_.erase(std::find(pinned_.begin(), pinned_.end(), s));
      --num_pinned_;
    } else {
      order_.erase(slot.pos);
    }
    slot.pos = order_.insert(order_.begin(), s);
  }
}

}  // namespace qllm::cuda
