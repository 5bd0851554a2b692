// The read path of the memory store: MultiGet through the tiers, prefetch, metadata reads,
// damage quarantine and statistics.
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/stopwatch.h"
#include "memstore/internal/block_store_impl.h"
#include "memstore/internal/key_codec.h"

namespace qllm::memstore {
namespace {

using internal::MetaType;

std::string DocName(uint64_t tenant, uint64_t doc_id) {
  return absl::StrFormat("tenant %d document %d", tenant, doc_id);
}

std::string BlockName(const BlockId& id) {
  return absl::StrFormat("tenant %d %s %d layer %d block %d", id.owner.tenant,
                         id.owner.kind == OwnerKind::kDocument ? "document" : "session",
                         id.owner.id, id.layer, id.block);
}

}  // namespace

void BlockStore::Impl::PrefetchLoop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&queue_mu_);
      queue_mu_.Await(absl::Condition(
          +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->queue_mu_) {
            return impl->stopping_ || !impl->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // Stopping, and every queued prefetch has run.
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

absl::Status BlockStore::Impl::CheckReadable(const OwnerId& owner) const {
  if (owner.kind == OwnerKind::kSession) return absl::OkStatus();
  return GetDocumentInfo(owner.tenant, owner.id, /*check=*/true).status();
}

void BlockStore::Impl::MarkDataLoss(const OwnerId& owner) {
  if (owner.kind != OwnerKind::kDocument) return;
  {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({owner.tenant, owner.id});
    if (it == docs_.end()) return;
    it->second.data_loss = true;
  }
  QLLM_LOG(ERROR) << "memstore: " << DocName(owner.tenant, owner.id)
                  << " is damaged; its reads now return DATA_LOSS";
  cache_.EraseOwner(owner);
}

std::vector<absl::StatusOr<BlockRef>> BlockStore::Impl::MultiGet(absl::Span<const BlockId> ids,
                                                                 bool prefetch) {
  Stopwatch watch;
  std::vector<absl::StatusOr<BlockRef>> results(ids.size(), absl::NotFoundError("not found"));
  // Per owner: readability and, for committed documents, the manifest's block counts.
  struct OwnerView {
    absl::Status status;
    bool committed = false;
    std::vector<uint32_t> blocks_per_layer;
  };
  absl::flat_hash_map<OwnerId, OwnerView> owners;
  std::vector<size_t> misses[2];  // [0] documents, [1] sessions.
  for (size_t i = 0; i < ids.size(); ++i) {
    const BlockId& id = ids[i];
    auto [view, inserted] = owners.try_emplace(id.owner);
    if (inserted && id.owner.kind == OwnerKind::kDocument) {
      auto info = GetDocumentInfo(id.owner.tenant, id.owner.id, /*check=*/true);
      view->second.status = info.status();
      if (info.ok() && info->state == DocumentState::kCommitted) {
        view->second.committed = true;
        view->second.blocks_per_layer = info->blocks_per_layer;
      }
    }
    if (!view->second.status.ok()) {
      results[i] = view->second.status;
      continue;
    }
    if (BlockRef ref = cache_.Lookup(id, /*count=*/!prefetch)) {
      results[i] = std::move(ref);
      continue;
    }
    misses[id.owner.kind == OwnerKind::kDocument ? 0 : 1].push_back(i);
  }
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  for (int group = 0; group < 2; ++group) {
    const std::vector<size_t>& idx = misses[group];
    if (idx.empty()) continue;
    std::vector<std::string> keys(idx.size());
    std::vector<rocksdb::Slice> slices(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) {
      keys[j] = internal::EncodeBlockKey(ids[idx[j]]);
      slices[j] = keys[j];
    }
    std::vector<rocksdb::PinnableSlice> values(idx.size());
    std::vector<rocksdb::Status> statuses(idx.size());
    db_->MultiGet(ro, group == 0 ? doc_blocks_cf_ : sessions_cf_, idx.size(), slices.data(),
                  values.data(), statuses.data());
    for (size_t j = 0; j < idx.size(); ++j) {
      const BlockId& id = ids[idx[j]];
      const OwnerView& view = owners[id.owner];
      const rocksdb::Status& s = statuses[j];
      absl::Status error;
      if (s.ok()) {
        absl::string_view kv;
        size_t k_size = 0;
        error = internal::DecodeFrame(keys[j], ToView(values[j]), &kv, &k_size);
        if (error.ok()) {
          auto block = std::make_shared<const Block>(std::string(kv), k_size);
          disk_reads_.fetch_add(1, std::memory_order_relaxed);
          disk_read_bytes_.fetch_add(kv.size(), std::memory_order_relaxed);
          if (prefetch) prefetched_blocks_.fetch_add(1, std::memory_order_relaxed);
          cache_.Insert(id, block);
          results[idx[j]] = std::move(block);
          continue;
        }
      } else if (s.IsNotFound()) {
        const bool listed = view.committed && id.layer < view.blocks_per_layer.size() &&
                            id.block < view.blocks_per_layer[id.layer];
        if (!listed) {
          results[idx[j]] = absl::NotFoundError(BlockName(id) + " not found");
          continue;
        }
        error = absl::DataLossError("block listed in the manifest is missing");
      } else if (s.IsCorruption()) {
        error = FromRocksStatus(s, "read");
      } else {
        results[idx[j]] = FromRocksStatus(s, "read " + BlockName(id));
        continue;
      }
      checksum_failures_.fetch_add(1, std::memory_order_relaxed);
      MarkDataLoss(id.owner);
      results[idx[j]] = absl::DataLossError(absl::StrCat(BlockName(id), ": ", error.message()));
    }
  }
  if (!prefetch) multiget_latency_.Record(watch.Seconds() * 1e6);
  return results;
}

std::future<absl::Status> BlockStore::Impl::Prefetch(std::vector<BlockId> ids) {
  auto promise = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> future = promise->get_future();
  {
    absl::MutexLock lock(&queue_mu_);
    queue_.push_back([this, promise, ids = std::move(ids)] {
      absl::Status first = absl::OkStatus();
      for (auto& r : MultiGet(ids, /*prefetch=*/true)) {
        if (!r.ok() && first.ok()) first = r.status();
      }
      promise->set_value(first);
    });
  }
  return future;
}

absl::StatusOr<std::string> BlockStore::Impl::GetMetadata(const OwnerId& owner, uint32_t layer,
                                                          uint32_t tag) {
  const std::string name = absl::StrFormat("metadata layer %d tag %d", layer, tag);
  RETURN_IF_ERROR(CheckReadable(owner));
  if (owner.kind == OwnerKind::kDocument) {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({owner.tenant, owner.id});
    if (it == docs_.end()) return absl::NotFoundError(DocName(owner.tenant, owner.id));
    if (it->second.state == DocumentState::kPending) {
      auto found = it->second.staged_metadata.find({layer, tag});
      if (found == it->second.staged_metadata.end()) return absl::NotFoundError(name);
      return found->second;
    }
  }
  const std::string key = internal::EncodeMetaKey(MetaType::kMetadata, owner, layer, tag);
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  rocksdb::PinnableSlice value;
  rocksdb::Status s =
      db_->Get(ro, owner.kind == OwnerKind::kDocument ? meta_cf_ : sessions_cf_, key, &value);
  if (s.IsNotFound()) return absl::NotFoundError(name + " not found");
  absl::Status status = FromRocksStatus(s, "read " + name);
  absl::string_view kv;
  size_t k_size = 0;
  if (status.ok()) status = internal::DecodeFrame(key, ToView(value), &kv, &k_size);
  if (status.code() == absl::StatusCode::kDataLoss) {
    checksum_failures_.fetch_add(1, std::memory_order_relaxed);
    MarkDataLoss(owner);
  }
  RETURN_IF_ERROR(status);
  return std::string(kv);
}

StoreStats BlockStore::Impl::GetStats() const {
  StoreStats stats;
  const internal::HostCacheStats cache = cache_.GetStats();
  stats.host = {cache.blocks, cache.bytes};
  stats.host_capacity_bytes = cache.capacity_bytes;
  stats.host_hits = cache.hits;
  stats.host_misses = cache.misses;
  stats.host_evictions = cache.evictions;
  const uint64_t lookups = cache.hits + cache.misses;
  stats.host_hit_rate =
      lookups == 0 ? 0.0 : static_cast<double>(cache.hits) / static_cast<double>(lookups);
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, doc] : docs_) {
      stats.disk.blocks += doc.num_blocks;
      if (doc.state == DocumentState::kCommitted) {
        ++stats.committed_documents;
      } else {
        ++stats.pending_documents;
      }
    }
    for (const auto& [owner, n] : session_blocks_) stats.disk.blocks += n;
  }
  for (auto* cf : {doc_blocks_cf_, sessions_cf_, meta_cf_}) {
    for (const auto& property :
         {rocksdb::DB::Properties::kTotalSstFilesSize, rocksdb::DB::Properties::kTotalBlobFileSize,
          rocksdb::DB::Properties::kCurSizeAllMemTables}) {
      uint64_t value = 0;
      if (db_->GetIntProperty(cf, property, &value)) stats.disk.bytes += value;
    }
  }
  stats.disk_reads = disk_reads_.load(std::memory_order_relaxed);
  stats.disk_read_bytes = disk_read_bytes_.load(std::memory_order_relaxed);
  stats.blocks_written = blocks_written_.load(std::memory_order_relaxed);
  stats.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  stats.prefetched_blocks = prefetched_blocks_.load(std::memory_order_relaxed);
  stats.checksum_failures = checksum_failures_.load(std::memory_order_relaxed);
  stats.put_latency = put_latency_.Summary();
  stats.multiget_latency = multiget_latency_.Summary();
  stats.commit_latency = commit_latency_.Summary();
  return stats;
}

}  // namespace qllm::memstore
