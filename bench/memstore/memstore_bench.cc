// memstore_bench: block write throughput and random multi-get throughput/latency of the
// memory store, against the raw disk measured the same way in the same run.
//
//   memstore_bench                      # 384 MiB data set per block size, 64 MiB host cache
//   memstore_bench --dataset_mb=4096    # bigger
//
// Block sizes are those of the reference configurations: tokens x 8 KV heads x 128 dims x
// 2 bytes, for K and for V (64 tokens: 2 x 128 KiB; 128 tokens: 2 x 256 KiB).
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/memstore/raw_disk.h"
#include "common/stopwatch.h"
#include "memstore/block_store.h"

ABSL_FLAG(std::string, dir, "/tmp", "Directory for the store and the raw file.");
ABSL_FLAG(int, dataset_mb, 384, "Block data written per block size, MiB.");
ABSL_FLAG(int, cache_mb, 64, "Host cache, MiB (the data set should be several times larger).");
ABSL_FLAG(std::string, tokens, "64,128", "Tokens per block, comma-separated.");
ABSL_FLAG(int, batch, 16, "Blocks per MultiGet (blocks selected per layer and step).");
ABSL_FLAG(int, batches, 200, "MultiGet calls measured per block size.");
ABSL_FLAG(bool, direct_reads, true, "O_DIRECT reads in RocksDB (no page cache).");
ABSL_FLAG(bool, blocks_in_wal, true,
          "BlockStoreOptions::document_blocks_in_wal (false: flush at commit, no WAL copy).");
ABSL_FLAG(bool, keep, false, "Keep the files written.");

namespace qllm::bench {
namespace {

using memstore::BlockId;
using memstore::BlockStore;
using memstore::BlockStoreOptions;
using memstore::OwnerId;

constexpr uint32_t kLayers = 32;
constexpr uint32_t kBlocksPerLayerPerDoc = 8;

int Main() {
  const std::string base = absl::GetFlag(FLAGS_dir) + "/qllm-memstore-bench";
  std::filesystem::remove_all(base);
  std::filesystem::create_directories(base);
  const uint64_t dataset = static_cast<uint64_t>(absl::GetFlag(FLAGS_dataset_mb)) << 20;
  const int batch = absl::GetFlag(FLAGS_batch);
  const int batches = absl::GetFlag(FLAGS_batches);
  std::cout << absl::StrFormat(
      "memstore_bench: data set %d MiB per block size, host cache %d MiB, MultiGet batch %d, "
      "direct reads %s, document blocks in WAL %s, dir %s\n",
      dataset >> 20, absl::GetFlag(FLAGS_cache_mb), batch,
      absl::GetFlag(FLAGS_direct_reads) ? "on" : "off",
      absl::GetFlag(FLAGS_blocks_in_wal) ? "yes" : "no", base);
  for (absl::string_view tok : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int tokens = 0;
    if (!absl::SimpleAtoi(tok, &tokens) || tokens <= 0) {
      std::cerr << "bad --tokens entry " << tok << "\n";
      return 2;
    }
    const size_t part = static_cast<size_t>(tokens) * 8 * 128 * 2;
    const size_t block = 2 * part;
    const uint64_t blocks_per_doc = uint64_t{kLayers} * kBlocksPerLayerPerDoc;
    const uint64_t docs = std::max<uint64_t>(1, dataset / block / blocks_per_doc);
    const uint64_t total_blocks = docs * blocks_per_doc;
    const double total_mb = static_cast<double>(total_blocks * block) / 1e6;

    std::string k(part, '\0');
    std::string v(part, '\0');
    std::mt19937_64 fill(42);
    for (auto* s : {&k, &v}) {
      for (char& c : *s) c = static_cast<char>(fill());
    }

    BlockStoreOptions options;
    options.path = absl::StrFormat("%s/store-%d", base, tokens);
    options.model_fingerprint = "bench";
    options.host_cache_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_cache_mb)) << 20;
    options.cache_on_put = false;
    options.use_direct_reads = absl::GetFlag(FLAGS_direct_reads);
    options.document_blocks_in_wal = absl::GetFlag(FLAGS_blocks_in_wal);

    // Store write: whole documents, each committed (synced) before the next.
    double acked_s = 0;
    double flushed_s = 0;
    memstore::StoreStats write_stats;
    {
      auto store = BlockStore::Open(options);
      if (!store.ok()) {
        std::cerr << store.status() << "\n";
        return 1;
      }
      Stopwatch watch;
      for (uint64_t d = 0; d < docs; ++d) {
        if (auto s = (*store)->BeginDocument(1, d); !s.ok()) {
          std::cerr << s << "\n";
          return 1;
        }
        for (uint32_t l = 0; l < kLayers; ++l) {
          for (uint32_t b = 0; b < kBlocksPerLayerPerDoc; ++b) {
            k[0] = static_cast<char>(b);  // Distinct blocks.
            if (auto s = (*store)->PutBlock({OwnerId::Document(1, d), l, b}, k, v); !s.ok()) {
              std::cerr << s << "\n";
              return 1;
            }
          }
        }
        if (auto s = (*store)->CommitDocument(1, d); !s.ok()) {
          std::cerr << s << "\n";
          return 1;
        }
      }
      acked_s = watch.Seconds();
      if (auto s = (*store)->Flush(); !s.ok()) {
        std::cerr << s << "\n";
        return 1;
      }
      flushed_s = watch.Seconds();
      write_stats = (*store)->GetStats();
    }
    // Raw disk, same amount written the same way.
    const std::string raw = absl::StrFormat("%s/raw-%d", base, tokens);
    auto raw_write = RawSequentialWrite(raw, total_blocks * block);
    if (!raw_write.ok()) {
      std::cerr << raw_write.status() << "\n";
      return 1;
    }
    // Random reads: store MultiGet (fresh store, empty host cache) and raw preads of the same
    // size and batch, interleaved in rounds so that both see the same disk conditions.
    constexpr int kRounds = 4;
    std::vector<double> lat;
    std::vector<double> raw_lat;
    double read_s = 0;
    double raw_read_s = 0;
    bool raw_direct = false;
    memstore::StoreStats stats;
    {
      auto store = BlockStore::Open(options);
      if (!store.ok()) {
        std::cerr << store.status() << "\n";
        return 1;
      }
      std::mt19937_64 rng(7);
      std::vector<BlockId> ids(static_cast<size_t>(batch));
      for (int round = 0; round < kRounds; ++round) {
        Stopwatch total;
        for (int i = 0; i < batches / kRounds; ++i) {
          for (auto& id : ids) {
            const uint64_t n = rng() % total_blocks;
            id = {OwnerId::Document(1, n / blocks_per_doc),
                  static_cast<uint32_t>(n % blocks_per_doc / kBlocksPerLayerPerDoc),
                  static_cast<uint32_t>(n % kBlocksPerLayerPerDoc)};
          }
          Stopwatch watch;
          for (auto& r : (*store)->MultiGet(ids)) {
            if (!r.ok()) {
              std::cerr << r.status() << "\n";
              return 1;
            }
          }
          lat.push_back(watch.Seconds() * 1e6);
        }
        read_s += total.Seconds();
        auto raw_read = RawRandomRead(raw, block, batch, batches / kRounds, 7 + round);
        if (!raw_read.ok()) {
          std::cerr << raw_read.status() << "\n";
          return 1;
        }
        raw_read_s += raw_read->seconds;
        raw_direct = raw_read->direct;
        raw_lat.insert(raw_lat.end(), raw_read->batch_us.begin(), raw_read->batch_us.end());
      }
      stats = (*store)->GetStats();
    }
    const double read_bytes = static_cast<double>(block) * batch * (batches / kRounds * kRounds);
    const double store_write = total_mb / acked_s;
    const double store_write_flushed = total_mb / flushed_s;
    const double store_read = read_bytes / read_s / 1e6;
    const double raw_read_mb = read_bytes / raw_read_s / 1e6;
    auto raw_4k = RawRandomRead(raw, 4 << 10, 1, 2000, 8);
    auto raw_64k = RawRandomRead(raw, 64 << 10, 1, 2000, 9);
    if (!raw_4k.ok() || !raw_64k.ok()) {
      std::cerr << "raw read failed\n";
      return 1;
    }
    std::cout << absl::StrFormat(
        "\n== %d tokens/block: %d KiB per block (K %d KiB + V %d KiB), %d blocks, %.0f MB\n",
        tokens, block >> 10, part >> 10, part >> 10, total_blocks, total_mb);
    std::cout << absl::StrFormat(
        "write  store %8.1f MB/s acked (%.1f MB/s incl. flush) | raw seq write+fsync %8.1f MB/s "
        "| ratio %.2f (%.2f)\n",
        store_write, store_write_flushed, *raw_write, store_write / *raw_write,
        store_write_flushed / *raw_write);
    std::cout << absl::StrFormat(
        "read   store %8.1f MB/s, MultiGet(%d) p50 %.0f us p99 %.0f us, host hit rate %.2f | raw "
        "random %d KiB %8.1f MB/s p50 %.0f us p99 %.0f us (%s) | ratio %.2f\n",
        store_read, batch, Quantile(lat, 0.5), Quantile(lat, 0.99), stats.host_hit_rate,
        block >> 10, raw_read_mb, Quantile(raw_lat, 0.5), Quantile(raw_lat, 0.99),
        raw_direct ? "O_DIRECT" : "fadvise", store_read / raw_read_mb);
    std::cout << absl::StrFormat(
        "raw    random 4 KiB %.1f MB/s (%.0f IOPS, p50 %.0f us) | random 64 KiB %.1f MB/s "
        "(%.0f IOPS, p50 %.0f us)\n",
        raw_4k->mb_per_s, raw_4k->mb_per_s * 1e6 / 4096, raw_4k->p50_us, raw_64k->mb_per_s,
        raw_64k->mb_per_s * 1e6 / 65536, raw_64k->p50_us);
    std::cout << absl::StrFormat(
        "store  disk %.0f MB for %.0f MB of blocks, put p50 %.0f us p99 %.0f us, commit p50 %.0f "
        "us\n",
        static_cast<double>(write_stats.disk.bytes) / 1e6, total_mb, write_stats.put_latency.p50_us,
        write_stats.put_latency.p99_us, write_stats.commit_latency.p50_us);
  }
  if (!absl::GetFlag(FLAGS_keep)) std::filesystem::remove_all(base);
  return 0;
}

}  // namespace
}  // namespace qllm::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qllm::bench::Main();
}
