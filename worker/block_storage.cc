#include "worker/block_storage.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace qllm::worker {

absl::Status InMemoryBlockStorage::Put(const BlockId& id, std::span<const float> k,
                                       std::span<const float> v) {
  if (k.size() != v.size()) return absl::InvalidArgumentError("block K and V sizes differ");
  absl::MutexLock lock(&mu_);
  Block& b = blocks_[id];
  bytes_ -= (b.k.size() + b.v.size()) * sizeof(float);
  b.k.assign(k.begin(), k.end());
  b.v.assign(v.begin(), v.end());
  bytes_ += (b.k.size() + b.v.size()) * sizeof(float);
  return absl::OkStatus();
}

absl::Status InMemoryBlockStorage::MultiGet(std::span<const BlockId> ids, size_t floats_per_block,
                                            float* k_out, float* v_out) {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = blocks_.find(ids[i]);
    if (it == blocks_.end()) {
      return absl::NotFoundError(absl::StrCat("block ", ids[i].block, " of layer ", ids[i].layer,
                                              " (session ", ids[i].session, ") is not stored"));
    }
    if (it->second.k.size() != floats_per_block) {
      return absl::InternalError(absl::StrCat("block ", ids[i].block, " holds ",
                                              it->second.k.size(), " values, expected ",
                                              floats_per_block));
    }
    std::memcpy(k_out + i * floats_per_block, it->second.k.data(), floats_per_block * 4);
    std::memcpy(v_out + i * floats_per_block, it->second.v.data(), floats_per_block * 4);
  }
  return absl::OkStatus();
}

absl::Status InMemoryBlockStorage::DeleteSession(uint64_t session) {
  absl::MutexLock lock(&mu_);
  auto it = blocks_.lower_bound(BlockId{session, INT32_MIN, INT32_MIN});
  while (it != blocks_.end() && it->first.session == session) {
    bytes_ -= (it->second.k.size() + it->second.v.size()) * sizeof(float);
    it = blocks_.erase(it);
  }
  return absl::OkStatus();
}

size_t InMemoryBlockStorage::num_blocks() const {
  absl::MutexLock lock(&mu_);
  return blocks_.size();
}

size_t InMemoryBlockStorage::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

}  // namespace qllm::worker
