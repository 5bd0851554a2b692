// A memory-mapped reader of the safetensors format: an 8-byte little-endian header length N,
// N bytes of JSON describing each tensor (dtype, shape, data_offsets relative to the data
// section), then the raw little-endian tensor data.
#ifndef QLLM_MODEL_SAFETENSORS_H_
#define QLLM_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace qllm::model {

enum class DType { kF32, kF16, kBF16, kI32, kI64 };

// Bytes per element of `dtype`.
size_t DTypeSize(DType dtype);
// "F32", "F16", ... as written in safetensors headers.
const char* DTypeName(DType dtype);

// A tensor inside a mapped file. `data` points into the mapping and is valid as long as the
// SafetensorsFile that produced it lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NOT_FOUND (no file); DATA_LOSS (file shorter than its
  // header or a tensor's data extends past the end: truncated); INVALID_ARGUMENT (header not
  // JSON, bad offsets or shapes, overlapping or misordered data); UNIMPLEMENTED (a dtype the
  // engine does not read, e.g. F8_E4M3 or I8).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Returns the tensor called `name`, or nullptr.
  const TensorView* Find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return file_->path(); }

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  absl::Status Parse();

  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

// Converts `view` (F32, F16 or BF16) to fp32 into `out[0..NumElements())`.
// Errors: INVALID_ARGUMENT for integer dtypes.
absl::Status ConvertToFloat(const TensorView& view, float* out);

}  // namespace qllm::model

#endif  // QLLM_MODEL_SAFETENSORS_H_
