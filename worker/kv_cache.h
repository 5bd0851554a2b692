// The key/value cache of one attention layer in "full" mode: rotated keys and values of every
// token seen so far, row-major [tokens, kv_dim], grown geometrically.
#ifndef QLLM_WORKER_KV_CACHE_H_
#define QLLM_WORKER_KV_CACHE_H_

#include <cstdint>
#include <cstring>
#include <vector>

namespace qllm::worker {

class KvCache {
 public:
  explicit KvCache(int64_t kv_dim) : kv_dim_(kv_dim) {}

  // Appends n rows of keys and values; each source row starts `src_stride` floats after the
  // previous one (so K and V may be read straight out of a fused QKV buffer).
  void Append(const float* k, const float* v, int64_t n, int64_t src_stride) {
    Reserve(size_ + n);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(k_.data() + (size_ + i) * kv_dim_, k + i * src_stride, kv_dim_ * sizeof(float));
      std::memcpy(v_.data() + (size_ + i) * kv_dim_, v + i * src_stride, kv_dim_ * sizeof(float));
    }
    size_ += n;
  }

  int64_t size() const { return size_; }
  int64_t kv_dim() const { return kv_dim_; }
  const float* keys() const { return k_.data(); }
  const float* values() const { return v_.data(); }
  // Bytes held, capacity included.
  int64_t MemoryBytes() const {
    return static_cast<int64_t>((k_.capacity() + v_.capacity()) * sizeof(float));
  }

 private:
  void Reserve(int64_t tokens) {
    if (tokens * kv_dim_ <= static_cast<int64_t>(k_.size())) return;
    const int64_t cap = std::max<int64_t>(tokens, 2 * static_cast<int64_t>(k_.size()) / kv_dim_);
    k_.resize(cap * kv_dim_);
    v_.resize(cap * kv_dim_);
  }

  const int64_t kv_dim_;
  int64_t size_ = 0;
  std::vector<float> k_;
  std::vector<float> v_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_KV_CACHE_H_
