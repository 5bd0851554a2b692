// Raw-disk baselines for memstore_bench: sequential write and random reads of one file, with
// O_DIRECT reads where the file system allows it (else the file's pages are dropped from the
// page cache with posix_fadvise before reading).
#ifndef QLLM_BENCH_MEMSTORE_RAW_DISK_H_
#define QLLM_BENCH_MEMSTORE_RAW_DISK_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qllm::bench {

struct RawReadResult {
  double mb_per_s = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  bool direct = false;  // True if O_DIRECT was used.
  // Latency of each batch, microseconds, in issue order.
  std::vector<double> batch_us;
};

// Writes `bytes` to `path` in 1 MiB writes, then fsyncs. Returns MB/s (10^6 bytes per second).
absl::StatusOr<double> RawSequentialWrite(const std::string& path, uint64_t bytes);

// Reads `count` batches of `batch` chunks of `chunk` bytes at random `chunk`-aligned offsets of
// `path`, one pread after another. Latencies are per batch. REQUIRES: the file exists and holds
// at least one chunk.
absl::StatusOr<RawReadResult> RawRandomRead(const std::string& path, size_t chunk, int batch,
                                            int count, uint64_t seed);

// Returns the value at quantile q (0..1) of `v` (sorted in place).
double Quantile(std::vector<double>& v, double q);

}  // namespace qllm::bench

#endif  // QLLM_BENCH_MEMSTORE_RAW_DISK_H_
