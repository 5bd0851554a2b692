// Rotary position embedding in the Hugging Face ("rotate half") layout: within each head of
// size D, element i pairs with element i + D/2 and the pair rotates by pos * inv_freq[i].
#ifndef QLLM_CUDA_ROPE_H_
#define QLLM_CUDA_ROPE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Frequencies of a model's RoPE.
struct RopeConfig {
  int32_t head_dim = 0;
  double theta = 10000.0;
  // Llama-3.1 "llama3" scaling; factor <= 0 disables it.
  double llama3_factor = 0.0;
  double llama3_low_freq_factor = 1.0;
  double llama3_high_freq_factor = 4.0;
  double llama3_original_max_position = 8192.0;
};

// Returns inv_freq[head_dim / 2]: theta^(-2i/D), adjusted by llama3 scaling when enabled.
std::vector<double> RopeInverseFrequencies(const RopeConfig& config);

struct RopeParams {
  float* x = nullptr;                  // [tokens, row_stride], rotated in place, required
  const int64_t* positions = nullptr;  // [tokens] absolute positions, required
  const double* inv_freq = nullptr;    // [head_dim / 2], required
  int64_t tokens = 0;
  int64_t heads = 0;       // Heads rotated per token, stored consecutively from x's row start.
  int64_t head_dim = 0;    // Even.
  int64_t row_stride = 0;  // Elements between tokens, >= heads * head_dim.

  absl::Status Validate() const;
};

// CPU backend and reference. Angles are computed in double precision.
absl::Status RopeRef(const RopeParams& p);
// CUDA twin; x, positions and inv_freq are device pointers.
absl::Status LaunchRope(const RopeParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_ROPE_H_
