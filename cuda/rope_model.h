// The RoPE op's parameters (cuda/rope.h) of a model config: head_dim, theta and, when the
// checkpoint has it, the llama3 frequency scaling. One place for the CPU engine
// (worker/model_shard.cc) and the device forward (cuda/device_model.cc). Header-only.
#ifndef QLLM_CUDA_ROPE_MODEL_H_
#define QLLM_CUDA_ROPE_MODEL_H_

#include "cuda/rope.h"
#include "model/config.h"

namespace qllm::cuda {

inline RopeConfig RopeConfigOf(const model::ModelConfig& c) {
  RopeConfig r;
  r.head_dim = c.head_dim;
  r.theta = c.rope_theta;
  if (c.has_llama3_scaling) {
    r.llama3_factor = c.llama3_scaling.factor;
    r.llama3_low_freq_factor = c.llama3_scaling.low_freq_factor;
    r.llama3_high_freq_factor = c.llama3_scaling.high_freq_factor;
    r.llama3_original_max_position =
        static_cast<double>(c.llama3_scaling.original_max_position_embeddings);
  }
  return r;
}

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_ROPE_MODEL_H_
