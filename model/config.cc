#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace qllm::model {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", what));
}

// Reads an integer field. `required` fields that are absent are an error.
absl::Status GetInt(const Json& j, const char* key, bool required, int64_t lo, int64_t hi,
                    int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Invalid(absl::StrCat("missing required field \"", key, "\""));
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) return Invalid(absl::StrCat("\"", key, "\" must be an integer"));
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return Invalid(absl::StrCat("\"", key, "\" = ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status GetFloat(const Json& j, const char* key, bool required, double lo, double hi,
                      float* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Invalid(absl::StrCat("missing required field \"", key, "\""));
    return absl::OkStatus();
  }
  if (!it->is_number()) return Invalid(absl::StrCat("\"", key, "\" must be a number"));
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return Invalid(absl::StrCat("\"", key, "\" = ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  *out = static_cast<float>(v);
  return absl::OkStatus();
}

absl::Status GetTokenIds(const Json& j, const char* key, std::vector<int32_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  auto add = [&](const Json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return Invalid(absl::StrCat("\"", key, "\" must hold non-negative token ids"));
    }
    out->push_back(static_cast<int32_t>(v.get<int64_t>()));
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const Json& v : *it) RETURN_IF_ERROR(add(v));
    return absl::OkStatus();
  }
  return add(*it);
}

absl::Status ParseRopeScaling(const Json& j, ModelConfig* c) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Invalid("\"rope_scaling\" must be an object or null");
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = it->find(key);
    if (t != it->end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return absl::UnimplementedError(absl::StrCat("config.json: rope_scaling type \"", type,
                                                 "\" is not supported (supported: llama3)"));
  }
  Llama3RopeScaling s;
  RETURN_IF_ERROR(GetFloat(*it, "factor", true, 1.0, 1e6, &s.factor));
  RETURN_IF_ERROR(GetFloat(*it, "low_freq_factor", true, 1e-6, 1e6, &s.low_freq_factor));
  RETURN_IF_ERROR(GetFloat(*it, "high_freq_factor", true, 1e-6, 1e6, &s.high_freq_factor));
  RETURN_IF_ERROR(GetInt(*it, "original_max_position_embeddings", true, 1, int64_t{1} << 40,
                         &s.original_max_position_embeddings));
  if (!(s.high_freq_factor > s.low_freq_factor)) {
    return Invalid("rope_scaling: high_freq_factor must exceed low_freq_factor");
  }
  c->has_llama3_scaling = true;
  c->llama3_scaling = s;
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseJson(const Json& j) {
  if (!j.is_object()) return Invalid("top level must be an object");
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch != j.end() && arch->is_array() && !arch->empty() && (*arch)[0].is_string()) {
    c.architecture = (*arch)[0].get<std::string>();
  } else {
    auto type = j.find("model_type");
    if (type == j.end() || !type->is_string()) {
      return Invalid("neither \"architectures\" nor \"model_type\" is given");
    }
    const std::string t = type->get<std::string>();
    c.architecture = t == "mistral" ? "MistralForCausalLM" : t == "llama" ? "LlamaForCausalLM" : t;
  }
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM") {
    return absl::UnimplementedError(
        absl::StrCat("config.json: architecture \"", c.architecture,
                     "\" is not supported (supported: LlamaForCausalLM, MistralForCausalLM)"));
  }
  constexpr int64_t kMaxDim = 1 << 20;
  int64_t v = 0;
  RETURN_IF_ERROR(GetInt(j, "hidden_size", true, 1, kMaxDim, &v));
  c.hidden_size = static_cast<int32_t>(v);
  RETURN_IF_ERROR(GetInt(j, "intermediate_size", true, 1, kMaxDim, &v));
  c.intermediate_size = static_cast<int32_t>(v);
  RETURN_IF_ERROR(GetInt(j, "num_hidden_layers", true, 1, 4096, &v));
  c.num_layers = static_cast<int32_t>(v);
  RETURN_IF_ERROR(GetInt(j, "num_attention_heads", true, 1, 4096, &v));
  c.num_heads = static_cast<int32_t>(v);
  v = c.num_heads;
  RETURN_IF_ERROR(GetInt(j, "num_key_value_heads", false, 1, 4096, &v));
  c.num_kv_heads = static_cast<int32_t>(v);
  if (c.num_heads % c.num_kv_heads != 0) {
    return Invalid(absl::StrCat("num_attention_heads (", c.num_heads,
                                ") is not a multiple of num_key_value_heads (", c.num_kv_heads,
                                ")"));
  }
  if (c.hidden_size % c.num_heads != 0 && !j.contains("head_dim")) {
    return Invalid("hidden_size is not a multiple of num_attention_heads and no head_dim given");
  }
  v = c.hidden_size / c.num_heads;
  RETURN_IF_ERROR(GetInt(j, "head_dim", false, 2, 65536, &v));
  c.head_dim = static_cast<int32_t>(v);
  if (c.head_dim % 2 != 0) return Invalid("head_dim must be even (RoPE rotates pairs)");
  RETURN_IF_ERROR(GetInt(j, "vocab_size", true, 1, int64_t{1} << 30, &v));
  c.vocab_size = static_cast<int32_t>(v);
  RETURN_IF_ERROR(GetFloat(j, "rms_norm_eps", false, 0.0, 1.0, &c.rms_norm_eps));
  RETURN_IF_ERROR(GetFloat(j, "rope_theta", false, 1.0, 1e12, &c.rope_theta));
  RETURN_IF_ERROR(
      GetInt(j, "max_position_embeddings", false, 1, int64_t{1} << 40, &c.max_position_embeddings));
  RETURN_IF_ERROR(ParseRopeScaling(j, &c));
  auto tie = j.find("tie_word_embeddings");
  if (tie != j.end() && !tie->is_null()) {
    if (!tie->is_boolean()) return Invalid("\"tie_word_embeddings\" must be a boolean");
    c.tie_word_embeddings = tie->get<bool>();
  }
  auto window = j.find("sliding_window");
  if (window != j.end() && !window->is_null()) {
    const bool covers_all = window->is_number_integer() && c.max_position_embeddings > 0 &&
                            window->get<int64_t>() >= c.max_position_embeddings;
    if (!covers_all) {
      return absl::UnimplementedError(
          "config.json: sliding_window attention (Mistral v0.1) is not supported; "
          "Mistral v0.2 and later set \"sliding_window\": null");
    }
  }
  RETURN_IF_ERROR(GetTokenIds(j, "bos_token_id", &c.bos_token_ids));
  RETURN_IF_ERROR(GetTokenIds(j, "eos_token_id", &c.eos_token_ids));
  auto dtype = j.find("torch_dtype");
  if (dtype != j.end() && dtype->is_string()) c.torch_dtype = dtype->get<std::string>();
  return c;
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t d = hidden_size;
  const int64_t per_layer = 2 * d + d * q_dim() + 2 * d * kv_dim() + q_dim() * d +
                            3 * d * static_cast<int64_t>(intermediate_size);
  const int64_t embed = static_cast<int64_t>(vocab_size) * d;
  return embed * (tie_word_embeddings ? 1 : 2) + per_layer * num_layers + d;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  Json j = Json::parse(json_text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("not valid JSON");
  try {
    return ParseJson(j);
  } catch (const Json::exception& e) {  // Type errors inside nested values.
    return Invalid(e.what());
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseModelConfig(ss.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(model_dir, ": ", config.status().message()));
  }
  return config;
}

}  // namespace qllm::model
