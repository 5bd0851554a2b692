// Value types of the memory store API: block identities, block values, document descriptions,
// statistics and integrity reports. See memstore/block_store.h for the operations.
#ifndef QLLM_MEMSTORE_TYPES_H_
#define QLLM_MEMSTORE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/string_view.h"

namespace qllm::memstore {

// Which kind of owner a block belongs to. The values are part of the on-disk key layout.
enum class OwnerKind : uint8_t {
  // A persisted document: blocks are durable once the document is committed.
  kDocument = 1,
  // An ephemeral session: blocks are written without the WAL and vanish at CloseSession() or
  // at the next Open().
  kSession = 2,
};

// The owner of a set of blocks: a document or a session of one tenant. Ids of different tenants
// and of different kinds never collide.
struct OwnerId {
  uint64_t tenant = 0;
  OwnerKind kind = OwnerKind::kDocument;
  // The document id or the session id.
  uint64_t id = 0;

  static OwnerId Document(uint64_t tenant, uint64_t doc_id) {
    return {tenant, OwnerKind::kDocument, doc_id};
  }
  static OwnerId Session(uint64_t tenant, uint64_t session_id) {
    return {tenant, OwnerKind::kSession, session_id};
  }
  friend bool operator==(const OwnerId& a, const OwnerId& b) {
    return a.tenant == b.tenant && a.kind == b.kind && a.id == b.id;
  }
  friend bool operator<(const OwnerId& a, const OwnerId& b) {
    return std::tie(a.tenant, a.kind, a.id) < std::tie(b.tenant, b.kind, b.id);
  }
  template <typename H>
  friend H AbslHashValue(H h, const OwnerId& o) {
    return H::combine(std::move(h), o.tenant, static_cast<uint8_t>(o.kind), o.id);
  }
};

// The identity of one memory block: the K and V of `block` (a run of consecutive tokens) in
// layer `layer` of `owner`.
struct BlockId {
  OwnerId owner;
  uint32_t layer = 0;
  uint32_t block = 0;

  friend bool operator==(const BlockId& a, const BlockId& b) {
    return a.owner == b.owner && a.layer == b.layer && a.block == b.block;
  }
  friend bool operator<(const BlockId& a, const BlockId& b) {
    return std::tie(a.owner, a.layer, a.block) < std::tie(b.owner, b.layer, b.block);
  }
  template <typename H>
  friend H AbslHashValue(H h, const BlockId& b) {
    return H::combine(std::move(h), b.owner, b.layer, b.block);
  }
};

// An immutable block value: the K bytes followed by the V bytes, opaque to the store. Shared
// between the host cache and readers, so a reader keeps it alive as long as it holds the ref.
class Block {
 public:
  // Builds a block from its K and V bytes (copied).
  Block(absl::string_view k, absl::string_view v);
  // Takes `data` = K bytes + V bytes. REQUIRES: k_size <= data.size().
  Block(std::string data, size_t k_size);
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  absl::string_view k() const { return absl::string_view(data_).substr(0, k_size_); }
  absl::string_view v() const { return absl::string_view(data_).substr(k_size_); }
  // K and V together; its size is what the block costs in the host cache.
  const std::string& data() const { return data_; }

 private:
  const std::string data_;
  const size_t k_size_;
};

using BlockRef = std::shared_ptr<const Block>;

// Lifecycle state of a document.
enum class DocumentState {
  // Begun and being written; not durable. Readable by the writer, lost at a crash.
  kPending,
  // Durable: every block is on disk and reads back byte-identical.
  kCommitted,
};

// What the store knows about one document.
struct DocumentInfo {
  uint64_t tenant = 0;
  uint64_t doc_id = 0;
  DocumentState state = DocumentState::kPending;
  // Blocks per layer: layer l holds blocks [0, blocks_per_layer[l]). For a pending document,
  // the highest written block index + 1 of each layer written so far.
  std::vector<uint32_t> blocks_per_layer;
  // Total blocks and K+V bytes stored for the document (metadata excluded).
  uint64_t num_blocks = 0;
  uint64_t block_bytes = 0;
  // Number of metadata blobs (committed with the document).
  uint64_t num_metadata = 0;
  // Fingerprint of the model that produced the document.
  std::string model_fingerprint;
  // Commit time, microseconds since the Unix epoch; 0 while pending.
  int64_t commit_time_us = 0;
  // True once a read or Fsck() found the document damaged; every read then returns DATA_LOSS.
  bool data_loss = false;
};

// Latency summary of one operation kind, in microseconds (histogram estimates).
struct LatencyStats {
  uint64_t count = 0;
  double mean_us = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

// Block count and bytes held by one tier.
struct TierStats {
  uint64_t blocks = 0;
  uint64_t bytes = 0;
};

// A snapshot of the store's counters since Open().
struct StoreStats {
  // Host-memory LRU: what it holds now, and lookups that hit or missed it.
  TierStats host;
  uint64_t host_capacity_bytes = 0;
  uint64_t host_hits = 0;
  uint64_t host_misses = 0;
  uint64_t host_evictions = 0;
  // host_hits / (host_hits + host_misses), 0 when there were no lookups.
  double host_hit_rate = 0;
  // Disk tier: blocks of live documents and sessions, and on-disk bytes (SST + blob files).
  TierStats disk;
  // Disk reads issued by Get/MultiGet/Prefetch (host misses), and blocks found there.
  uint64_t disk_reads = 0;
  uint64_t disk_read_bytes = 0;
  // Blocks and bytes written by PutBlock.
  uint64_t blocks_written = 0;
  uint64_t bytes_written = 0;
  // Blocks loaded into the host cache by Prefetch.
  uint64_t prefetched_blocks = 0;
  // Checksum mismatches and RocksDB corruption reports seen on reads.
  uint64_t checksum_failures = 0;
  uint64_t committed_documents = 0;
  uint64_t pending_documents = 0;
  LatencyStats put_latency;
  LatencyStats multiget_latency;
  LatencyStats commit_latency;
};

// Result of BlockStore::Fsck(): a full scan of the on-disk blocks and metadata.
struct FsckReport {
  uint64_t documents = 0;
  uint64_t blocks_checked = 0;
  uint64_t bytes_checked = 0;
  uint64_t metadata_checked = 0;
  // Blocks on disk that no committed or pending document owns.
  uint64_t orphan_blocks = 0;
  // Blocks a committed document's manifest lists but the disk lacks.
  uint64_t missing_blocks = 0;
  // Blocks or metadata values whose checksum or framing is wrong.
  uint64_t corrupt_values = 0;
  // False when the orphan scan stopped early at an unreadable value.
  bool orphan_scan_complete = true;
  // (tenant, doc_id) of every damaged document; each is marked data_loss.
  std::vector<std::pair<uint64_t, uint64_t>> damaged_documents;

  bool clean() const { return orphan_blocks == 0 && missing_blocks == 0 && corrupt_values == 0; }
};

}  // namespace qllm::memstore

#endif  // QLLM_MEMSTORE_TYPES_H_
