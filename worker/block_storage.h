// Where a layer's memory blocks keep their keys and values. The context memory writes each
// block once when it is cut and reads back only the blocks retrieval selects; scoring never
// touches block K/V. Implementations: InMemoryBlockStorage (here) and the RocksDB-backed
// memstore (memstore/), plugged in behind this interface.
#ifndef QLLM_WORKER_BLOCK_STORAGE_H_
#define QLLM_WORKER_BLOCK_STORAGE_H_

#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace qllm::worker {

// Marks a BlockId::session that names a document instead of a session: the blocks of a document
// prefilled once and persisted (its id is `session & ~kDocumentOwnerBit`). The context memory
// gives blocks this owner when the ingesting session's id carries the bit, and a session
// restored from the document keeps reading them under it. InMemoryBlockStorage treats it as any
// other owner; MemstoreBlockStorage maps it to a memstore document.
inline constexpr uint64_t kDocumentOwnerBit = uint64_t{1} << 63;

// Identifies one block: the session (or document) that owns it, the layer, the block index.
struct BlockId {
  uint64_t session = 0;
  int32_t layer = 0;
  int32_t block = 0;

  friend bool operator<(const BlockId& a, const BlockId& b) {
    return std::tie(a.session, a.layer, a.block) < std::tie(b.session, b.layer, b.block);
  }
};

class BlockStorage {
 public:
  virtual ~BlockStorage() = default;

  // Stores a block's keys and values (`floats` values each, pre-RoPE K). Overwrites.
  // Errors: RESOURCE_EXHAUSTED (store full), UNAVAILABLE / DATA_LOSS from the backend.
  virtual absl::Status Put(const BlockId& id, std::span<const float> k,
                           std::span<const float> v) = 0;

  // Reads blocks `ids` into k_out/v_out, block i at offset i * floats_per_block.
  // REQUIRES: k_out and v_out hold ids.size() * floats_per_block values.
  // Errors: NOT_FOUND for a missing block, DATA_LOSS for a corrupt one.
  virtual absl::Status MultiGet(std::span<const BlockId> ids, size_t floats_per_block, float* k_out,
                                float* v_out) = 0;

  // Hints that `ids` will be read soon. Default: nothing.
  virtual void Prefetch(std::span<const BlockId> /*ids*/) {}

  // Removes every block of `session` (what that means for a document owner id, see
  // kDocumentOwnerBit, is up to the implementation).
  virtual absl::Status DeleteSession(uint64_t session) = 0;
};

// Blocks in host memory. Thread-safe.
class InMemoryBlockStorage final : public BlockStorage {
 public:
  InMemoryBlockStorage() = default;
  InMemoryBlockStorage(const InMemoryBlockStorage&) = delete;
  InMemoryBlockStorage& operator=(const InMemoryBlockStorage&) = delete;

  absl::Status Put(const BlockId& id, std::span<const float> k, std::span<const float> v) override;
  absl::Status MultiGet(std::span<const BlockId> ids, size_t floats_per_block, float* k_out,
                        float* v_out) override;
  absl::Status DeleteSession(uint64_t session) override;

  // Blocks and bytes held.
  size_t num_blocks() const;
  size_t bytes() const;

 private:
  struct Block {
    std::vector<float> k, v;
  };
  mutable absl::Mutex mu_;
  std::map<BlockId, Block> blocks_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_BLOCK_STORAGE_H_
