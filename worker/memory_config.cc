#include "worker/memory_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qllm::worker {
namespace {

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

template <typename T>
absl::Status Read(const YAML::Node& node, const std::string& key, T* out) {
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception&) {
    return Invalid(absl::StrCat("config: \"", key, "\" has an invalid value"));
  }
  return absl::OkStatus();
}

absl::Status ReadInt(const YAML::Node& node, const std::string& key, int32_t* out) {
  int64_t v = 0;
  RETURN_IF_ERROR(Read(node, key, &v));
  if (v < INT32_MIN || v > INT32_MAX)
    return Invalid(absl::StrCat("config: \"", key, "\" overflows"));
  *out = static_cast<int32_t>(v);
  return absl::OkStatus();
}

absl::Status ParseModelSection(const YAML::Node& model, MemoryConfig* c) {
  if (!model.IsMap()) return Invalid("config: \"model\" must be a map");
  for (const auto& kv : model) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "type") {
      std::string type;
      RETURN_IF_ERROR(Read(v, key, &type));
      ASSIGN_OR_RETURN(c->mode, ParseAttentionMode(type));
    } else if (key == "n_init") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->n_init));
    } else if (key == "n_local") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->n_local));
    } else if (key == "block_size") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->block_size));
    } else if (key == "topk") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->topk));
    } else if (key == "repr_topk") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->repr_topk));
    } else if (key == "max_cached_block") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->max_cached_block));
    } else if (key == "exc_block_size") {
      RETURN_IF_ERROR(ReadInt(v, key, &c->exc_block_size));
    } else if (key == "question_weight") {
      RETURN_IF_ERROR(Read(v, key, &c->question_weight));
    } else if (key == "base") {
      double base = 0;
      RETURN_IF_ERROR(Read(v, key, &base));
      c->rope_base = base;
    } else if (key == "distance_scale") {
      double scale = 0;
      RETURN_IF_ERROR(Read(v, key, &scale));
      if (scale != 1.0) {
        return absl::UnimplementedError(
            absl::StrCat("config: distance_scale ", scale, " is not supported (only 1.0)"));
      }
    } else if (key == "perhead" || key == "faiss") {
      bool on = false;
      RETURN_IF_ERROR(Read(v, key, &on));
      if (on) {
        return absl::UnimplementedError(absl::StrCat("config: ", key, ": true is not supported"));
      }
    } else if (key == "fattn" || key == "async_global_stream" || key == "pin_memory") {
      // Implementation choices of the reference with no effect on results.
      bool ignored = false;
      RETURN_IF_ERROR(Read(v, key, &ignored));
    } else if (key == "path") {
      // The model path: the service takes the model from its own flags.
      std::string ignored;
      RETURN_IF_ERROR(Read(v, key, &ignored));
    } else {
      return Invalid(absl::StrCat("config: unknown key \"model.", key, "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* AttentionModeName(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kFull:
      return "full";
    case AttentionMode::kStreaming:
      return "streaming";
    case AttentionMode::kInfLlm:
      return "infllm";
    case AttentionMode::kQllm:
      return "qllm";
  }
  return "?";
}

absl::StatusOr<AttentionMode> ParseAttentionMode(const std::string& name) {
  if (name == "full" || name == "origin") return AttentionMode::kFull;
  if (name == "streaming" || name == "stream-llm") return AttentionMode::kStreaming;
  if (name == "infllm" || name == "inf-llm") return AttentionMode::kInfLlm;
  if (name == "qllm" || name == "q-llm") return AttentionMode::kQllm;
  return Invalid(absl::StrCat("unknown attention mode \"", name,
                              "\" (expected full, streaming, infllm or qllm)"));
}

absl::Status MemoryConfig::Validate() const {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v <= 0) return Invalid(absl::StrCat(name, " must be positive, got ", v));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("chunk_size", chunk_size));
  if (!uses_memory()) return absl::OkStatus();
  if (n_init < 0) return Invalid(absl::StrCat("n_init must be >= 0, got ", n_init));
  RETURN_IF_ERROR(positive("n_local", n_local));
  RETURN_IF_ERROR(positive("block_size", block_size));
  RETURN_IF_ERROR(positive("repr_topk", repr_topk));
  RETURN_IF_ERROR(positive("exc_block_size", exc_block_size));
  if (topk < 0) return Invalid(absl::StrCat("topk must be >= 0, got ", topk));
  if (max_cached_block < 0) {
    return Invalid(absl::StrCat("max_cached_block must be >= 0, got ", max_cached_block));
  }
  if (repr_topk > block_size) {
    return Invalid(
        absl::StrCat("repr_topk (", repr_topk, ") exceeds block_size (", block_size, ")"));
  }
  if (exc_block_size > n_local) {
    return Invalid(
        absl::StrCat("exc_block_size (", exc_block_size, ") must be <= n_local (", n_local, ")"));
  }
  if (chunk_size % exc_block_size != 0) {
    return Invalid(absl::StrCat("chunk_size (", chunk_size,
                                ") must be a multiple of exc_block_size (", exc_block_size, ")"));
  }
  if (!std::isfinite(question_weight) || question_weight < 0.0f) {
    return Invalid(absl::StrCat("question_weight must be finite and >= 0, got ", question_weight));
  }
  if (mode == AttentionMode::kQllm && n_init == 0) {
    return Invalid(
        "qllm mode needs n_init > 0: the question vector is formed when the "
        "attention sinks first fill");
  }
  return absl::OkStatus();
}

absl::Status MemoryConfig::ValidateForModel(double rope_theta) const {
  RETURN_IF_ERROR(Validate());
  if (rope_base.has_value() && std::abs(*rope_base - rope_theta) > 1e-6 * rope_theta) {
    return Invalid(absl::StrCat("config base ", *rope_base,
                                " does not match the checkpoint's rope_theta ", rope_theta));
  }
  return absl::OkStatus();
}

absl::StatusOr<MemoryConfig> ParseMemoryConfigYaml(const std::string& yaml_text) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return Invalid(absl::StrCat("config: not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) return Invalid("config: the top level must be a map");
  MemoryConfig c;
  bool has_model = false;
  try {
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (key == "model") {
        has_model = true;
        RETURN_IF_ERROR(ParseModelSection(kv.second, &c));
      } else if (key == "chunk_size") {
        RETURN_IF_ERROR(ReadInt(kv.second, key, &c.chunk_size));
      } else if (key == "conv_type") {
        RETURN_IF_ERROR(Read(kv.second, key, &c.conv_type));
      } else if (key == "max_len") {
        RETURN_IF_ERROR(Read(kv.second, key, &c.max_len));
        if (c.max_len <= 0) return Invalid("config: max_len must be positive");
      } else if (key == "truncation") {
        std::string truncation;
        RETURN_IF_ERROR(Read(kv.second, key, &truncation));
        if (truncation != "suffix" && truncation != "middle" && truncation != "prefix" &&
            truncation != "none") {
          return Invalid(absl::StrCat("config: unknown truncation \"", truncation, "\""));
        }
      } else {
        return Invalid(absl::StrCat("config: unknown key \"", key, "\""));
      }
    }
  } catch (const YAML::Exception& e) {
    return Invalid(absl::StrCat("config: ", e.what()));
  }
  if (!has_model) return Invalid("config: missing the \"model\" section");
  RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<MemoryConfig> LoadMemoryConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseMemoryConfigYaml(ss.str());
  if (!c.ok())
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  return c;
}

}  // namespace qllm::worker
