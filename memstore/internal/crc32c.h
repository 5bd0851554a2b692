// CRC-32C (Castagnoli), the checksum of every stored block and metadata value.
#ifndef QLLM_MEMSTORE_INTERNAL_CRC32C_H_
#define QLLM_MEMSTORE_INTERNAL_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace qllm::memstore::internal {

// Returns the CRC-32C of `data[0, n)` continued from `crc`, the CRC-32C of the preceding bytes
// (0 for none). Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise; both
// give identical results. Thread-safe.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// Returns the CRC-32C of `data[0, n)`. Crc32c("123456789", 9) == 0xE3069283.
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace qllm::memstore::internal

#endif  // QLLM_MEMSTORE_INTERNAL_CRC32C_H_
