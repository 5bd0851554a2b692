#include <cstring>

#include "absl/strings/str_cat.h"
#include "cuda/embedding.h"

namespace qllm::cuda {

absl::Status EmbeddingParams::Validate() const {
  if (tokens == nullptr || table == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("embedding: tokens, table and out are required");
  }
  if (n < 0 || vocab <= 0 || dim <= 0) return absl::InvalidArgumentError("embedding: bad shape");
  return absl::OkStatus();
}

absl::Status EmbeddingRef(const EmbeddingParams& p) {
  if (absl::Status s = p.Validate(); !s.ok()) return s;
  for (int64_t t = 0; t < p.n; ++t) {
    const int32_t id = p.tokens[t];
    if (id < 0 || id >= p.vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " at position ", t, " is outside the vocabulary [0, ", p.vocab, ")"));
    }
    std::memcpy(p.out + t * p.dim, p.table + static_cast<int64_t>(id) * p.dim,
                p.dim * sizeof(float));
  }
  return absl::OkStatus();
}

}  // namespace qllm::cuda
