// A Hugging Face checkpoint directory: config.json plus either model.safetensors or shards
// listed in model.safetensors.index.json. All files are memory-mapped; nothing is copied
// until a tensor is read.
#ifndef QLLM_MODEL_CHECKPOINT_H_
#define QLLM_MODEL_CHECKPOINT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace qllm::model {

class Checkpoint {
 public:
  // Opens `dir`. Errors: NOT_FOUND (no config.json, no weights file, a shard named by the
  // index is missing); INVALID_ARGUMENT (malformed index); the errors of ParseModelConfig and
  // SafetensorsFile::Open. Shards are mapped on first use.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  // Returns the tensor `name`. Errors: NOT_FOUND when the checkpoint has no such tensor;
  // the errors of opening the shard that holds it.
  absl::StatusOr<const TensorView*> Find(const std::string& name);

  // Reads tensor `name` as fp32 into `out` after checking that its shape is `shape`.
  // Errors: NOT_FOUND, INVALID_ARGUMENT (shape mismatch or integer dtype).
  absl::Status ReadFloat(const std::string& name, const std::vector<int64_t>& shape, float* out);

  // Names of every tensor in the checkpoint (from the index or the single file).
  std::vector<std::string> TensorNames() const;

 private:
  Checkpoint(std::string dir, ModelConfig config) : dir_(std::move(dir)), config_(config) {}
  absl::StatusOr<SafetensorsFile*> Shard(const std::string& file_name);

  const std::string dir_;
  const ModelConfig config_;
  // Tensor name -> shard file name (relative to dir_).
  std::map<std::string, std::string> weight_map_;
  // Shard file name -> opened file (opened on first use).
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
};

// "[2, 64]"
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace qllm::model

#endif  // QLLM_MODEL_CHECKPOINT_H_
