#include "memstore/internal/latency_histogram.h"

#include <algorithm>
#include <cmath>

namespace qllm::memstore::internal {
namespace {

double BucketUpper(int i) { return std::pow(2.0, i / 4.0); }

}  // namespace

void LatencyHistogram::Record(double micros) {
  micros = std::max(micros, 0.0);
  int bucket = micros < 1.0 ? 0 : static_cast<int>(std::floor(std::log2(micros) * 4.0)) + 1;
  bucket = std::clamp(bucket, 0, kBuckets - 1);
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  const auto ns = static_cast<uint64_t>(micros * 1000.0);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  uint64_t prev = max_ns_.load(std::memory_order_relaxed);
  while (prev < ns && !max_ns_.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {
  }
}

LatencyStats LatencyHistogram::Summary() const {
  LatencyStats out;
  out.count = count_.load(std::memory_order_relaxed);
  if (out.count == 0) return out;
  out.mean_us = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1000.0 /
                static_cast<double>(out.count);
  out.max_us = static_cast<double>(max_ns_.load(std::memory_order_relaxed)) / 1000.0;
  uint64_t seen = 0;
  const double p50_rank = 0.5 * static_cast<double>(out.count);
  const double p99_rank = 0.99 * static_cast<double>(out.count);
  bool have_p50 = false;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i].load(std::memory_order_relaxed);
    if (!have_p50 && static_cast<double>(seen) >= p50_rank) {
      out.p50_us = std::min(BucketUpper(i), out.max_us);
      have_p50 = true;
    }
    if (static_cast<double>(seen) >= p99_rank) {
      out.p99_us = std::min(BucketUpper(i), out.max_us);
      break;
    }
  }
  return out;
}

}  // namespace qllm::memstore::internal
