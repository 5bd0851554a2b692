// The data path of the memory store: documents, sessions, blocks, metadata and statistics.
#include "memstore/block_store.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/stopwatch.h"
#include "memstore/internal/block_store_impl.h"
#include "memstore/internal/key_codec.h"
#include "rocksdb/write_batch.h"

namespace qllm::memstore {
namespace {

using internal::MetaType;

constexpr size_t kMaxPartBytes = std::numeric_limits<uint32_t>::max();

std::string DocName(uint64_t tenant, uint64_t doc_id) {
  return absl::StrFormat("tenant %d document %d", tenant, doc_id);
}

std::string BlockName(const BlockId& id) {
  return absl::StrFormat("tenant %d %s %d layer %d block %d", id.owner.tenant,
                         id.owner.kind == OwnerKind::kDocument ? "document" : "session",
                         id.owner.id, id.layer, id.block);
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Adds a framed value (header + parts) under `key` to `batch`.
rocksdb::Status PutFramed(rocksdb::WriteBatch* batch, rocksdb::ColumnFamilyHandle* cf,
                          const std::string& key, absl::string_view k, absl::string_view v) {
  const auto header = internal::MakeFrameHeader(key, k, v);
  const rocksdb::Slice key_slice(key);
  const rocksdb::Slice parts[3] = {rocksdb::Slice(header.data(), header.size()),
                                   rocksdb::Slice(k.data(), k.size()),
                                   rocksdb::Slice(v.data(), v.size())};
  return batch->Put(cf, rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(parts, 3));
}

}  // namespace

Block::Block(absl::string_view k, absl::string_view v)
    : data_(absl::StrCat(k, v)), k_size_(k.size()) {}

Block::Block(std::string data, size_t k_size) : data_(std::move(data)), k_size_(k_size) {
  QLLM_CHECK(k_size_ <= data_.size()) << "k_size " << k_size_ << " > " << data_.size();
}

BlockStore::Impl::Impl(const BlockStoreOptions& options)
    : options_(options), cache_(options.host_cache_bytes, std::max(1, options.host_cache_shards)) {
  for (int i = 0; i < std::max(1, options.background_threads); ++i) {
    workers_.emplace_back([this] { PrefetchLoop(); });
  }
}

BlockStore::Impl::~Impl() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  for (auto& t : workers_) t.join();
  if (db_ != nullptr) {
    for (auto* h : handles_) {
      // Failing to free a handle at shutdown leaks memory only; nothing to report it to.
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    rocksdb::Status s = db_->Close();
    if (!s.ok()) QLLM_LOG(WARNING) << "memstore: close " << options_.path << ": " << s.ToString();
    db_.reset();
  }
}

rocksdb::ColumnFamilyHandle* BlockStore::Impl::BlockCf(OwnerKind kind) const {
  return kind == OwnerKind::kDocument ? doc_blocks_cf_ : sessions_cf_;
}

absl::Status BlockStore::Impl::Resume() {
  rocksdb::Status s = db_->Resume();
  if (s.ok()) needs_resume_.store(false);
  return FromRocksStatus(s, "resume");
}

absl::Status BlockStore::Impl::Flush() {
  if (needs_resume_.load()) Resume().IgnoreError();  // Flush reports the live error.
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocksStatus(db_->Flush(fo, {doc_blocks_cf_, sessions_cf_, meta_cf_}), "flush");
}

absl::Status BlockStore::Impl::Write(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* batch,
                                     absl::string_view context) {
  if (needs_resume_.load()) {
    // An earlier write failed. Resume() fails while the cause persists or while RocksDB's own
    // recovery runs (Busy); either way the write below reports the live background error.
    Resume().IgnoreError();
  }
  rocksdb::Status s = db_->Write(wo, batch);
  if (!s.ok()) {
    if (s.IsIOError()) needs_resume_.store(true);
    return FromRocksStatus(s, context);
  }
  needs_resume_.store(false);
  return absl::OkStatus();
}

DocumentInfo BlockStore::Impl::ToInfo(const DocKey& key, const DocState& doc) const {
  DocumentInfo info;
  info.tenant = key.first;
  info.doc_id = key.second;
  info.state = doc.state;
  info.blocks_per_layer = doc.blocks_per_layer;
  info.num_blocks = doc.num_blocks;
  info.block_bytes = doc.block_bytes;
  info.num_metadata =
      doc.state == DocumentState::kPending ? doc.staged_metadata.size() : doc.num_metadata;
  info.model_fingerprint = doc.fingerprint;
  info.commit_time_us = doc.commit_time_us;
  info.data_loss = doc.data_loss;
  return info;
}

absl::Status BlockStore::Impl::BeginDocument(uint64_t tenant, uint64_t doc_id) {
  {
    absl::MutexLock lock(&mu_);
    auto [it, inserted] = docs_.try_emplace({tenant, doc_id});
    if (!inserted) return absl::AlreadyExistsError(DocName(tenant, doc_id) + " exists");
    it->second.fingerprint = options_.model_fingerprint;
  }
  // The intent precedes every block of the document in the WAL, so whatever blocks survive a
  // crash are found and dropped at the next open.
  rocksdb::WriteBatch batch;
  absl::Status status =
      FromRocksStatus(batch.Put(meta_cf_,
                                internal::EncodeMetaKey(MetaType::kPendingIntent,
                                                        OwnerId::Document(tenant, doc_id), 0, 0),
                                rocksdb::Slice()),
                      "begin");
  if (status.ok()) {
    // Without the WAL for blocks, a background flush may persist blocks at any time, so the
    // intent must be durable first.
    rocksdb::WriteOptions wo;
    wo.sync = !options_.document_blocks_in_wal;
    status = Write(wo, &batch, "begin " + DocName(tenant, doc_id));
  }
  if (!status.ok()) {
    absl::MutexLock lock(&mu_);
    docs_.erase({tenant, doc_id});
  }
  return status;
}

absl::Status BlockStore::Impl::CommitDocument(uint64_t tenant, uint64_t doc_id) {
  Stopwatch watch;
  const OwnerId owner = OwnerId::Document(tenant, doc_id);
  internal::Manifest manifest;
  std::map<std::pair<uint32_t, uint32_t>, std::string> metadata;
  {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({tenant, doc_id});
    if (it == docs_.end()) return absl::NotFoundError(DocName(tenant, doc_id) + " not begun");
    DocState& doc = it->second;
    if (doc.state != DocumentState::kPending || doc.committing) {
      return absl::FailedPreconditionError(DocName(tenant, doc_id) + " is already committed");
    }
    for (uint32_t layer = 0; layer < doc.written.size(); ++layer) {
      for (uint32_t b = 0; b < doc.written[layer].size(); ++b) {
        if (doc.written[layer][b] < 0) {
          return absl::FailedPreconditionError(
              absl::StrFormat("%s: layer %d block %d missing (layer has %d blocks)",
                              DocName(tenant, doc_id), layer, b, doc.written[layer].size()));
        }
      }
    }
    manifest.model_fingerprint = doc.fingerprint;
    manifest.blocks_per_layer = doc.blocks_per_layer;
    manifest.block_bytes = doc.block_bytes;
    manifest.num_metadata = doc.staged_metadata.size();
    manifest.commit_time_us = NowMicros();
    metadata = doc.staged_metadata;
    doc.committing = true;
  }
  rocksdb::WriteBatch batch;
  rocksdb::Status s;
  for (const auto& [lt, value] : metadata) {
    const std::string key =
        internal::EncodeMetaKey(MetaType::kMetadata, owner, lt.first, lt.second);
    if (s.ok()) s = PutFramed(&batch, meta_cf_, key, value, "");
  }
  const std::string manifest_key = internal::EncodeMetaKey(MetaType::kManifest, owner, 0, 0);
  if (s.ok()) {
    s = batch.Put(meta_cf_, manifest_key, internal::EncodeManifest(manifest_key, manifest));
  }
  if (s.ok()) {
    s = batch.Delete(meta_cf_, internal::EncodeMetaKey(MetaType::kPendingIntent, owner, 0, 0));
  }
  absl::Status status = FromRocksStatus(s, "commit batch");
  if (status.ok() && !options_.document_blocks_in_wal) {
    // The blocks are only in the memtable (or already in synced files): persist them first.
    rocksdb::FlushOptions fo;
    fo.wait = true;
    status = FromRocksStatus(db_->Flush(fo, doc_blocks_cf_), "commit flush");
  }
  if (status.ok()) {
    // The sync covers the whole WAL, so every block put before this point through the WAL is
    // durable with it; blocks outside the WAL were flushed to synced files just above.
    rocksdb::WriteOptions wo;
    wo.sync = true;
    status = Write(wo, &batch, "commit " + DocName(tenant, doc_id));
  }
  absl::MutexLock lock(&mu_);
  auto it = docs_.find({tenant, doc_id});
  QLLM_CHECK(it != docs_.end()) << "document deleted during commit";
  DocState& doc = it->second;
  doc.committing = false;
  if (!status.ok()) return status;
  doc.state = DocumentState::kCommitted;
  doc.num_metadata = manifest.num_metadata;
  doc.commit_time_us = manifest.commit_time_us;
  doc.written.clear();
  doc.staged_metadata.clear();
  commit_latency_.Record(watch.Seconds() * 1e6);
  return absl::OkStatus();
}

absl::Status BlockStore::Impl::DeleteDocument(uint64_t tenant, uint64_t doc_id) {
  const OwnerId owner = OwnerId::Document(tenant, doc_id);
  {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({tenant, doc_id});
    if (it == docs_.end()) return absl::NotFoundError(DocName(tenant, doc_id) + " not found");
    if (it->second.committing) {
      return absl::FailedPreconditionError(DocName(tenant, doc_id) + " is being committed");
    }
  }
  const std::string prefix = internal::OwnerPrefix(owner);
  const std::string meta = internal::MetaPrefix(MetaType::kMetadata, owner);
  rocksdb::WriteBatch batch;
  rocksdb::Status s =
      batch.Delete(meta_cf_, internal::EncodeMetaKey(MetaType::kManifest, owner, 0, 0));
  if (s.ok()) {
    s = batch.Delete(meta_cf_, internal::EncodeMetaKey(MetaType::kPendingIntent, owner, 0, 0));
  }
  if (s.ok()) s = batch.DeleteRange(meta_cf_, meta, internal::PrefixSuccessor(meta));
  if (s.ok()) s = batch.DeleteRange(doc_blocks_cf_, prefix, internal::PrefixSuccessor(prefix));
  RETURN_IF_ERROR(FromRocksStatus(s, "delete batch"));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  RETURN_IF_ERROR(Write(wo, &batch, "delete " + DocName(tenant, doc_id)));
  {
    absl::MutexLock lock(&mu_);
    docs_.erase({tenant, doc_id});
  }
  cache_.EraseOwner(owner);
  return absl::OkStatus();
}

absl::StatusOr<DocumentInfo> BlockStore::Impl::GetDocumentInfo(uint64_t tenant, uint64_t doc_id,
                                                               bool check) const {
  absl::MutexLock lock(&mu_);
  auto it = docs_.find({tenant, doc_id});
  if (it == docs_.end()) return absl::NotFoundError(DocName(tenant, doc_id) + " not found");
  const DocState& doc = it->second;
  if (check && doc.data_loss) {
    return absl::DataLossError(DocName(tenant, doc_id) + " is damaged");
  }
  if (check && doc.fingerprint != options_.model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat(DocName(tenant, doc_id), " was stored by model '", doc.fingerprint,
                     "', this store serves '", options_.model_fingerprint, "'"));
  }
  return ToInfo(it->first, doc);
}

std::vector<DocumentInfo> BlockStore::Impl::ListDocuments(uint64_t tenant) const {
  std::vector<DocumentInfo> out;
  absl::MutexLock lock(&mu_);
  for (auto it = docs_.lower_bound({tenant, 0}); it != docs_.end() && it->first.first == tenant;
       ++it) {
    out.push_back(ToInfo(it->first, it->second));
  }
  return out;
}

absl::Status BlockStore::Impl::CloseSession(uint64_t tenant, uint64_t session_id) {
  const OwnerId owner = OwnerId::Session(tenant, session_id);
  const std::string prefix = internal::OwnerPrefix(owner);
  const std::string meta = internal::MetaPrefix(MetaType::kMetadata, owner);
  rocksdb::WriteBatch batch;
  rocksdb::Status s = batch.DeleteRange(sessions_cf_, prefix, internal::PrefixSuccessor(prefix));
  if (s.ok()) s = batch.DeleteRange(sessions_cf_, meta, internal::PrefixSuccessor(meta));
  RETURN_IF_ERROR(FromRocksStatus(s, "close session batch"));
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;
  RETURN_IF_ERROR(
      Write(wo, &batch, absl::StrFormat("close tenant %d session %d", tenant, session_id)));
  {
    absl::MutexLock lock(&mu_);
    session_blocks_.erase(owner);
  }
  cache_.EraseOwner(owner);
  return absl::OkStatus();
}

absl::Status BlockStore::Impl::PutBlock(const BlockId& id, absl::string_view k,
                                        absl::string_view v) {
  if (k.size() > kMaxPartBytes || v.size() > kMaxPartBytes) {
    return absl::InvalidArgumentError(BlockName(id) + ": K or V larger than 4 GiB");
  }
  Stopwatch watch;
  const bool is_doc = id.owner.kind == OwnerKind::kDocument;
  if (is_doc) {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({id.owner.tenant, id.owner.id});
    if (it == docs_.end() || it->second.state != DocumentState::kPending || it->second.committing) {
      return absl::FailedPreconditionError(BlockName(id) + ": document is not pending");
    }
  }
  const std::string key = internal::EncodeBlockKey(id);
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocksStatus(PutFramed(&batch, BlockCf(id.owner.kind), key, k, v), "put"));
  rocksdb::WriteOptions wo;
  // Documents: in the WAL (synced by the commit) or flushed by the commit. Sessions: never in
  // the WAL.
  wo.disableWAL = !is_doc || !options_.document_blocks_in_wal;
  RETURN_IF_ERROR(Write(wo, &batch, "put " + BlockName(id)));
  const auto size = static_cast<int64_t>(k.size() + v.size());
  {
    absl::MutexLock lock(&mu_);
    if (is_doc) {
      auto it = docs_.find({id.owner.tenant, id.owner.id});
      if (it != docs_.end() && it->second.state == DocumentState::kPending) {
        DocState& doc = it->second;
        if (doc.written.size() <= id.layer) {
          doc.written.resize(id.layer + 1);
          doc.blocks_per_layer.resize(id.layer + 1, 0);
        }
        auto& layer = doc.written[id.layer];
        if (layer.size() <= id.block) layer.resize(id.block + 1, -1);
        if (layer[id.block] >= 0) {
          doc.block_bytes -= static_cast<uint64_t>(layer[id.block]);
        } else {
          ++doc.num_blocks;
        }
        layer[id.block] = size;
        doc.block_bytes += static_cast<uint64_t>(size);
        doc.blocks_per_layer[id.layer] = static_cast<uint32_t>(layer.size());
      }
    } else {
      ++session_blocks_[id.owner];
    }
  }
  if (options_.cache_on_put) {
    cache_.Insert(id, std::make_shared<const Block>(k, v));
  } else {
    cache_.Erase(id);
  }
  blocks_written_.fetch_add(1, std::memory_order_relaxed);
  bytes_written_.fetch_add(static_cast<uint64_t>(size), std::memory_order_relaxed);
  put_latency_.Record(watch.Seconds() * 1e6);
  return absl::OkStatus();
}

absl::Status BlockStore::Impl::PutMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag,
                                           absl::string_view value) {
  if (value.size() > kMaxPartBytes) return absl::InvalidArgumentError("metadata > 4 GiB");
  if (owner.kind == OwnerKind::kDocument) {
    absl::MutexLock lock(&mu_);
    auto it = docs_.find({owner.tenant, owner.id});
    if (it == docs_.end() || it->second.state != DocumentState::kPending || it->second.committing) {
      return absl::FailedPreconditionError(DocName(owner.tenant, owner.id) + " is not pending");
    }
    it->second.staged_metadata[{layer, tag}] = std::string(value);
    return absl::OkStatus();
  }
  const std::string key = internal::EncodeMetaKey(MetaType::kMetadata, owner, layer, tag);
  rocksdb::WriteBatch batch;
  RETURN_IF_ERROR(FromRocksStatus(PutFramed(&batch, sessions_cf_, key, value, ""), "put"));
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;
  return Write(wo, &batch, "put session metadata");
}

// ---- BlockStore: forwards to Impl ---------------------------------------------------------

BlockStore::BlockStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BlockStore::~BlockStore() = default;

absl::Status BlockStore::BeginDocument(uint64_t tenant, uint64_t doc_id) {
  return impl_->BeginDocument(tenant, doc_id);
}
absl::Status BlockStore::CommitDocument(uint64_t tenant, uint64_t doc_id) {
  return impl_->CommitDocument(tenant, doc_id);
}
absl::Status BlockStore::DeleteDocument(uint64_t tenant, uint64_t doc_id) {
  return impl_->DeleteDocument(tenant, doc_id);
}
absl::StatusOr<DocumentInfo> BlockStore::OpenDocument(uint64_t tenant, uint64_t doc_id) const {
  return impl_->GetDocumentInfo(tenant, doc_id, /*check=*/true);
}
absl::StatusOr<DocumentInfo> BlockStore::GetDocumentInfo(uint64_t tenant, uint64_t doc_id) const {
  return impl_->GetDocumentInfo(tenant, doc_id, /*check=*/false);
}
std::vector<DocumentInfo> BlockStore::ListDocuments(uint64_t tenant) const {
  return impl_->ListDocuments(tenant);
}
absl::Status BlockStore::CloseSession(uint64_t tenant, uint64_t session_id) {
  return impl_->CloseSession(tenant, session_id);
}
absl::Status BlockStore::PutBlock(const BlockId& id, absl::string_view k, absl::string_view v) {
  return impl_->PutBlock(id, k, v);
}
absl::StatusOr<BlockRef> BlockStore::GetBlock(const BlockId& id) {
  return std::move(impl_->MultiGet(absl::MakeConstSpan(&id, 1), /*prefetch=*/false)[0]);
}
std::vector<absl::StatusOr<BlockRef>> BlockStore::MultiGet(absl::Span<const BlockId> ids) {
  return impl_->MultiGet(ids, /*prefetch=*/false);
}
std::future<absl::Status> BlockStore::Prefetch(std::vector<BlockId> ids) {
  return impl_->Prefetch(std::move(ids));
}
absl::Status BlockStore::PutMetadata(const OwnerId& owner, uint32_t layer, uint32_t tag,
                                     absl::string_view value) {
  return impl_->PutMetadata(owner, layer, tag, value);
}
absl::StatusOr<std::string> BlockStore::GetMetadata(const OwnerId& owner, uint32_t layer,
                                                    uint32_t tag) {
  return impl_->GetMetadata(owner, layer, tag);
}
StoreStats BlockStore::GetStats() const { return impl_->GetStats(); }
absl::StatusOr<FsckReport> BlockStore::Fsck() { return impl_->Fsck(); }
absl::Status BlockStore::Resume() { return impl_->Resume(); }
absl::Status BlockStore::Flush() { return impl_->Flush(); }

}  // namespace qllm::memstore
