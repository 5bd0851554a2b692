#include "tests/testutil/checkpoint_writer.h"

#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/float16.h"

namespace qllm::testing {

RawTensor FloatTensor(const std::vector<float>& values, std::vector<int64_t> shape,
                      const std::string& dtype) {
  RawTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (dtype == "F32") {
    t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return t;
  }
  t.bytes.resize(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = dtype == "BF16" ? FloatToBf16(values[i]) : FloatToFp16(values[i]);
    std::memcpy(&t.bytes[2 * i], &h, 2);
  }
  return t;
}

std::string SerializeSafetensors(const std::map<std::string, RawTensor>& tensors) {
  std::string header = "{";
  std::string data;
  bool first = true;
  for (const auto& [name, t] : tensors) {
    if (!first) header += ",";
    first = false;
    absl::StrAppend(&header, "\"", name, "\":{\"dtype\":\"", t.dtype, "\",\"shape\":[",
                    absl::StrJoin(t.shape, ","), "],\"data_offsets\":[", data.size(), ",",
                    data.size() + t.bytes.size(), "]}");
    data += t.bytes;
  }
  header += ",\"__metadata__\":{\"format\":\"pt\"}}";
  while (header.size() % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + data;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string TinyConfigJson(const TinyModelSpec& s) {
  return absl::StrCat(
      "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": ",
      s.hidden, ", \"intermediate_size\": ", s.intermediate, ", \"num_hidden_layers\": ", s.layers,
      ", \"num_attention_heads\": ", s.heads, ", \"num_key_value_heads\": ", s.kv_heads,
      ", \"vocab_size\": ", s.vocab,
      ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 4096, "
      "\"bos_token_id\": 1, \"eos_token_id\": 2, \"tie_word_embeddings\": ",
      s.tied ? "true" : "false", "}");
}

std::map<std::string, RawTensor> TinyModelTensors(const TinyModelSpec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  auto matrix = [&](int64_t rows, int64_t cols) {
    std::vector<float> v(rows * cols);
    for (float& x : v) x = normal(rng);
    return FloatTensor(v, {rows, cols}, s.dtype);
  };
  auto norm = [&](int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 1.0f + 0.1f * normal(rng);
    return FloatTensor(v, {n}, s.dtype);
  };
  const int head_dim = s.hidden / s.heads;
  std::map<std::string, RawTensor> t;
  t["model.embed_tokens.weight"] = matrix(s.vocab, s.hidden);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    t[p + "input_layernorm.weight"] = norm(s.hidden);
    t[p + "post_attention_layernorm.weight"] = norm(s.hidden);
    t[p + "self_attn.q_proj.weight"] = matrix(s.heads * head_dim, s.hidden);
    t[p + "self_attn.k_proj.weight"] = matrix(s.kv_heads * head_dim, s.hidden);
    t[p + "self_attn.v_proj.weight"] = matrix(s.kv_heads * head_dim, s.hidden);
    t[p + "self_attn.o_proj.weight"] = matrix(s.hidden, s.heads * head_dim);
    t[p + "mlp.gate_proj.weight"] = matrix(s.intermediate, s.hidden);
    t[p + "mlp.up_proj.weight"] = matrix(s.intermediate, s.hidden);
    t[p + "mlp.down_proj.weight"] = matrix(s.hidden, s.intermediate);
  }
  t["model.norm.weight"] = norm(s.hidden);
  if (!s.tied) t["lm_head.weight"] = matrix(s.vocab, s.hidden);
  return t;
}

void WriteTinyModel(const std::string& dir, const TinyModelSpec& spec) {
  WriteFile(dir + "/config.json", TinyConfigJson(spec));
  const auto tensors = TinyModelTensors(spec);
  if (spec.shards <= 1) {
    WriteFile(dir + "/model.safetensors", SerializeSafetensors(tensors));
    return;
  }
  std::vector<std::map<std::string, RawTensor>> parts(spec.shards);
  std::string weight_map;
  int i = 0;
  for (const auto& [name, t] : tensors) {
    const int shard = i++ % spec.shards;
    parts[shard][name] = t;
    const std::string file =
        absl::StrCat("model-0000", shard + 1, "-of-0000", spec.shards, ".safetensors");
    absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",", "\"", name, "\":\"", file, "\"");
  }
  for (int s = 0; s < spec.shards; ++s) {
    WriteFile(absl::StrCat(dir, "/model-0000", s + 1, "-of-0000", spec.shards, ".safetensors"),
              SerializeSafetensors(parts[s]));
  }
  WriteFile(dir + "/model.safetensors.index.json",
            absl::StrCat("{\"metadata\":{},\"weight_map\":{", weight_map, "}}"));
}

}  // namespace qllm::testing
