#include "coordinator/catalogue.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace qllm::coordinator {
namespace {

constexpr char kDocPrefix[] = "doc/";
constexpr char kTextPrefix[] = "text/";
constexpr char kIdsPrefix[] = "ids/";
constexpr char kNextKey[] = "meta/next_key";

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(what, ": not found"));
  if (s.IsCorruption()) return absl::DataLossError(absl::StrCat(what, ": ", s.ToString()));
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", s.ToString()));
  return absl::UnavailableError(absl::StrCat(what, ": ", s.ToString()));
}

std::string Encode(const DocumentEntry& e) {
  const worker::MemoryConfig& m = e.memory;
  nlohmann::json j = {{"document_id", e.document_id},
                      {"key", e.key},
                      {"title", e.title},
                      {"tokens", e.tokens},
                      {"bytes", e.bytes},
                      {"model_fingerprint", e.model_fingerprint},
                      {"created_unix_ms", e.created_unix_ms},
                      {"chat_template", e.chat_template},
                      {"text_hash", e.text_hash},
                      {"memory",
                       {{"mode", worker::AttentionModeName(m.mode)},
                        {"n_init", m.n_init},
                        {"n_local", m.n_local},
                        {"block_size", m.block_size},
                        {"topk", m.topk},
                        {"repr_topk", m.repr_topk},
                        {"exc_block_size", m.exc_block_size},
                        {"question_weight", m.question_weight}}}};
  return j.dump();
}

absl::StatusOr<DocumentEntry> Decode(const std::string& bytes) {
  const nlohmann::json j = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError("catalogue entry is not valid JSON");
  }
  try {
    DocumentEntry e;
    e.document_id = j.at("document_id").get<std::string>();
    e.key = j.at("key").get<uint64_t>();
    e.title = j.at("title").get<std::string>();
    e.tokens = j.at("tokens").get<int64_t>();
    e.bytes = j.at("bytes").get<int64_t>();
    e.model_fingerprint = j.at("model_fingerprint").get<std::string>();
    e.created_unix_ms = j.at("created_unix_ms").get<int64_t>();
    e.chat_template = j.at("chat_template").get<std::string>();
    e.text_hash = j.at("text_hash").get<uint64_t>();
    const auto& m = j.at("memory");
    ASSIGN_OR_RETURN(e.memory.mode, worker::ParseAttentionMode(m.at("mode").get<std::string>()));
    e.memory.n_init = m.at("n_init").get<int32_t>();
    e.memory.n_local = m.at("n_local").get<int32_t>();
    e.memory.block_size = m.at("block_size").get<int32_t>();
    e.memory.topk = m.at("topk").get<int32_t>();
    e.memory.repr_topk = m.at("repr_topk").get<int32_t>();
    e.memory.exc_block_size = m.at("exc_block_size").get<int32_t>();
    e.memory.question_weight = m.at("question_weight").get<float>();
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return absl::DataLossError(absl::StrCat("catalogue entry: ", ex.what()));
  }
}

}  // namespace

uint64_t TextHash(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

absl::StatusOr<std::unique_ptr<Catalogue>> Catalogue::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* db = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, dir, &db), "open catalogue"));
  return std::unique_ptr<Catalogue>(new Catalogue(db));
}

Catalogue::~Catalogue() { delete db_; }

absl::StatusOr<uint64_t> Catalogue::NextKey() {
  std::string value;
  uint64_t next = 1;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kNextKey, &value);
  if (s.ok() && value.size() == sizeof(next)) {
    std::memcpy(&next, value.data(), sizeof(next));
  } else if (!s.IsNotFound()) {
    RETURN_IF_ERROR(FromRocks(s, "catalogue key counter"));
  }
  const uint64_t after = next + 1;
  rocksdb::WriteOptions sync;
  sync.sync = true;
  RETURN_IF_ERROR(
      FromRocks(db_->Put(sync, kNextKey,
                         rocksdb::Slice(reinterpret_cast<const char*>(&after), sizeof(after))),
                "catalogue key counter"));
  return next;
}

absl::Status Catalogue::Put(const DocumentEntry& entry, const std::string& text,
                            const std::vector<int32_t>& ids) {
  rocksdb::WriteBatch batch;
  batch.Put(absl::StrCat(kDocPrefix, entry.document_id), Encode(entry));
  batch.Put(absl::StrCat(kTextPrefix, entry.document_id), text);
  batch.Put(
      absl::StrCat(kIdsPrefix, entry.document_id),
      rocksdb::Slice(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t)));
  rocksdb::WriteOptions sync;
  sync.sync = true;
  return FromRocks(db_->Write(sync, &batch), "write catalogue entry");
}

absl::StatusOr<DocumentEntry> Catalogue::Get(const std::string& document_id) const {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), absl::StrCat(kDocPrefix, document_id), &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat("no document \"", document_id, "\""));
  RETURN_IF_ERROR(FromRocks(s, "read catalogue entry"));
  return Decode(value);
}

absl::Status Catalogue::GetText(const std::string& document_id, std::string* text,
                                std::vector<int32_t>* ids) const {
  std::string raw;
  RETURN_IF_ERROR(FromRocks(
      db_->Get(rocksdb::ReadOptions(), absl::StrCat(kTextPrefix, document_id), text), "read text"));
  RETURN_IF_ERROR(FromRocks(
      db_->Get(rocksdb::ReadOptions(), absl::StrCat(kIdsPrefix, document_id), &raw), "read ids"));
  if (raw.size() % sizeof(int32_t) != 0) return absl::DataLossError("token ids damaged");
  ids->resize(raw.size() / sizeof(int32_t));
  if (!raw.empty()) std::memcpy(ids->data(), raw.data(), raw.size());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DocumentEntry>> Catalogue::List(const std::string& after,
                                                           int limit) const {
  std::vector<DocumentEntry> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string start = absl::StrCat(kDocPrefix, after);
  for (it->Seek(start); it->Valid() && static_cast<int>(out.size()) < limit; it->Next()) {
    const rocksdb::Slice k = it->key();
    if (!k.starts_with(kDocPrefix)) break;
    if (k.ToString() == start && !after.empty()) continue;
    ASSIGN_OR_RETURN(DocumentEntry e, Decode(it->value().ToString()));
    out.push_back(std::move(e));
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "list catalogue"));
  return out;
}

absl::Status Catalogue::Delete(const std::string& document_id) {
  RETURN_IF_ERROR(Get(document_id).status());
  rocksdb::WriteBatch batch;
  batch.Delete(absl::StrCat(kDocPrefix, document_id));
  batch.Delete(absl::StrCat(kTextPrefix, document_id));
  batch.Delete(absl::StrCat(kIdsPrefix, document_id));
  rocksdb::WriteOptions sync;
  sync.sync = true;
  return FromRocks(db_->Write(sync, &batch), "delete catalogue entry");
}

}  // namespace qllm::coordinator
