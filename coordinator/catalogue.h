// The coordinator's document catalogue: one RocksDB database naming every stored document, its
// workers' document key, its attention layout and its text. A document exists exactly when its
// catalogue entry does: the entry is written (synced) only after every worker committed the
// document's layer states, and removed (synced) before the workers delete them, so a crash at
// any point leaves it either whole or absent (leftover worker states are unreachable garbage,
// replaced on the next ingest under the same key and swept at startup).
#ifndef QLLM_COORDINATOR_CATALOGUE_H_
#define QLLM_COORDINATOR_CATALOGUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/memory_config.h"

namespace rocksdb {
class DB;
}

namespace qllm::coordinator {

struct DocumentEntry {
  std::string document_id;
  uint64_t key = 0;  // The workers' document key.
  std::string title;
  int64_t tokens = 0;
  int64_t bytes = 0;
  std::string model_fingerprint;
  int64_t created_unix_ms = 0;
  worker::MemoryConfig memory;
  std::string chat_template;
  uint64_t text_hash = 0;
};

class Catalogue {
 public:
  // Opens (creating) the catalogue in `dir`. UNAVAILABLE / DATA_LOSS when RocksDB cannot.
  static absl::StatusOr<std::unique_ptr<Catalogue>> Open(const std::string& dir);
  ~Catalogue();

  // A fresh workers' document key (persisted, never reused).
  absl::StatusOr<uint64_t> NextKey();
  // Writes the entry with the document's text and token ids (one synced write).
  absl::Status Put(const DocumentEntry& entry, const std::string& text,
                   const std::vector<int32_t>& ids);
  // NOT_FOUND for unknown ids; DATA_LOSS for an unreadable entry.
  absl::StatusOr<DocumentEntry> Get(const std::string& document_id) const;
  absl::Status GetText(const std::string& document_id, std::string* text,
                       std::vector<int32_t>* ids) const;
  // Entries with ids > `after` in id order, at most `limit`.
  absl::StatusOr<std::vector<DocumentEntry>> List(const std::string& after, int limit) const;
  // Removes the entry (one synced write). NOT_FOUND for unknown ids.
  absl::Status Delete(const std::string& document_id);

 private:
  explicit Catalogue(rocksdb::DB* db) : db_(db) {}
  rocksdb::DB* const db_;
};

// FNV-1a 64 of the text (stable across builds): detects a retried CreateDocument.
uint64_t TextHash(std::string_view text);

}  // namespace qllm::coordinator

#endif  // QLLM_COORDINATOR_CATALOGUE_H_
