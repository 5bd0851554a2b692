// End-to-end device benchmark at Llama-3-8B shapes (hidden 4096, intermediate 14336, 32 layers,
// 32 heads, 8 KV heads, head_dim 128, vocab 128256, rope_theta 5e5 with llama3 scaling) with
// random weights: DeviceModel (cuda/device_model.h) with the Q-LLM context memory in every layer
// in the paper's "2K" configuration (n_init 128, n_local 1024, block_size 128, topk 8,
// repr_topk 4, exc_block_size 512, question_weight 4; a 32-token question at the start):
//   - prefill tokens/s of one document of each length (default 32K and 128K tokens), timed
//     from the first token to the last token's logits on the host;
//   - decode ms/token after the longest prefill (one token per Forward, logits on the host).
// Weights are a repeated random tile (values do not change the timings); building them takes
// ~30 GB of host memory and the device needs ~55 GB at 128K (weights 16 GB in bf16, block pools
// ~1.1 GB per layer). Exits 0 with a message when no device is usable, 1 when a step fails.
//
// --tiered keeps the blocks in host memory (worker::InMemoryBlockStorage) with the paper's
// max_cached_block = 32 per layer on the device (the tiered mode of
// cuda/layer_memory_engine.h): the cost of the host tier, and the configuration for documents
// whose blocks do not fit the device. It then runs the first length's prefill four more times,
// alternating the loads not overlapped (DeviceModel::SetOverlapLoads(false): the host waits
// for each layer's selection and loads before any attention) and overlapped, and prints the
// overlap's speedup (best of two each).
//
//   device_model_bench [--layers=N] [--lengths=32768,131072] [--decode=N] [--tiered]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "cuda/device_model.h"
#include "model/weights.h"
#include "worker/block_storage.h"

namespace qllm::cuda {
namespace {

struct Args {
  int layers = 32;
  std::vector<int64_t> lengths = {32768, 131072};
  int decode = 32;
  bool tiered = false;
};

model::ModelConfig Llama3_8B(int layers) {
  model::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = layers;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 500000.0f;
  c.has_llama3_scaling = true;
  c.max_position_embeddings = 131072;
  c.torch_dtype = "bfloat16";
  return c;
}

// n values cycling through `tile` from a per-tensor offset.
std::vector<float> Tiled(const std::vector<float>& tile, size_t n, size_t offset) {
  std::vector<float> v(n);
  size_t done = 0, at = offset % tile.size();
  while (done < n) {
    const size_t len = std::min(n - done, tile.size() - at);
    std::memcpy(v.data() + done, tile.data() + at, len * sizeof(float));
    done += len;
    at = 0;
  }
  return v;
}

model::ModelWeights RandomWeights(const model::ModelConfig& c) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  std::vector<float> tile((1 << 20) + 7);
  for (float& x : tile) x = u(rng);
  const size_t hd = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.intermediate_size;
  model::ModelWeights w;
  w.config = c;
  w.layer_begin = 0;
  w.layer_end = c.num_layers;
  size_t offset = 0;
  auto next = [&](size_t n) {
    offset += 4099;
    return Tiled(tile, n, offset);
  };
  w.embedding = next(c.vocab_size * hd);
  for (int l = 0; l < c.num_layers; ++l) {
    model::LayerWeights lw;
    lw.attn_norm.assign(hd, 1.0f);
    lw.wqkv = next((qd + 2 * kvd) * hd);
    lw.wo = next(hd * qd);
    lw.ffn_norm.assign(hd, 1.0f);
    lw.w13 = next(2 * f * hd);
    lw.w2 = next(hd * f);
    w.layers.push_back(std::move(lw));
  }
  w.final_norm.assign(hd, 1.0f);
  w.lm_head = next(c.vocab_size * hd);
  return w;
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

absl::Status Run(const Args& args) {
  const int64_t longest = *std::max_element(args.lengths.begin(), args.lengths.end());
  worker::MemoryConfig memory;
  memory.mode = worker::AttentionMode::kQllm;
  memory.n_init = 128;
  memory.n_local = 1024;
  memory.block_size = 128;
  memory.topk = 8;
  memory.repr_topk = 4;
  memory.exc_block_size = 512;
  memory.question_weight = 4.0f;
  memory.max_cached_block = 32;

  const model::ModelConfig config = Llama3_8B(args.layers);
  auto t0 = std::chrono::steady_clock::now();
  model::ModelWeights weights = RandomWeights(config);
  std::printf("random weights: %d layers, %.2f B parameters, %.1f s\n", args.layers,
              config.NumParameters() * 1e-9, Seconds(t0));
  t0 = std::chrono::steady_clock::now();
  DeviceModelOptions options;
  options.max_chunk = 512;
  options.memory = memory;
  options.question = worker::QuestionSpan{1, 33};
  options.max_blocks = (longest + args.decode) / memory.block_size + 8;
  worker::InMemoryBlockStorage tier;
  if (args.tiered) {
    options.block_storage = &tier;
    options.session = 1;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<DeviceModel> dm, DeviceModel::Create(weights, options));
  weights = model::ModelWeights();
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  std::printf("upload: %.1f s; context memory %.1f GB; device memory used %.1f of %.1f GB\n",
              Seconds(t0), dm->MemoryDeviceBytes() * 1e-9, (total_b - free_b) * 1e-9,
              total_b * 1e-9);

  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> tok(0, config.vocab_size - 1);
  std::vector<int32_t> ids(longest + args.decode);
  for (int32_t& id : ids) id = tok(rng);
  std::vector<float> logits(config.vocab_size);

  // Warm-up: cuBLASLt heuristics, first launches, a few blocks.
  RETURN_IF_ERROR(dm->Forward(ids.data(), 4096, 0, logits.data(), {.last_only = true}));

  std::vector<std::string> table;
  for (int64_t len : args.lengths) {
    t0 = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(
        dm->Forward(ids.data(), static_cast<int>(len), 0, logits.data(), {.last_only = true}));
    const double s = Seconds(t0);
    std::printf("prefill %lld tokens: %.2f s, %.0f tokens/s\n", static_cast<long long>(len), s,
                len / s);
    table.push_back(absl::StrFormat(
        "  %-34s %10.0f tokens/s  (%.2f s)",
        absl::StrFormat("prefill %lldK", static_cast<long long>(len / 1024)), len / s, s));
    if (len != longest) continue;
    // Greedy decoding with the token sampled on the device: each step feeds back the token
    // the previous one produced, and only that token comes to the host.
    std::vector<double> ms;
    const DeviceSampling greedy;
    int32_t token = ids[len];
    for (int i = 0; i < args.decode; ++i) {
      t0 = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(dm->Forward(&token, 1, static_cast<int>(len + i), nullptr,
                                  {.sample = &greedy, .sample_token = &token}));
      ms.push_back(Seconds(t0) * 1e3);
    }
    if (!ms.empty()) {
      std::vector<double> sorted = ms;
      std::sort(sorted.begin(), sorted.end());
      double mean = 0;
      for (double x : ms) mean += x / ms.size();
      table.push_back(
          absl::StrFormat("  %-34s %10.2f ms/token (median %.2f, %d tokens)",
                          absl::StrFormat("decode at %lldK", static_cast<long long>(len / 1024)),
                          mean, sorted[sorted.size() / 2], args.decode));
    }
  }
  if (args.tiered && !args.lengths.empty()) {
    // Alternating, twice each, the best of each kept: neither order profits from going first.
    const int64_t len = args.lengths.front();
    double best[2] = {1e30, 1e30};  // [not overlapped, overlapped]
    for (bool overlap : {false, true, false, true}) {
      dm->SetOverlapLoads(overlap);
      t0 = std::chrono::steady_clock::now();
      RETURN_IF_ERROR(
          dm->Forward(ids.data(), static_cast<int>(len), 0, logits.data(), {.last_only = true}));
      const double s = Seconds(t0);
      best[overlap] = std::min(best[overlap], s);
      std::printf("prefill %lld tokens, loads %s: %.2f s\n", static_cast<long long>(len),
                  overlap ? "overlapped" : "not overlapped", s);
    }
    dm->SetOverlapLoads(true);
    table.push_back(absl::StrFormat(
        "  %-34s %10.2f x      (%.2f s not overlapped, %.2f s overlapped)",
        absl::StrFormat("overlap speedup, prefill %lldK", static_cast<long long>(len / 1024)),
        best[0] / best[1], best[0], best[1]));
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("Device model benchmark: %s, Llama-3-8B shapes (%d layers), qllm 2K config, %s\n",
              prop.name, args.layers,
              args.tiered ? "blocks in host memory, 32 per layer cached on the device"
                          : "blocks on the device");
  for (const std::string& row : table) std::printf("%s\n", row.c_str());
  return absl::OkStatus();
}

bool ParseArgs(int argc, char** argv, Args* args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t n = std::strlen(name);
      return a.compare(0, n, name) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = value("--layers=")) {
      if (!absl::SimpleAtoi(v, &args->layers) || args->layers <= 0) return false;
    } else if (const char* v = value("--decode=")) {
      if (!absl::SimpleAtoi(v, &args->decode) || args->decode < 0) return false;
    } else if (a == "--tiered") {
      args->tiered = true;
    } else if (const char* v = value("--lengths=")) {
      args->lengths.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int64_t len = 0;
        if (!absl::SimpleAtoi(part, &len) || len < 4096 || len > (int64_t{1} << 30)) return false;
        args->lengths.push_back(len);
      }
      if (args->lengths.empty()) return false;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace
}  // namespace qllm::cuda

int main(int argc, char** argv) {
  // Line-buffered, so that a run killed at its time limit still shows how far it got.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  qllm::cuda::Args args;
  if (!qllm::cuda::ParseArgs(argc, argv, &args)) {
    std::fprintf(stderr,
                 "usage: device_model_bench [--layers=N] [--lengths=32768,131072] [--decode=N] "
                 "[--tiered]\n"
                 "  (lengths >= 4096 tokens)\n");
    return 2;
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    std::printf("device_model_bench: no usable CUDA device; nothing to measure\n");
    return 0;
  }
  const absl::Status s = qllm::cuda::Run(args);
  if (!s.ok()) {
    std::fprintf(stderr, "device_model_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
