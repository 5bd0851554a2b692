// Configuration of the memory store.
#ifndef QLLM_MEMSTORE_OPTIONS_H_
#define QLLM_MEMSTORE_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rocksdb {
class FileSystem;
}  // namespace rocksdb

namespace qllm::memstore {

struct BlockStoreOptions {
  // Directory of the RocksDB database; created when missing. Required.
  std::string path;

  // Fingerprint of the model whose KV blocks this process reads and writes (config + weights
  // hash). Stored with every committed document; a document committed under another fingerprint
  // cannot be opened or read (FAILED_PRECONDITION). Required, non-empty.
  std::string model_fingerprint;

  // Capacity of the host-memory LRU tier, in bytes of K+V data. 0 disables the tier.
  // Default: 1 GiB.
  size_t host_cache_bytes = size_t{1} << 30;

  // Number of independently locked shards of the host cache. Default: 16.
  int host_cache_shards = 16;

  // Insert blocks into the host cache when they are written (write-through). Default: true.
  bool cache_on_put = true;

  // Values of at least this many bytes go to RocksDB's integrated blob files instead of SST
  // files. Default: 4096.
  uint64_t min_blob_size = 4096;

  // Target size of one blob file, in bytes. Default: 256 MiB.
  uint64_t blob_file_size = uint64_t{256} << 20;

  // Memtable size of each block column family, in bytes. Default: 64 MiB.
  size_t write_buffer_bytes = size_t{64} << 20;

  // How document blocks reach the disk before CommitDocument acknowledges.
  //   true:  each block goes through the WAL (written twice: WAL, then blob file at flush); the
  //          commit's synced write covers them. Small commits stay cheap.
  //   false: blocks skip the WAL and the commit first flushes the block column family (blob and
  //          SST files synced), then writes the manifest synced. Each byte is written once, at
  //          the price of a flush per commit.
  // Both give the same guarantee: a committed document is complete after any crash.
  // Default: true.
  bool document_blocks_in_wal = true;

  // Threads that serve Prefetch() and RocksDB background jobs (each). Default: 2.
  int background_threads = 2;

  // Pass O_DIRECT to RocksDB for reads (bypasses the page cache so the host cache is the only
  // memory tier). Default: false.
  bool use_direct_reads = false;

  // File system RocksDB runs on; nullptr means the OS file system. Tests pass a
  // FaultInjectionFileSystem (memstore/fault_injection_fs.h). Default: nullptr.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

}  // namespace qllm::memstore

#endif  // QLLM_MEMSTORE_OPTIONS_H_
