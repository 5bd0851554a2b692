// Writes safetensors files and small random Llama checkpoints for unit tests. (The reference
// suite uses the independent Python generator in tools/reference/ instead.)
#ifndef QLLM_TESTS_TESTUTIL_CHECKPOINT_WRITER_H_
#define QLLM_TESTS_TESTUTIL_CHECKPOINT_WRITER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qllm::testing {

struct RawTensor {
  std::string dtype;  // "F32", "F16", "BF16", "I32", or anything else for negative tests.
  std::vector<int64_t> shape;
  std::string bytes;  // Raw little-endian data.
};

// Encodes fp32 values as `dtype` ("F32", "F16" or "BF16").
RawTensor FloatTensor(const std::vector<float>& values, std::vector<int64_t> shape,
                      const std::string& dtype = "F32");

// Serializes tensors in name order (the header JSON is padded to 8 bytes).
std::string SerializeSafetensors(const std::map<std::string, RawTensor>& tensors);
void WriteFile(const std::string& path, const std::string& bytes);

struct TinyModelSpec {
  int hidden = 32;
  int intermediate = 48;
  int layers = 3;
  int heads = 4;
  int kv_heads = 2;
  int vocab = 64;
  bool tied = false;
  std::string dtype = "F32";
  // >1 writes shards plus model.safetensors.index.json.
  int shards = 1;
  uint32_t seed = 7;
};

// The config.json text for `spec`.
std::string TinyConfigJson(const TinyModelSpec& spec);
// The tensors of a random model for `spec` (HF names).
std::map<std::string, RawTensor> TinyModelTensors(const TinyModelSpec& spec);
// Writes config.json and the weights for `spec` into `dir` (which must exist).
void WriteTinyModel(const std::string& dir, const TinyModelSpec& spec);

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_CHECKPOINT_WRITER_H_
