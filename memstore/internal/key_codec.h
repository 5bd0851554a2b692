// On-disk key and value layouts of the memory store. All integers are fixed-width big-endian so
// that byte order equals numeric order and one owner's keys form one contiguous range.
//
// Block key (column families "doc_blocks" and "sessions"), 25 bytes:
//   tenant u64 | kind u8 | owner id u64 | layer u32 | block u32
// Meta key (column family "meta"; session metadata lives in "sessions"), 26 bytes:
//   record type u8 | tenant u64 | kind u8 | owner id u64 | layer u32 | tag u32
// Framed value (blocks and metadata blobs):
//   version u8 (=1) | 3 zero bytes | k_size u32 | v_size u32 | crc32c u32 | K bytes | V bytes
//   where crc32c covers the key, the first 12 header bytes, then K and V.
// Manifest value (one per committed document, meta record type kManifest):
//   version u8 (=1) | fp_len u32 | fingerprint | num_layers u32 | blocks u32 x num_layers |
//   block_bytes u64 | num_metadata u64 | commit_time_us i64 | crc32c u32 (key + all before)
#ifndef QLLM_MEMSTORE_INTERNAL_KEY_CODEC_H_
#define QLLM_MEMSTORE_INTERNAL_KEY_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "memstore/types.h"

namespace qllm::memstore::internal {

inline constexpr size_t kOwnerPrefixSize = 17;
inline constexpr size_t kBlockKeySize = 25;
inline constexpr size_t kMetaKeySize = 26;
inline constexpr size_t kFrameHeaderSize = 16;

// Record types of meta keys.
enum class MetaType : uint8_t {
  // The commit record of a document (layer = tag = 0).
  kManifest = 0,
  // An opaque metadata blob (framed value).
  kMetadata = 1,
  // Written by BeginDocument, removed by the commit batch: marks blocks to drop after a crash.
  kPendingIntent = 2,
};

// Returns tenant | kind | owner id (17 bytes), the prefix of all block keys of `owner`.
std::string OwnerPrefix(const OwnerId& owner);
// Returns the 25-byte block key of `id`.
std::string EncodeBlockKey(const BlockId& id);
// Parses a block key. Returns false when `key` is not a well-formed block key.
bool DecodeBlockKey(absl::string_view key, BlockId* id);

// Returns type | tenant | kind | owner id (18 bytes), the prefix of `owner`'s meta keys of `type`.
std::string MetaPrefix(MetaType type, const OwnerId& owner);
// Returns the 26-byte meta key.
std::string EncodeMetaKey(MetaType type, const OwnerId& owner, uint32_t layer, uint32_t tag);
// Parses a meta key. Returns false when `key` is not a well-formed meta key.
bool DecodeMetaKey(absl::string_view key, MetaType* type, OwnerId* owner, uint32_t* layer,
                   uint32_t* tag);

// Returns the smallest string greater than every string starting with `prefix`.
// REQUIRES: `prefix` has at least one byte below 0xFF.
std::string PrefixSuccessor(absl::string_view prefix);

// Returns the frame header of a value with parts `k` and `v` stored under `key`.
std::array<char, kFrameHeaderSize> MakeFrameHeader(absl::string_view key, absl::string_view k,
                                                   absl::string_view v);
// Checks the frame of `value` stored under `key` and returns the K+V payload and the K size.
// Returns DATA_LOSS on a bad version, size or checksum.
absl::Status DecodeFrame(absl::string_view key, absl::string_view value, absl::string_view* kv,
                         size_t* k_size);

// The commit record of a document.
struct Manifest {
  std::string model_fingerprint;
  std::vector<uint32_t> blocks_per_layer;
  uint64_t block_bytes = 0;
  uint64_t num_metadata = 0;
  int64_t commit_time_us = 0;
};

std::string EncodeManifest(absl::string_view key, const Manifest& manifest);
// Returns DATA_LOSS when `value` is truncated or its checksum does not match.
absl::Status DecodeManifest(absl::string_view key, absl::string_view value, Manifest* manifest);

}  // namespace qllm::memstore::internal

#endif  // QLLM_MEMSTORE_INTERNAL_KEY_CODEC_H_
