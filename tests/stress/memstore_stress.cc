// memstore_stress: random document writes and deletes against a BlockStore, with an
// expected-state oracle file, for the crash driver (memstore_crash_test.py).
//
// Every run first verifies the store against the oracle (and prints "READY" when it passed),
// then, in --mode=run, writes until killed or --max_docs. The oracle holds one line per event,
// appended with a single write(2) so a kill never leaves half a line:
//   B <id>  document begun (its commit may be in flight)
//   C <id>  commit acknowledged, or the document was found present after a crash
//   D <id>  delete begun
//   X <id>  delete acknowledged, or the document was found absent after a crash
// The last event of an id decides what verification demands: C = present and byte-identical,
// X = absent, B or D = either (the outcome is then appended as C or X, so it cannot change).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "memstore/block_store.h"
#include "tests/testutil/block_bytes.h"

ABSL_FLAG(std::string, db, "", "Store directory.");
ABSL_FLAG(std::string, oracle, "", "Expected-state file (appended).");
ABSL_FLAG(std::string, mode, "run", "'run' (verify, then write until killed) or 'verify'.");
ABSL_FLAG(uint64_t, seed, 1, "Random seed of this run.");
ABSL_FLAG(int, max_docs, 0, "Stop after this many new documents (0 = until killed).");
ABSL_FLAG(int, max_live, 200, "Prefer deletes above this many committed documents.");
ABSL_FLAG(double, delete_prob, 0.15, "Probability that an operation is a delete.");
ABSL_FLAG(bool, blocks_in_wal, true, "BlockStoreOptions::document_blocks_in_wal.");
ABSL_FLAG(int, kill_odds, 0, "Whitebox: SIGKILL self at each kill point with odds 1/N (0 = off).");

namespace qllm::memstore {
namespace {

constexpr uint64_t kTenant = 1;
constexpr char kFingerprint[] = "stress-model";

// Shape of a document, derived from its id so the oracle needs no contents.
struct Shape {
  uint32_t layers;
  uint32_t blocks;
  size_t part_bytes;
};
Shape ShapeOf(uint64_t id) {
  return {static_cast<uint32_t>(1 + id % 3), static_cast<uint32_t>(1 + (id * 7) % 5),
          static_cast<size_t>(1024 * (1 + id % 8))};
}

std::string Bytes(const BlockId& id, char part, size_t n) {
  return qllm::testing::BlockBytes(id, part, n);
}

std::string MetaOf(uint64_t id, uint32_t layer) { return absl::StrCat("meta-", id, "-", layer); }

[[noreturn]] void Fail(const std::string& msg) {
  std::cerr << "memstore_stress: FAILED: " << msg << std::endl;
  std::exit(1);
}

void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Fail(absl::StrCat(what, ": ", s.ToString()));
}

std::mt19937_64* rng = nullptr;

// Whitebox crash point.
void MaybeKill() {
  const int odds = absl::GetFlag(FLAGS_kill_odds);
  if (odds > 0 && (*rng)() % static_cast<uint64_t>(odds) == 0) raise(SIGKILL);
}

class Oracle {
 public:
  explicit Oracle(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // A line without '\n' was torn by a kill; ignore it.
      char op = 0;
      unsigned long long id = 0;
      if (std::sscanf(line.c_str(), "%c %llu", &op, &id) == 2) last_[id] = op;
    }
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd_ < 0) Fail("cannot open oracle " + path);
  }
  void Log(char op, uint64_t id) {
    const std::string line = absl::StrFormat("%c %d\n", op, id);
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      Fail("oracle write");
    }
    last_[id] = op;
  }
  const std::map<uint64_t, char>& last() const { return last_; }
  uint64_t NextId() const { return last_.empty() ? 1 : last_.rbegin()->first + 1; }

 private:
  std::map<uint64_t, char> last_;
  int fd_ = -1;
};

// Returns OK if document `id` is committed, complete and byte-identical; NOT_FOUND if absent.
absl::Status CheckDocument(BlockStore& store, uint64_t id) {
  auto info = store.OpenDocument(kTenant, id);
  if (!info.ok()) return info.status();
  const Shape shape = ShapeOf(id);
  if (info->state != DocumentState::kCommitted) return absl::InternalError("not committed");
  if (info->blocks_per_layer != std::vector<uint32_t>(shape.layers, shape.blocks)) {
    return absl::InternalError("partial document: block counts differ");
  }
  const OwnerId owner = OwnerId::Document(kTenant, id);
  std::vector<BlockId> ids;
  for (uint32_t l = 0; l < shape.layers; ++l) {
    for (uint32_t b = 0; b < shape.blocks; ++b) ids.push_back({owner, l, b});
  }
  auto blocks = store.MultiGet(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!blocks[i].ok()) return absl::InternalError(blocks[i].status().ToString());
    if ((*blocks[i])->k() != Bytes(ids[i], 'k', shape.part_bytes) ||
        (*blocks[i])->v() != Bytes(ids[i], 'v', shape.part_bytes)) {
      return absl::InternalError(absl::StrCat("block ", i, " differs"));
    }
  }
  for (uint32_t l = 0; l < shape.layers; ++l) {
    auto meta = store.GetMetadata(owner, l, 0);
    if (!meta.ok()) return absl::InternalError(meta.status().ToString());
    if (*meta != MetaOf(id, l)) return absl::InternalError("metadata differs");
  }
  return absl::OkStatus();
}

void Verify(BlockStore& store, Oracle& oracle) {
  int present = 0;
  int absent = 0;
  int resolved = 0;
  for (const DocumentInfo& info : store.ListDocuments(kTenant)) {
    if (!oracle.last().contains(info.doc_id)) {
      Fail(absl::StrCat("unexpected document ", info.doc_id, " (never begun)"));
    }
  }
  const std::map<uint64_t, char> last = oracle.last();
  for (const auto& [id, op] : last) {
    const absl::Status s = CheckDocument(store, id);
    const bool exists = s.ok();
    if (!exists && s.code() != absl::StatusCode::kNotFound) {
      Fail(absl::StrCat("document ", id, " (last event ", std::string(1, op), "): ", s.ToString()));
    }
    if (op == 'C' && !exists) Fail(absl::StrCat("lost committed document ", id));
    if (op == 'X' && exists) Fail(absl::StrCat("deleted document ", id, " is back"));
    if (op == 'B' || op == 'D') {
      oracle.Log(exists ? 'C' : 'X', id);
      ++resolved;
    }
    exists ? ++present : ++absent;
  }
  auto report = store.Fsck();
  Check(report.status(), "fsck");
  if (!report->clean()) {
    Fail(absl::StrFormat("fsck: %d orphan, %d missing, %d corrupt", report->orphan_blocks,
                         report->missing_blocks, report->corrupt_values));
  }
  std::cout << absl::StrFormat("verified: %d present, %d absent, %d in-flight resolved\n", present,
                               absent, resolved);
}

void Run(BlockStore& store, Oracle& oracle) {
  const int max_docs = absl::GetFlag(FLAGS_max_docs);
  const uint64_t session = static_cast<uint64_t>(getpid());
  std::vector<uint64_t> live;
  for (const auto& [id, op] : oracle.last()) {
    if (op == 'C') live.push_back(id);
  }
  std::uniform_real_distribution<double> uni(0, 1);
  for (int written = 0; max_docs == 0 || written < max_docs;) {
    const bool del =
        !live.empty() && (uni(*rng) < absl::GetFlag(FLAGS_delete_prob) ||
                          static_cast<int>(live.size()) > absl::GetFlag(FLAGS_max_live));
    if (del) {
      const size_t pick = (*rng)() % live.size();
      const uint64_t id = live[pick];
      live[pick] = live.back();
      live.pop_back();
      oracle.Log('D', id);
      MaybeKill();
      Check(store.DeleteDocument(kTenant, id), "delete");
      MaybeKill();
      oracle.Log('X', id);
      continue;
    }
    const uint64_t id = oracle.NextId();
    const Shape shape = ShapeOf(id);
    const OwnerId owner = OwnerId::Document(kTenant, id);
    oracle.Log('B', id);
    Check(store.BeginDocument(kTenant, id), "begin");
    for (uint32_t l = 0; l < shape.layers; ++l) {
      for (uint32_t b = 0; b < shape.blocks; ++b) {
        const BlockId bid{owner, l, b};
        Check(store.PutBlock(bid, Bytes(bid, 'k', shape.part_bytes),
                             Bytes(bid, 'v', shape.part_bytes)),
              "put");
        // Ephemeral session traffic interleaved with the document's writes.
        const BlockId sid{OwnerId::Session(kTenant, session), l, b};
        Check(store.PutBlock(sid, "session-k", "session-v"), "session put");
        MaybeKill();
      }
      Check(store.PutMetadata(owner, l, 0, MetaOf(id, l)), "metadata");
    }
    if ((*rng)() % 4 == 0) Check(store.CloseSession(kTenant, session), "close session");
    MaybeKill();
    Check(store.CommitDocument(kTenant, id), "commit");
    MaybeKill();
    oracle.Log('C', id);
    live.push_back(id);
    ++written;
  }
}

}  // namespace
}  // namespace qllm::memstore

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace qllm::memstore;  // NOLINT(build/namespaces): main only.
  std::mt19937_64 gen(absl::GetFlag(FLAGS_seed));
  rng = &gen;
  if (absl::GetFlag(FLAGS_db).empty() || absl::GetFlag(FLAGS_oracle).empty()) {
    Fail("--db and --oracle are required");
  }
  BlockStoreOptions options;
  options.path = absl::GetFlag(FLAGS_db);
  options.model_fingerprint = kFingerprint;
  options.host_cache_bytes = 4 << 20;
  options.write_buffer_bytes = 1 << 20;  // Frequent flushes: SST and blob files in every run.
  options.document_blocks_in_wal = absl::GetFlag(FLAGS_blocks_in_wal);
  auto store = BlockStore::Open(options);
  Check(store.status(), "open");
  Oracle oracle(absl::GetFlag(FLAGS_oracle));
  Verify(**store, oracle);
  std::cout << "READY" << std::endl;
  if (absl::GetFlag(FLAGS_mode) == "run") Run(**store, oracle);
  return 0;
}
