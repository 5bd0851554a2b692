#include "model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace qllm::model {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint(dir, config));
  namespace fs = std::filesystem;
  const fs::path index_path = fs::path(dir) / kIndexFile;
  const fs::path single_path = fs::path(dir) / kSingleFile;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": not a JSON object with a \"weight_map\" object"));
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": weight_map[\"", it.key(), "\"] is not a string"));
      }
      const std::string file = it.value().get<std::string>();
      if (file.find('/') != std::string::npos || file == ".." || file.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": shard name \"", file, "\" is not a file name"));
      }
      ckpt->weight_map_[it.key()] = file;
    }
    // Every shard must exist up front so a missing file is reported at load, not mid-run.
    for (const auto& [name, file] : ckpt->weight_map_) {
      if (!fs::exists(fs::path(dir) / file)) {
        return absl::NotFoundError(absl::StrCat(dir, ": shard ", file, " (holding ", name,
                                                ") named by ", kIndexFile, " is missing"));
      }
    }
  } else if (fs::exists(single_path)) {
    ASSIGN_OR_RETURN(SafetensorsFile * file, ckpt->Shard(kSingleFile));
    for (const auto& [name, view] : file->tensors()) ckpt->weight_map_[name] = kSingleFile;
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile, " exists"));
  }
  return ckpt;
}

absl::StatusOr<SafetensorsFile*> Checkpoint::Shard(const std::string& file_name) {
  auto it = shards_.find(file_name);
  if (it != shards_.end()) return it->second.get();
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir_ + "/" + file_name));
  SafetensorsFile* raw = file.get();
  shards_.emplace(file_name, std::move(file));
  return raw;
}

absl::StatusOr<const TensorView*> Checkpoint::Find(const std::string& name) {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": missing tensor \"", name, "\""));
  }
  ASSIGN_OR_RETURN(SafetensorsFile * file, Shard(it->second));
  const TensorView* view = file->Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat(file->path(), ": missing tensor \"", name,
                                            "\" (the index says it is in this shard)"));
  }
  return view;
}

absl::Status Checkpoint::ReadFloat(const std::string& name, const std::vector<int64_t>& shape,
                                   float* out) {
  ASSIGN_OR_RETURN(const TensorView* view, Find(name));
  if (view->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor \"", name, "\" has shape ",
                                                   ShapeString(view->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  return ConvertToFloat(*view, out);
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) names.push_back(name);
  return names;
}

}  // namespace qllm::model
