#include "model/fingerprint.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qllm::model {
namespace {

// Two FNV-1a 64 lanes with different offset bases: 128 bits of digest, stable across builds.
class Digest {
 public:
  void Update(std::string_view bytes) {
    for (unsigned char c : bytes) {
      a_ = (a_ ^ c) * kPrime;
      b_ = (b_ ^ c) * kPrime;
    }
    b_ ^= bytes.size();
  }
  std::string Hex() const { return absl::StrFormat("%016x%016x", a_, b_); }

 private:
  static constexpr uint64_t kPrime = 0x100000001b3ull;
  uint64_t a_ = 0xcbf29ce484222325ull;
  uint64_t b_ = 0x84222325cbf29ce4ull;
};

absl::Status DigestFile(const std::filesystem::path& path, Digest* digest) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot stat ", path.string(), ": ", ec.message()));
  digest->Update(path.filename().string());
  digest->Update(absl::StrCat(":", size, ":"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot open ", path.string()));
  constexpr uint64_t kSample = 64 << 10;
  constexpr int kSlices = 17;
  std::vector<char> buf(kSample);
  for (int i = 0; i < kSlices; ++i) {
    const uint64_t start =
        size <= kSample ? 0 : (size - kSample) / (kSlices - 1) * static_cast<uint64_t>(i);
    const uint64_t len = std::min(kSample, size - std::min(size, start));
    in.seekg(static_cast<std::streamoff>(start));
    in.read(buf.data(), static_cast<std::streamsize>(len));
    if (static_cast<uint64_t>(in.gcount()) != len) {
      return absl::UnavailableError(absl::StrCat("short read of ", path.string()));
    }
    digest->Update(std::string_view(buf.data(), len));
    if (size <= kSample) break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  std::error_code ec;
  if (!std::filesystem::exists(dir / "config.json", ec)) {
    return absl::NotFoundError(absl::StrCat("no config.json in ", model_dir));
  }
  std::vector<std::filesystem::path> files = {dir / "config.json"};
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".safetensors")) files.push_back(entry.path());
  }
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot list ", model_dir, ": ", ec.message()));
  std::sort(files.begin() + 1, files.end());
  Digest digest;
  for (const auto& f : files) {
    if (absl::Status s = DigestFile(f, &digest); !s.ok()) return s;
  }
  return digest.Hex();
}

}  // namespace qllm::model
