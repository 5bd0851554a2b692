// BlockStorage over the RocksDB-backed tiered memory store (memstore/): a session's blocks are
// ephemeral memstore session blocks of one tenant (no WAL; deleted at DeleteSession and at the
// next open), read back through the store's host-memory LRU. An owner id with kDocumentOwnerBit
// set names memstore document `id & ~kDocumentOwnerBit` of the tenant instead: its blocks go into
// the pending document (the caller runs BeginDocument / CommitDocument) and are read back from
// the committed one.
#ifndef QLLM_WORKER_MEMSTORE_BLOCK_STORAGE_H_
#define QLLM_WORKER_MEMSTORE_BLOCK_STORAGE_H_

#include <cstdint>

#include "memstore/block_store.h"
#include "worker/block_storage.h"

namespace qllm::worker {

class MemstoreBlockStorage final : public BlockStorage {
 public:
  // `store` must outlive this object. Thread-safe (the store is).
  MemstoreBlockStorage(memstore::BlockStore* store, uint64_t tenant)
      : store_(store), tenant_(tenant) {}
  MemstoreBlockStorage(const MemstoreBlockStorage&) = delete;
  MemstoreBlockStorage& operator=(const MemstoreBlockStorage&) = delete;

  absl::Status Put(const BlockId& id, std::span<const float> k, std::span<const float> v) override;
  // Errors as memstore::BlockStore::MultiGet reports them (the first failing block), and
  // DATA_LOSS when a block's size is not floats_per_block values.
  absl::Status MultiGet(std::span<const BlockId> ids, size_t floats_per_block, float* k_out,
                        float* v_out) override;
  void Prefetch(std::span<const BlockId> ids) override;
  // Closes memstore session `session`. A document owner id deletes nothing and returns OK:
  // documents are deleted with memstore::BlockStore::DeleteDocument.
  absl::Status DeleteSession(uint64_t session) override;

 private:
  memstore::BlockId ToStoreId(const BlockId& id) const;

  memstore::BlockStore* const store_;
  const uint64_t tenant_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_MEMSTORE_BLOCK_STORAGE_H_
