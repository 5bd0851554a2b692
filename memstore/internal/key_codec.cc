#include "memstore/internal/key_codec.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "memstore/internal/crc32c.h"

namespace qllm::memstore::internal {
namespace {

constexpr uint8_t kFrameVersion = 1;
constexpr uint8_t kManifestVersion = 1;

template <typename T>
void PutBig(std::string* out, T v) {
  char buf[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) {
    buf[sizeof(T) - 1 - i] = static_cast<char>(static_cast<uint64_t>(v) >> (8 * i) & 0xFF);
  }
  out->append(buf, sizeof(T));
}

template <typename T>
T GetBig(const char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return static_cast<T>(v);
}

// Sequential big-endian reader over a bounded buffer.
class Reader {
 public:
  explicit Reader(absl::string_view data) : data_(data) {}
  template <typename T>
  bool Read(T* v) {
    if (data_.size() < sizeof(T)) return false;
    *v = GetBig<T>(data_.data());
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool ReadBytes(size_t n, std::string* out) {
    if (data_.size() < n) return false;
    out->assign(data_.data(), n);
    data_.remove_prefix(n);
    return true;
  }
  size_t remaining() const { return data_.size(); }

 private:
  absl::string_view data_;
};

bool IsValidKind(uint8_t kind) {
  return kind == static_cast<uint8_t>(OwnerKind::kDocument) ||
         kind == static_cast<uint8_t>(OwnerKind::kSession);
}

}  // namespace

std::string OwnerPrefix(const OwnerId& owner) {
  std::string out;
  out.reserve(kBlockKeySize);
  PutBig<uint64_t>(&out, owner.tenant);
  PutBig<uint8_t>(&out, static_cast<uint8_t>(owner.kind));
  PutBig<uint64_t>(&out, owner.id);
  return out;
}

std::string EncodeBlockKey(const BlockId& id) {
  std::string out = OwnerPrefix(id.owner);
  PutBig<uint32_t>(&out, id.layer);
  PutBig<uint32_t>(&out, id.block);
  return out;
}

bool DecodeBlockKey(absl::string_view key, BlockId* id) {
  if (key.size() != kBlockKeySize) return false;
  const char* p = key.data();
  const auto kind = GetBig<uint8_t>(p + 8);
  if (!IsValidKind(kind)) return false;
  id->owner.tenant = GetBig<uint64_t>(p);
  id->owner.kind = static_cast<OwnerKind>(kind);
  id->owner.id = GetBig<uint64_t>(p + 9);
  id->layer = GetBig<uint32_t>(p + 17);
  id->block = GetBig<uint32_t>(p + 21);
  return true;
}

std::string MetaPrefix(MetaType type, const OwnerId& owner) {
  std::string out;
  out.reserve(kMetaKeySize);
  PutBig<uint8_t>(&out, static_cast<uint8_t>(type));
  out += OwnerPrefix(owner);
  return out;
}

std::string EncodeMetaKey(MetaType type, const OwnerId& owner, uint32_t layer, uint32_t tag) {
  std::string out = MetaPrefix(type, owner);
  PutBig<uint32_t>(&out, layer);
  PutBig<uint32_t>(&out, tag);
  return out;
}

bool DecodeMetaKey(absl::string_view key, MetaType* type, OwnerId* owner, uint32_t* layer,
                   uint32_t* tag) {
  if (key.size() != kMetaKeySize) return false;
  const char* p = key.data();
  const auto t = GetBig<uint8_t>(p);
  if (t > static_cast<uint8_t>(MetaType::kPendingIntent)) return false;
  const auto kind = GetBig<uint8_t>(p + 9);
  if (!IsValidKind(kind)) return false;
  *type = static_cast<MetaType>(t);
  owner->tenant = GetBig<uint64_t>(p + 1);
  owner->kind = static_cast<OwnerKind>(kind);
  owner->id = GetBig<uint64_t>(p + 10);
  *layer = GetBig<uint32_t>(p + 18);
  *tag = GetBig<uint32_t>(p + 22);
  return true;
}

std::string PrefixSuccessor(absl::string_view prefix) {
  std::string out(prefix);
  while (!out.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(out.back());
    if (c != 0xFF) {
      ++c;
      return out;
    }
    out.pop_back();
  }
  QLLM_CHECK(false) << "prefix of 0xFF bytes has no successor";
  return out;
}

std::array<char, kFrameHeaderSize> MakeFrameHeader(absl::string_view key, absl::string_view k,
                                                   absl::string_view v) {
  std::string head;
  head.reserve(kFrameHeaderSize);
  PutBig<uint8_t>(&head, kFrameVersion);
  head.append(3, '\0');
  PutBig<uint32_t>(&head, static_cast<uint32_t>(k.size()));
  PutBig<uint32_t>(&head, static_cast<uint32_t>(v.size()));
  uint32_t crc = Crc32c(key.data(), key.size());
  crc = Crc32cExtend(crc, head.data(), head.size());
  crc = Crc32cExtend(crc, k.data(), k.size());
  crc = Crc32cExtend(crc, v.data(), v.size());
  PutBig<uint32_t>(&head, crc);
  std::array<char, kFrameHeaderSize> out;
  std::memcpy(out.data(), head.data(), kFrameHeaderSize);
  return out;
}

absl::Status DecodeFrame(absl::string_view key, absl::string_view value, absl::string_view* kv,
                         size_t* k_size) {
  if (value.size() < kFrameHeaderSize) {
    return absl::DataLossError(
        absl::StrFormat("value of %u bytes is shorter than its header", value.size()));
  }
  const char* p = value.data();
  if (GetBig<uint8_t>(p) != kFrameVersion) {
    return absl::DataLossError(absl::StrFormat("unknown value format %d", GetBig<uint8_t>(p)));
  }
  const uint64_t ks = GetBig<uint32_t>(p + 4);
  const uint64_t vs = GetBig<uint32_t>(p + 8);
  if (kFrameHeaderSize + ks + vs != value.size()) {
    return absl::DataLossError(absl::StrFormat("value holds %u bytes, header says %u", value.size(),
                                               kFrameHeaderSize + ks + vs));
  }
  uint32_t crc = Crc32c(key.data(), key.size());
  crc = Crc32cExtend(crc, p, 12);
  crc = Crc32cExtend(crc, p + kFrameHeaderSize, ks + vs);
  if (crc != GetBig<uint32_t>(p + 12)) {
    return absl::DataLossError("block checksum mismatch");
  }
  *kv = value.substr(kFrameHeaderSize);
  *k_size = ks;
  return absl::OkStatus();
}

std::string EncodeManifest(absl::string_view key, const Manifest& manifest) {
  std::string out;
  PutBig<uint8_t>(&out, kManifestVersion);
  PutBig<uint32_t>(&out, static_cast<uint32_t>(manifest.model_fingerprint.size()));
  out += manifest.model_fingerprint;
  PutBig<uint32_t>(&out, static_cast<uint32_t>(manifest.blocks_per_layer.size()));
  for (uint32_t n : manifest.blocks_per_layer) PutBig<uint32_t>(&out, n);
  PutBig<uint64_t>(&out, manifest.block_bytes);
  PutBig<uint64_t>(&out, manifest.num_metadata);
  PutBig<int64_t>(&out, manifest.commit_time_us);
  const uint32_t crc = Crc32cExtend(Crc32c(key.data(), key.size()), out.data(), out.size());
  PutBig<uint32_t>(&out, crc);
  return out;
}

absl::Status DecodeManifest(absl::string_view key, absl::string_view value, Manifest* manifest) {
  if (value.size() < 4) return absl::DataLossError("truncated manifest");
  const size_t body = value.size() - 4;
  const uint32_t crc = Crc32cExtend(Crc32c(key.data(), key.size()), value.data(), body);
  if (crc != GetBig<uint32_t>(value.data() + body)) {
    return absl::DataLossError("manifest checksum mismatch");
  }
  Reader r(value.substr(0, body));
  uint8_t version = 0;
  uint32_t fp_len = 0;
  uint32_t layers = 0;
  if (!r.Read(&version) || version != kManifestVersion) {
    return absl::DataLossError("unknown manifest format");
  }
  if (!r.Read(&fp_len) || !r.ReadBytes(fp_len, &manifest->model_fingerprint) || !r.Read(&layers) ||
      layers > r.remaining() / 4) {
    return absl::DataLossError("malformed manifest");
  }
  manifest->blocks_per_layer.resize(layers);
  for (uint32_t& n : manifest->blocks_per_layer) r.Read(&n);
  if (!r.Read(&manifest->block_bytes) || !r.Read(&manifest->num_metadata) ||
      !r.Read(&manifest->commit_time_us) || r.remaining() != 0) {
    return absl::DataLossError("malformed manifest");
  }
  return absl::OkStatus();
}

}  // namespace qllm::memstore::internal
