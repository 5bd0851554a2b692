// The memory store: a tiered store of KV blocks (host-memory LRU in front of RocksDB on local
// disk) with durable, all-or-nothing documents and ephemeral sessions. See docs/memstore.md.
//
// Blocks belong to an owner (OwnerId): a document or a session of one tenant. A block holds the
// K bytes and V bytes of one layer for one run of tokens; the store treats both as opaque.
//
// Documents:  BeginDocument -> PutBlock/PutMetadata ... -> CommitDocument (one synced write).
//   After any crash or power loss a document is either committed and complete (every block and
//   metadata blob reads back byte-identical) or absent. Pending documents do not survive a
//   restart. Each committed document records the model fingerprint; reading it under another
//   fingerprint is FAILED_PRECONDITION.
// Sessions:   PutBlock/PutMetadata ... -> CloseSession. Written without the WAL; they vanish at
//   CloseSession() and at the next Open().
//
// Integrity: every value carries a CRC-32C over its key and bytes, verified on every read from
// disk. A mismatch (or a RocksDB corruption report) is DATA_LOSS for the owning document only;
// the document is then quarantined (all its reads return DATA_LOSS) and the rest of the store
// keeps serving.
//
// Errors common to writes: RESOURCE_EXHAUSTED when the disk is full (the store retries
// rocksdb::DB::Resume() on the next write, so writes succeed again once space returns; with
// document_blocks_in_wal = false a commit that hit the full disk needs a reopen instead),
// UNAVAILABLE for other I/O errors (RocksDB stops; reopen the store).
//
// Thread safety: all methods are thread-safe. Operations on one document must not race with
// DeleteDocument of that document.
#ifndef QLLM_MEMSTORE_BLOCK_STORE_H_
#define QLLM_MEMSTORE_BLOCK_STORE_H_

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "memstore/options.h"
#include "memstore/types.h"

namespace qllm::memstore {

class BlockStore {
 public:
  // Opens (creating if missing) the store at options.path. Drops every session left by a previous
  // process and every block of a document that was never committed.
  // Returns INVALID_ARGUMENT for an empty path or fingerprint, DATA_LOSS / UNAVAILABLE when
  // RocksDB cannot open the database.
  static absl::StatusOr<std::unique_ptr<BlockStore>> Open(const BlockStoreOptions& options);

  // Closes the database. Pending documents and sessions are not persisted.
  ~BlockStore();
  BlockStore(const BlockStore&) = delete;
  BlockStore& operator=(const BlockStore&) = delete;

  // ---- Documents -----------------------------------------------------------------------------

  // Starts writing document `doc_id` of `tenant`. Returns ALREADY_EXISTS if it is pending or
  // committed.
  absl::Status BeginDocument(uint64_t tenant, uint64_t doc_id);

  // Makes the document durable: checks that every layer written holds blocks [0, n) with no gap,
  // then writes its metadata blobs and manifest (model fingerprint, block counts) in one synced
  // RocksDB write. When this returns OK the document survives kill -9 and power loss.
  // Returns NOT_FOUND if the document was not begun, FAILED_PRECONDITION if it is already
  // committed or a block is missing (the message names it), RESOURCE_EXHAUSTED / UNAVAILABLE
  // on I/O failure (the document then stays pending and the commit may be retried).
  // REQUIRES: every PutBlock/PutMetadata of the document has returned.
  absl::Status CommitDocument(uint64_t tenant, uint64_t doc_id);

  // Deletes a pending or committed document: its manifest, blocks and metadata in one synced
  // write, and its blocks in the host cache. Returns NOT_FOUND if the document does not exist.
  absl::Status DeleteDocument(uint64_t tenant, uint64_t doc_id);

  // Returns the description of a document for use by this model. Returns NOT_FOUND if it does
  // not exist (for this tenant), FAILED_PRECONDITION if it was committed under another model
  // fingerprint, DATA_LOSS if it is known to be damaged.
  absl::StatusOr<DocumentInfo> OpenDocument(uint64_t tenant, uint64_t doc_id) const;

  // Returns the description of a document without the fingerprint and damage checks (for admin
  // tools). Returns NOT_FOUND if it does not exist.
  absl::StatusOr<DocumentInfo> GetDocumentInfo(uint64_t tenant, uint64_t doc_id) const;

  // Returns every pending and committed document of `tenant`, ordered by id.
  std::vector<DocumentInfo> ListDocuments(uint64_t tenant) const;

  // ---- Sessions ------------------------------------------------------------------------------

  // Deletes every block and metadata blob of the session. A session that has no data is not an
  // error.
  absl::Status CloseSession(uint64_t tenant, uint64_t session_id);

  // ---- Blocks --------------------------------------------------------------------------------

  // Stores a block (K bytes then V bytes), replacing any previous value of `id`. For a document
  // the block is written to the WAL without a sync, or (document_blocks_in_wal = false) only to
  // the memtable; either way it becomes durable at CommitDocument. For a session it is written
  // without the WAL.
  // Returns FAILED_PRECONDITION if `id` names a document that is not pending (not begun,
  // committing or committed), INVALID_ARGUMENT if K or V exceeds 4 GiB, RESOURCE_EXHAUSTED /
  // UNAVAILABLE on I/O failure.
  absl::Status PutBlock(const BlockId& id, absl::string_view k, absl::string_view v);

  // Reads one block. Same results as MultiGet() for a single id.
  absl::StatusOr<BlockRef> GetBlock(const BlockId& id);

  // Reads a set of blocks: host cache first, then one RocksDB MultiGet per column family for the
  // misses (inserted into the host cache). Result i belongs to ids[i]:
  //   NOT_FOUND            the block, or its document or session, does not exist;
  //   FAILED_PRECONDITION  the document was committed under another model fingerprint;
  //   DATA_LOSS            the document is damaged (checksum mismatch now or earlier);
  //   UNAVAILABLE          an I/O error.
  std::vector<absl::StatusOr<BlockRef>> MultiGet(absl::Span<const BlockId> ids);

  // Loads `ids` into the host cache on a background thread. The future becomes ready when the
  // reads are done and holds the first error (as MultiGet would report it) or OK. Dropping the
  // future does not cancel the prefetch.
  std::future<absl::Status> Prefetch(std::vector<BlockId> ids);

  // ---- Metadata ------------------------------------------------------------------------------

  // Stores an opaque metadata blob under (owner, layer, tag), e.g. representative vectors or
  // init/pending tokens of a layer. For a document the blob is staged in memory and written
  // atomically with CommitDocument; for a session it is written immediately without the WAL.
  // Returns FAILED_PRECONDITION if the document is not pending.
  absl::Status PutMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag,
                           absl::string_view value);

  // Reads a metadata blob (staged ones of a pending document included). Returns NOT_FOUND,
  // FAILED_PRECONDITION (other model fingerprint), DATA_LOSS (checksum mismatch) or UNAVAILABLE.
  absl::StatusOr<std::string> GetMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag);

  // ---- Administration ------------------------------------------------------------------------

  // Returns a snapshot of the counters.
  StoreStats GetStats() const;

  // Reads and verifies every block and metadata blob on disk against the manifests. Marks each
  // damaged document data_loss. Orphan blocks (of no known document) are counted, not deleted.
  // Returns UNAVAILABLE if the scan itself fails.
  absl::StatusOr<FsckReport> Fsck();

  // Writes the memtables of every column family to SST and blob files and waits for it (admin
  // tools and tests). Returns RESOURCE_EXHAUSTED / UNAVAILABLE on I/O failure.
  absl::Status Flush();

  // Clears a background error of RocksDB (e.g. after the disk filled up and space returned).
  // Writes call this automatically. Returns RESOURCE_EXHAUSTED while the disk is still full.
  absl::Status Resume();

 private:
  class Impl;  // memstore/internal/block_store_impl.h
  explicit BlockStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qllm::memstore

#endif  // QLLM_MEMSTORE_BLOCK_STORE_H_
