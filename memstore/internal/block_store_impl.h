// Private implementation of BlockStore, shared by block_store.cc (the data path) and
// block_store_recovery.cc (open, recovery and fsck).
#ifndef QLLM_MEMSTORE_INTERNAL_BLOCK_STORE_IMPL_H_
#define QLLM_MEMSTORE_INTERNAL_BLOCK_STORE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "memstore/block_store.h"
#include "memstore/internal/host_cache.h"
#include "memstore/internal/latency_histogram.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"

namespace qllm::memstore {

// Converts a RocksDB status to the store's error codes (NoSpace -> RESOURCE_EXHAUSTED,
// Corruption -> DATA_LOSS, NotFound -> NOT_FOUND, other I/O errors -> UNAVAILABLE), prefixing
// `context`.
absl::Status FromRocksStatus(const rocksdb::Status& s, absl::string_view context);

// Views RocksDB bytes as an absl::string_view (not std::string_view in this abseil build).
inline absl::string_view ToView(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// What the store knows about one document (committed or pending).
struct DocState {
  DocumentState state = DocumentState::kPending;
  // Set while CommitDocument's write is in flight; puts are refused meanwhile.
  bool committing = false;
  bool data_loss = false;
  std::string fingerprint;
  // Committed: from the manifest. Pending: highest written block + 1 per layer.
  std::vector<uint32_t> blocks_per_layer;
  uint64_t num_blocks = 0;
  uint64_t block_bytes = 0;
  uint64_t num_metadata = 0;
  int64_t commit_time_us = 0;
  // Pending only: size of each written block per layer (-1 = not written).
  std::vector<std::vector<int64_t>> written;
  // Pending only: metadata staged for the commit batch, keyed by (layer, tag).
  std::map<std::pair<uint32_t, uint32_t>, std::string> staged_metadata;
};

using DocKey = std::pair<uint64_t, uint64_t>;  // (tenant, doc id)

class BlockStore::Impl {
 public:
  explicit Impl(const BlockStoreOptions& options);
  ~Impl();

  // block_store_recovery.cc
  absl::Status OpenDb();
  absl::Status LoadManifests();
  absl::Status DropUncommittedBlocks();
  absl::StatusOr<FsckReport> Fsck();

  // block_store.cc
  absl::Status BeginDocument(uint64_t tenant, uint64_t doc_id);
  absl::Status CommitDocument(uint64_t tenant, uint64_t doc_id);
  absl::Status DeleteDocument(uint64_t tenant, uint64_t doc_id);
  absl::StatusOr<DocumentInfo> GetDocumentInfo(uint64_t tenant, uint64_t doc_id, bool check) const;
  std::vector<DocumentInfo> ListDocuments(uint64_t tenant) const;
  absl::Status CloseSession(uint64_t tenant, uint64_t session_id);
  absl::Status PutBlock(const BlockId& id, absl::string_view k, absl::string_view v);
  std::vector<absl::StatusOr<BlockRef>> MultiGet(absl::Span<const BlockId> ids, bool prefetch);
  std::future<absl::Status> Prefetch(std::vector<BlockId> ids);
  absl::Status PutMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag,
                           absl::string_view value);
  absl::StatusOr<std::string> GetMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag);
  StoreStats GetStats() const;
  absl::Status Resume();
  absl::Status Flush();

 private:
  // Returns OK if reads of `owner` may proceed (document exists, same model, not damaged).
  absl::Status CheckReadable(const OwnerId& owner) const ABSL_LOCKS_EXCLUDED(mu_);
  // Marks a document damaged after a failed verification.
  void MarkDataLoss(const OwnerId& owner) ABSL_LOCKS_EXCLUDED(mu_);
  // Applies `batch`, first resuming RocksDB if an earlier write failed.
  absl::Status Write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                     absl::string_view context);
  rocksdb::ColumnFamilyHandle* BlockCf(OwnerKind kind) const;
  DocumentInfo ToInfo(const DocKey& key, const DocState& doc) const;
  void PrefetchLoop();

  const BlockStoreOptions options_;
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  // Column families; owned by the DB handles vector, destroyed before db_.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* doc_blocks_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* sessions_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;

  internal::HostCache cache_;

  mutable absl::Mutex mu_;
  std::map<DocKey, DocState> docs_ ABSL_GUARDED_BY(mu_);

  std::atomic<bool> needs_resume_{false};
  // Blocks written per open session (approximate: overwrites count twice).
  std::map<OwnerId, uint64_t> session_blocks_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> disk_reads_{0};
  std::atomic<uint64_t> disk_read_bytes_{0};
  std::atomic<uint64_t> blocks_written_{0};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> prefetched_blocks_{0};
  std::atomic<uint64_t> checksum_failures_{0};
  internal::LatencyHistogram put_latency_;
  internal::LatencyHistogram multiget_latency_;
  internal::LatencyHistogram commit_latency_;

  // Prefetch workers and their queue.
  absl::Mutex queue_mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace qllm::memstore

#endif  // QLLM_MEMSTORE_INTERNAL_BLOCK_STORE_IMPL_H_
