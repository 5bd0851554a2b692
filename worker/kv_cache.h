// The key/value cache of one attention layer in "full" mode: rotated keys and values of every
// token seen so far, row-major [tokens, kv_dim], grown geometrically.
#ifndef QLLM_WORKER_KV_CACHE_H_
#define QLLM_WORKER_KV_CACHE_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

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

  // Appends the rows to *out: magic "QLLMKVC1", kv_dim and size (int64), then the keys and the
  // values ([size, kv_dim] floats each), all little-endian. Always OK.
  absl::Status Save(std::string* out) const {
    AppendBlobHeader(kv_dim_, size_, out);
    if (size_ > 0) {
      out->append(reinterpret_cast<const char*>(k_.data()), size_ * kv_dim_ * sizeof(float));
      out->append(reinterpret_cast<const char*>(v_.data()), size_ * kv_dim_ * sizeof(float));
    }
    return absl::OkStatus();
  }

  // Replaces the rows with those written by Save(). Errors: those of ParseBlob. The cache is
  // unchanged on error.
  absl::Status Load(std::string_view blob) {
    const absl::StatusOr<BlobRows> rows = ParseBlob(blob, kv_dim_);
    if (!rows.ok()) return rows.status();
    const size_t bytes = static_cast<size_t>(rows->size * kv_dim_) * sizeof(float);
    size_ = 0;
    if (rows->size > 0) {
      Reserve(rows->size);
      std::memcpy(k_.data(), rows->keys, bytes);
      std::memcpy(v_.data(), rows->values, bytes);
    }
    size_ = rows->size;
    return absl::OkStatus();
  }

  // Save's format for writers and readers that move the rows themselves (the CUDA backend
  // copies them between the device and the blob): the header alone, which `size` rows of keys
  // and then of values must follow.
  static void AppendBlobHeader(int64_t kv_dim, int64_t size, std::string* out) {
    const int64_t header[2] = {kv_dim, size};
    out->append(kMagic, sizeof(kMagic));
    out->append(reinterpret_cast<const char*>(header), sizeof(header));
  }
  // A blob's rows, in place: `size` rows of keys at `keys` and of values at `values` (bytes of
  // the blob, not necessarily float-aligned).
  struct BlobRows {
    int64_t size = 0;
    const char* keys = nullptr;
    const char* values = nullptr;
  };
  // Errors: DATA_LOSS for a wrong magic or a size that does not match the blob's length;
  // FAILED_PRECONDITION when the blob's kv_dim differs from `kv_dim`.
  static absl::StatusOr<BlobRows> ParseBlob(std::string_view blob, int64_t kv_dim) {
    int64_t header[2];
    if (blob.size() < sizeof(kMagic) + sizeof(header) ||
        std::memcmp(blob.data(), kMagic, sizeof(kMagic)) != 0) {
      return absl::DataLossError("not a saved KV cache (bad magic or truncated header)");
    }
    std::memcpy(header, blob.data() + sizeof(kMagic), sizeof(header));
    blob.remove_prefix(sizeof(kMagic) + sizeof(header));
    const int64_t saved_dim = header[0], size = header[1];
    if (saved_dim != kv_dim) {
      return absl::FailedPreconditionError(absl::StrCat(
          "KV cache was saved with kv_dim=", saved_dim, ", this session has ", kv_dim));
    }
    const uint64_t row_bytes = static_cast<uint64_t>(kv_dim) * sizeof(float);
    if (size < 0 || static_cast<uint64_t>(size) > blob.size() / (2 * row_bytes) ||
        static_cast<uint64_t>(size) * 2 * row_bytes != blob.size()) {
      return absl::DataLossError(absl::StrCat("saved KV cache of ", size, " rows holds ",
                                              blob.size(), " bytes of keys and values"));
    }
    return BlobRows{size, blob.data(), blob.data() + size * row_bytes};
  }

 private:
  void Reserve(int64_t tokens) {
    if (tokens * kv_dim_ <= static_cast<int64_t>(k_.size())) return;
    const int64_t cap = std::max<int64_t>(tokens, 2 * static_cast<int64_t>(k_.size()) / kv_dim_);
    k_.resize(cap * kv_dim_);
    v_.resize(cap * kv_dim_);
  }

  static_assert(std::endian::native == std::endian::little, "saved caches are little-endian");
  static constexpr char kMagic[8] = {'Q', 'L', 'L', 'M', 'K', 'V', 'C', '1'};

  const int64_t kv_dim_;
  int64_t size_ = 0;
  std::vector<float> k_;
  std::vector<float> v_;
};

}  // namespace qllm::worker

#endif  // QLLM_WORKER_KV_CACHE_H_
