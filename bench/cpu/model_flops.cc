#include "bench/cpu/model_flops.h"

namespace qllm::bench {

std::vector<GemmShape> ModelGemmShapes(const model::ModelConfig& c) {
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.intermediate_size;
  const int64_t layers = c.num_layers;
  return {
      {.name = "qkv", .n = qd + 2 * kvd, .k = d, .per_token = layers},
      {.name = "o", .n = d, .k = qd, .per_token = layers},
      {.name = "gate_up", .n = 2 * f, .k = d, .per_token = layers},
      {.name = "down", .n = d, .k = f, .per_token = layers},
      {.name = "lm_head", .n = c.vocab_size, .k = d, .per_token = 1, .is_head = true},
  };
}

int64_t MatmulParameters(const model::ModelConfig& config, bool with_head) {
  int64_t total = 0;
  for (const GemmShape& g : ModelGemmShapes(config)) {
    if (!g.is_head || with_head) total += g.n * g.k * g.per_token;
  }
  return total;
}

double AttentionFlops(const model::ModelConfig& c, int64_t begin, int64_t end) {
  // sum_{p=begin}^{end-1} (p + 1) = (end (end + 1) - begin (begin + 1)) / 2.
  const double keys =
      (static_cast<double>(end) * (end + 1) - static_cast<double>(begin) * (begin + 1)) / 2.0;
  return 4.0 * keys * c.q_dim() * c.num_layers;
}

double ForwardFlops(const model::ModelConfig& c, int64_t begin, int64_t end, int64_t logit_rows) {
  const double tokens = static_cast<double>(end - begin);
  return 2.0 * tokens * static_cast<double>(MatmulParameters(c, /*with_head=*/false)) +
         2.0 * static_cast<double>(logit_rows) * c.vocab_size * c.hidden_size +
         AttentionFlops(c, begin, end);
}

}  // namespace qllm::bench
