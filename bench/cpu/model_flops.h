// FLOP accounting for the CPU benchmark: the GEMM shapes of one transformer forward pass and
// the useful FLOPs of prefill and decode, counted the way the benchmark reports them.
//
// Counting rules (the "honest" count, independent of how the engine computes):
//   - a matmul with a [n, k] weight costs 2 * n * k FLOPs per token (row) it is applied to;
//   - causal attention at a token that sees c keys (itself included) costs 4 * c * q_dim FLOPs
//     per layer: 2 * c * head_dim for the scores and as much for the weighted sum, per head.
//     Masked-out keys are not counted even when a backend computes them.
//   - norms, RoPE, SwiGLU, residual adds, the embedding lookup and softmax are not counted.
#ifndef QLLM_BENCH_CPU_MODEL_FLOPS_H_
#define QLLM_BENCH_CPU_MODEL_FLOPS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace qllm::bench {

// One weight matmul of the forward pass: y[m, n] = x[m, k] * w[n, k]^T.
struct GemmShape {
  std::string name;       // "qkv", "o", "gate_up", "down" or "lm_head".
  int64_t n = 0;          // Output features.
  int64_t k = 0;          // Input features.
  int64_t per_token = 0;  // Times the matmul runs per token through the whole model:
                          // num_layers for layer matmuls, 1 for the head.
  bool is_head = false;   // True for the LM head (applied only to the rows whose logits
                          // are wanted).

  // FLOPs of the matmul for m rows: 2 * m * n * k.
  double Flops(int64_t m) const { return 2.0 * static_cast<double>(m) * n * k; }
};

// The weight matmuls of `config` in execution order: fused qkv, o, fused gate/up, down (each
// per_token = num_layers) and the LM head (per_token = 1).
std::vector<GemmShape> ModelGemmShapes(const model::ModelConfig& config);

// Parameters that take part in matmuls: the layer projections and, if `with_head`, the head.
// The embedding table and the norm weights are not counted.
int64_t MatmulParameters(const model::ModelConfig& config, bool with_head);

// Attention FLOPs of the tokens at positions [begin, end) of one sequence, all layers:
// sum over p of 4 * (p + 1) * q_dim * num_layers.
double AttentionFlops(const model::ModelConfig& config, int64_t begin, int64_t end);

// Useful FLOPs of running tokens [begin, end) through the model, with logits for
// `logit_rows` of them (1 for prefill or decode of the last token, end - begin for all).
// REQUIRES: 0 <= begin <= end, 0 <= logit_rows <= end - begin.
double ForwardFlops(const model::ModelConfig& config, int64_t begin, int64_t end,
                    int64_t logit_rows);

}  // namespace qllm::bench

#endif  // QLLM_BENCH_CPU_MODEL_FLOPS_H_
