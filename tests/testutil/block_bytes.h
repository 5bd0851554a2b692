// Deterministic block contents for the memory-store tests and the stress writer: the same
// (owner, layer, block, part) always gives the same bytes, and different ones differ, so a
// read-back can be checked without keeping the data.
#ifndef QLLM_TESTS_TESTUTIL_BLOCK_BYTES_H_
#define QLLM_TESTS_TESTUTIL_BLOCK_BYTES_H_

#include <cstdint>
#include <string>

#include "memstore/types.h"

namespace qllm::testing {

// `n` bytes of the K ('k') or V ('v') part of block `id`.
inline std::string BlockBytes(const memstore::BlockId& id, char part, size_t n) {
  std::string out(n, '\0');
  uint64_t x = id.owner.tenant * 1000003 + id.owner.id * 10007 + id.layer * 101 + id.block * 7 +
               static_cast<uint64_t>(part);
  for (size_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out[i] = static_cast<char>(x >> 56);
  }
  return out;
}

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_BLOCK_BYTES_H_
