// Opening the store: RocksDB setup, manifest loading, cleanup of what a crash left behind, and
// the full consistency check (Fsck).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "memstore/internal/block_store_impl.h"
#include "memstore/internal/key_codec.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace qllm::memstore {
namespace {

using internal::MetaType;

constexpr char kDocBlocksCf[] = "doc_blocks";
constexpr char kSessionsCf[] = "sessions";
constexpr char kMetaCf[] = "meta";

rocksdb::ColumnFamilyOptions BlockCfOptions(const BlockStoreOptions& options) {
  rocksdb::ColumnFamilyOptions cf;
  cf.enable_blob_files = true;
  cf.min_blob_size = options.min_blob_size;
  cf.blob_file_size = options.blob_file_size;
  cf.enable_blob_garbage_collection = true;
  // KV activations in bf16/fp16 do not compress; skip the CPU cost.
  cf.blob_compression_type = rocksdb::kNoCompression;
  cf.compression = rocksdb::kNoCompression;
  cf.write_buffer_size = options.write_buffer_bytes;
  return cf;
}

}  // namespace

absl::Status FromRocksStatus(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(context, ": ", s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsNotSupported()) return absl::UnimplementedError(msg);
  if (s.IsIOError() || s.IsBusy() || s.IsTryAgain() || s.IsTimedOut() || s.IsIncomplete()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

absl::Status BlockStore::Impl::OpenDb() {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // Documents are covered by the WAL and sessions are dropped at open, so a flush at shutdown
  // buys nothing.
  db_options.avoid_flush_during_shutdown = true;
  db_options.track_and_verify_wals_in_manifest = true;
  // The store resumes RocksDB itself on the next write (Impl::Write), so the outcome of that
  // write says whether space has returned; RocksDB's own retry thread would make it Busy.
  db_options.max_bgerror_resume_count = 0;
  db_options.max_background_jobs = std::max(2, options_.background_threads);
  db_options.use_direct_reads = options_.use_direct_reads;
  if (options_.file_system != nullptr) {
    env_ = rocksdb::NewCompositeEnv(options_.file_system);
    db_options.env = env_.get();
  }
  const rocksdb::ColumnFamilyOptions block_cf = BlockCfOptions(options_);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kDocBlocksCf, block_cf},
      {kSessionsCf, block_cf},
      {kMetaCf, rocksdb::ColumnFamilyOptions()},
  };
  rocksdb::DB* db = nullptr;
  RETURN_IF_ERROR(
      FromRocksStatus(rocksdb::DB::Open(db_options, options_.path, descriptors, &handles_, &db),
                      absl::StrCat("open ", options_.path)));
  db_.reset(db);
  doc_blocks_cf_ = handles_[1];
  meta_cf_ = handles_[3];
  // Sessions never outlive the process: drop whatever the last one left and start empty.
  RETURN_IF_ERROR(FromRocksStatus(db_->DropColumnFamily(handles_[2]), "drop sessions"));
  RETURN_IF_ERROR(
      FromRocksStatus(db_->DestroyColumnFamilyHandle(handles_[2]), "drop sessions handle"));
  handles_[2] = nullptr;
  RETURN_IF_ERROR(FromRocksStatus(db_->CreateColumnFamily(block_cf, kSessionsCf, &handles_[2]),
                                  "create sessions"));
  sessions_cf_ = handles_[2];
  return absl::OkStatus();
}

absl::Status BlockStore::Impl::LoadManifests() {
  const std::string begin(1, static_cast<char>(MetaType::kManifest));
  const std::string end = internal::PrefixSuccessor(begin);
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_cf_));
  absl::MutexLock lock(&mu_);
  for (it->Seek(begin); it->Valid() && it->key().compare(end) < 0; it->Next()) {
    MetaType type;
    OwnerId owner;
    uint32_t layer = 0;
    uint32_t tag = 0;
    if (!internal::DecodeMetaKey(ToView(it->key()), &type, &owner, &layer, &tag)) {
      continue;  // Counted by Fsck; nothing to attach it to.
    }
    DocState& doc = docs_[{owner.tenant, owner.id}];
    doc.state = DocumentState::kCommitted;
    internal::Manifest manifest;
    if (!internal::DecodeManifest(ToView(it->key()), ToView(it->value()), &manifest).ok()) {
      doc.data_loss = true;
      continue;
    }
    doc.fingerprint = std::move(manifest.model_fingerprint);
    doc.blocks_per_layer = std::move(manifest.blocks_per_layer);
    doc.num_blocks = 0;
    for (uint32_t n : doc.blocks_per_layer) doc.num_blocks += n;
    doc.block_bytes = manifest.block_bytes;
    doc.num_metadata = manifest.num_metadata;
    doc.commit_time_us = manifest.commit_time_us;
  }
  return FromRocksStatus(it->status(), "scan manifests");
}

absl::Status BlockStore::Impl::DropUncommittedBlocks() {
  const std::string begin(1, static_cast<char>(MetaType::kPendingIntent));
  const std::string end = internal::PrefixSuccessor(begin);
  rocksdb::WriteBatch batch;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
    for (it->Seek(begin); it->Valid() && it->key().compare(end) < 0; it->Next()) {
      MetaType type;
      OwnerId owner;
      uint32_t layer = 0;
      uint32_t tag = 0;
      if (!internal::DecodeMetaKey(ToView(it->key()), &type, &owner, &layer, &tag)) {
        continue;
      }
      const std::string prefix = internal::OwnerPrefix(owner);
      const std::string meta = internal::MetaPrefix(MetaType::kMetadata, owner);
      rocksdb::Status s =
          batch.DeleteRange(doc_blocks_cf_, prefix, internal::PrefixSuccessor(prefix));
      if (s.ok()) s = batch.DeleteRange(meta_cf_, meta, internal::PrefixSuccessor(meta));
      if (s.ok()) s = batch.Delete(meta_cf_, it->key());
      RETURN_IF_ERROR(FromRocksStatus(s, "drop uncommitted document"));
    }
    RETURN_IF_ERROR(FromRocksStatus(it->status(), "scan pending documents"));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  // A crash before this write lands leaves the intents in place, so the next open redoes it.
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocksStatus(db_->Write(wo, &batch), "drop uncommitted documents");
}

absl::StatusOr<FsckReport> BlockStore::Impl::Fsck() {
  FsckReport report;
  std::vector<std::pair<DocKey, DocState>> docs;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, doc] : docs_) {
      if (doc.state == DocumentState::kCommitted) docs.emplace_back(key, doc);
    }
  }
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  for (const auto& [key, doc] : docs) {
    ++report.documents;
    const OwnerId owner = OwnerId::Document(key.first, key.second);
    uint64_t corrupt = 0;
    uint64_t missing = 0;
    // Blocks: read each listed block and verify its frame.
    for (uint32_t layer = 0; layer < doc.blocks_per_layer.size(); ++layer) {
      for (uint32_t b = 0; b < doc.blocks_per_layer[layer]; ++b) {
        const std::string k = internal::EncodeBlockKey({owner, layer, b});
        rocksdb::PinnableSlice value;
        rocksdb::Status s = db_->Get(ro, doc_blocks_cf_, k, &value);
        if (s.IsNotFound()) {
          ++missing;
          continue;
        }
        absl::string_view kv;
        size_t k_size = 0;
        if (!s.ok() || !internal::DecodeFrame(k, ToView(value), &kv, &k_size).ok()) {
          ++corrupt;
          continue;
        }
        ++report.blocks_checked;
        report.bytes_checked += kv.size();
      }
    }
    // Metadata: every blob of the document verifies and the count matches the manifest.
    const std::string meta = internal::MetaPrefix(MetaType::kMetadata, owner);
    const std::string meta_end = internal::PrefixSuccessor(meta);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, meta_cf_));
    uint64_t num_metadata = 0;
    for (it->Seek(meta); it->Valid() && it->key().compare(meta_end) < 0; it->Next()) {
      ++num_metadata;
      absl::string_view kv;
      size_t k_size = 0;
      if (!internal::DecodeFrame(ToView(it->key()), ToView(it->value()), &kv, &k_size).ok()) {
        ++corrupt;
      } else {
        ++report.metadata_checked;
      }
    }
    if (!it->status().ok()) ++corrupt;
    if (num_metadata < doc.num_metadata) missing += doc.num_metadata - num_metadata;
    report.corrupt_values += corrupt;
    report.missing_blocks += missing;
    if (corrupt > 0 || missing > 0 || doc.data_loss) {
      report.damaged_documents.push_back(key);
      MarkDataLoss(owner);
    }
  }
  // Orphans: block keys of owners that are neither committed nor pending. One seek per owner.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, doc_blocks_cf_));
  it->SeekToFirst();
  while (it->Valid()) {
    BlockId id;
    if (!internal::DecodeBlockKey(ToView(it->key()), &id)) {
      ++report.orphan_blocks;
      it->Next();
      continue;
    }
    bool known = false;
    {
      absl::MutexLock lock(&mu_);
      known = docs_.contains({id.owner.tenant, id.owner.id});
    }
    const std::string prefix = internal::OwnerPrefix(id.owner);
    if (known) {
      it->Seek(internal::PrefixSuccessor(prefix));
      continue;
    }
    for (; it->Valid() && it->key().starts_with(prefix); it->Next()) ++report.orphan_blocks;
  }
  if (!it->status().ok()) report.orphan_scan_complete = false;
  return report;
}

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Open(const BlockStoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("BlockStoreOptions.path is empty");
  if (options.model_fingerprint.empty()) {
    return absl::InvalidArgumentError("BlockStoreOptions.model_fingerprint is empty");
  }
  if (options.host_cache_shards < 1) {
    return absl::InvalidArgumentError("BlockStoreOptions.host_cache_shards must be >= 1");
  }
  auto impl = std::make_unique<Impl>(options);
  RETURN_IF_ERROR(impl->OpenDb());
  RETURN_IF_ERROR(impl->LoadManifests());
  RETURN_IF_ERROR(impl->DropUncommittedBlocks());
  return std::unique_ptr<BlockStore>(new BlockStore(std::move(impl)));
}

}  // namespace qllm::memstore
