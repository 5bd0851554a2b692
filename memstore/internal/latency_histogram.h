// A lock-free latency histogram with geometric buckets (about 19% wide).
#ifndef QLLM_MEMSTORE_INTERNAL_LATENCY_HISTOGRAM_H_
#define QLLM_MEMSTORE_INTERNAL_LATENCY_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "memstore/types.h"

namespace qllm::memstore::internal {

// Records durations in microseconds; percentiles are bucket upper bounds. Thread-safe.
class LatencyHistogram {
 public:
  LatencyHistogram() = default;
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  void Record(double micros);
  LatencyStats Summary() const;

 private:
  // Bucket i holds values in [B^(i-1), B^i) microseconds with B = 2^(1/4); 160 buckets reach
  // about 10^12 us.
  static constexpr int kBuckets = 160;
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> max_ns_{0};
};

}  // namespace qllm::memstore::internal

#endif  // QLLM_MEMSTORE_INTERNAL_LATENCY_HISTOGRAM_H_
