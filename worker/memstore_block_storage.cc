#include "worker/memstore_block_storage.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qllm::worker {
namespace {

absl::string_view Bytes(std::span<const float> values) {
  return absl::string_view(reinterpret_cast<const char*>(values.data()),
                           values.size() * sizeof(float));
}

}  // namespace

memstore::BlockId MemstoreBlockStorage::ToStoreId(const BlockId& id) const {
  memstore::BlockId out;
  out.owner = (id.session & kDocumentOwnerBit) != 0
                  ? memstore::OwnerId::Document(tenant_, id.session & ~kDocumentOwnerBit)
                  : memstore::OwnerId::Session(tenant_, id.session);
  out.layer = static_cast<uint32_t>(id.layer);
  out.block = static_cast<uint32_t>(id.block);
  return out;
}

absl::Status MemstoreBlockStorage::Put(const BlockId& id, std::span<const float> k,
                                       std::span<const float> v) {
  return store_->PutBlock(ToStoreId(id), Bytes(k), Bytes(v));
}

absl::Status MemstoreBlockStorage::MultiGet(std::span<const BlockId> ids, size_t floats_per_block,
                                            float* k_out, float* v_out) {
  std::vector<memstore::BlockId> keys;
  keys.reserve(ids.size());
  for (const BlockId& id : ids) keys.push_back(ToStoreId(id));
  std::vector<absl::StatusOr<memstore::BlockRef>> blocks = store_->MultiGet(keys);
  const size_t bytes = floats_per_block * sizeof(float);
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!blocks[i].ok()) return blocks[i].status();
    const memstore::Block& b = **blocks[i];
    if (b.k().size() != bytes || b.v().size() != bytes) {
      return absl::DataLossError(absl::StrCat("block ", ids[i].block, " of layer ", ids[i].layer,
                                              " holds ", b.k().size(), "+", b.v().size(),
                                              " bytes, expected ", bytes, " each"));
    }
    std::memcpy(k_out + i * floats_per_block, b.k().data(), bytes);
    std::memcpy(v_out + i * floats_per_block, b.v().data(), bytes);
  }
  return absl::OkStatus();
}

void MemstoreBlockStorage::Prefetch(std::span<const BlockId> ids) {
  std::vector<memstore::BlockId> keys;
  for (const BlockId& id : ids) keys.push_back(ToStoreId(id));
  // The future is dropped: a prefetch is a hint, and its errors resurface on the real read.
  (void)store_->Prefetch(std::move(keys));
}

absl::Status MemstoreBlockStorage::DeleteSession(uint64_t session) {
  if ((session & kDocumentOwnerBit) != 0) return absl::OkStatus();
  return store_->CloseSession(tenant_, session);
}

}  // namespace qllm::worker
