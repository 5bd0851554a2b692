#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/status_macros.h"

namespace qllm::model {
namespace {

using Json = nlohmann::json;

// Headers above this size are rejected before parsing (real ones are a few hundred KiB).
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  return absl::UnimplementedError(
      absl::StrCat("unsupported dtype \"", s, "\" (supported: F32, F16, BF16, I32, I64)"));
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(mapped)));
  absl::Status s = file->Parse();
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  return file;
}

absl::Status SafetensorsFile::Parse() {
  const uint8_t* base = file_->data();
  const uint64_t size = file_->size();
  if (size < 8) {
    return absl::DataLossError(absl::StrCat("file is ", size, " bytes, shorter than the header"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("header length ", header_len, " is implausible: not a safetensors file"));
  }
  if (8 + header_len > size) {
    return absl::DataLossError(
        absl::StrCat("truncated: header needs ", 8 + header_len, " bytes, file has ", size));
  }
  const char* text = reinterpret_cast<const char*>(base + 8);
  Json header = Json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError("header is not a JSON object");
  }
  const uint8_t* data = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const Json& t = it.value();
    const std::string where = absl::StrCat("tensor \"", it.key(), "\": ");
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array() || !t.contains("data_offsets") || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2) {
      return absl::InvalidArgumentError(where + "needs dtype, shape and data_offsets [begin, end]");
    }
    TensorView view;
    view.name = it.key();
    auto dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::Status(dtype.status().code(), absl::StrCat(where, dtype.status().message()));
    }
    view.dtype = *dtype;
    uint64_t elements = 1;
    for (const Json& d : t["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) {
        return absl::InvalidArgumentError(where + "shape entries must be non-negative integers");
      }
      view.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
      elements *= d.get<uint64_t>();
      if (elements > (uint64_t{1} << 40)) return absl::InvalidArgumentError(where + "too large");
    }
    const Json& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(where + "data_offsets must be non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>();
    const uint64_t end = off[1].get<uint64_t>();
    if (end < begin) return absl::InvalidArgumentError(where + "data_offsets end < begin");
    if (end - begin != elements * DTypeSize(view.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(where, "data_offsets span ", end - begin,
                                                     " bytes but shape and dtype need ",
                                                     elements * DTypeSize(view.dtype)));
    }
    if (end > data_size) {
      return absl::DataLossError(absl::StrCat(where, "data ends at byte ", end,
                                              " of the data section, which has only ", data_size,
                                              " bytes (truncated file)"));
    }
    view.data = data + begin;
    view.nbytes = end - begin;
    ranges.emplace_back(begin, end);
    tensors_.emplace(view.name, std::move(view));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError("tensor data ranges overlap");
    }
  }
  return absl::OkStatus();
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status ConvertToFloat(const TensorView& view, float* out) {
  const int64_t n = view.NumElements();
  switch (view.dtype) {
    case DType::kF32:
      std::memcpy(out, view.data, n * sizeof(float));
      return absl::OkStatus();
    case DType::kF16:
    case DType::kBF16: {
      const bool bf16 = view.dtype == DType::kBF16;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, view.data + 2 * i, 2);
        out[i] = bf16 ? Bf16ToFloat(h) : Fp16ToFloat(h);
      }
      return absl::OkStatus();
    }
    case DType::kI32:
    case DType::kI64:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor \"", view.name, "\" has integer dtype ",
                                                 DTypeName(view.dtype),
                                                 " where floating point weights are required"));
}

}  // namespace qllm::model
