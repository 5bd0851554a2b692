// qllm_cpu_bench: CPU prefill and decode throughput of the engine on a checkpoint, with the
// OpenBLAS sgemm rate at the model's own GEMM shapes measured in the same run as the baseline.
//
//   OMP_NUM_THREADS=16 qllm_cpu_bench --model=DIR [--prompt_len=2048 --chunk=512 --decode=64]
//
// After a short warm-up, per repetition (a fresh session each time):
//   prefill      Prefill(prompt, chunk), logits of the last token only (the serving path);
//   decode       --decode greedy steps of one token after that prefill;
//   prefill_all  the prompt again, chunk by chunk, with logits of every token (the work the
//                PyTorch reference's bench_ref.py does), unless --prefill_all_logits=false.
// Each number is the best (shortest) repetition. FLOPs are counted as in model_flops.h.
// bench/cpu/run_cpu_bench.sh runs this and the PyTorch reference and prints the ratios.
#include <omp.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/cpu/model_flops.h"
#include "common/status_macros.h"
#include "common/stopwatch.h"
#include "coordinator/local_pipeline.h"
#include "cuda/gemm.h"
#include "nlohmann/json.hpp"
#include "worker/model_shard.h"

ABSL_FLAG(std::string, model, "", "Checkpoint directory (config.json + safetensors). Required.");
ABSL_FLAG(int64_t, prompt_len, 2048, "Prompt tokens prefilled per repetition.");
ABSL_FLAG(int64_t, chunk, 512, "Prefill chunk (tokens per forward call); the sgemm baseline's m.");
ABSL_FLAG(int64_t, decode, 64, "Decode steps (one token each) after the prefill.");
ABSL_FLAG(int, warmup, 1, "Short warm-up runs (one chunk, <= 4 decode steps), not measured.");
ABSL_FLAG(int, repeats, 3, "Measured repetitions; the best one is reported.");
ABSL_FLAG(bool, prefill_all_logits, true,
          "Also time a prefill that computes the logits of every token (the reference's work).");
ABSL_FLAG(double, sgemm_seconds, 0.3, "Minimum time spent measuring each sgemm shape.");
ABSL_FLAG(uint32_t, seed, 0, "Seed of the random prompt.");
ABSL_FLAG(std::string, json_out, "", "Also write the results as JSON to this file.");

namespace qllm::bench {
namespace {

using Json = nlohmann::ordered_json;

// Wall-clock and process CPU seconds (all threads) of one phase; infinity when not run. On a
// loaded machine the CPU time of a one-thread run is the steadier measure of the work done.
struct Phase {
  double wall = std::numeric_limits<double>::infinity();
  double cpu = std::numeric_limits<double>::infinity();

  // Keeps the minimum of each measure.
  void Min(const Phase& other) {
    wall = std::min(wall, other.wall);
    cpu = std::min(cpu, other.cpu);
  }
};

class PhaseTimer {
 public:
  Phase Elapsed() const {
    return {.wall = watch_.Seconds(),
            .cpu = static_cast<double>(std::clock() - cpu_start_) / CLOCKS_PER_SEC};
  }

 private:
  Stopwatch watch_;
  std::clock_t cpu_start_ = std::clock();
};

// Best-of-batches rate of y[m, n] = x[m, k] * w[n, k]^T through the engine's own GEMM entry
// point (OpenBLAS sgemm, row-major, w transposed), in GFLOP per wall and per CPU second.
struct SgemmRate {
  double per_s = 0.0;
  double per_cpu_s = 0.0;
};

absl::StatusOr<SgemmRate> MeasureSgemm(int64_t m, int64_t n, int64_t k, double min_seconds) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(m * k), w(n * k), y(m * n);
  for (float& v : x) v = dist(rng);
  for (float& v : w) v = dist(rng);
  RETURN_IF_ERROR(cuda::MatMulNT(x.data(), w.data(), y.data(), m, n, k));  // Warm-up.
  const double gflop = 2.0 * m * n * k / 1e9;
  SgemmRate best;
  Stopwatch total;
  // At least three batches of at least a third of the budget each; keep the fastest.
  for (int batch = 0; batch < 3 || total.Seconds() < min_seconds; ++batch) {
    const PhaseTimer timer;
    int64_t iters = 0;
    Phase t;
    do {
      RETURN_IF_ERROR(cuda::MatMulNT(x.data(), w.data(), y.data(), m, n, k));
      ++iters;
      t = timer.Elapsed();
    } while (t.wall < min_seconds / 3);
    best.per_s = std::max(best.per_s, gflop * iters / t.wall);
    best.per_cpu_s = std::max(best.per_cpu_s, gflop * iters / t.cpu);
  }
  return best;
}

int32_t ArgMax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

struct Timings {
  Phase prefill, decode, prefill_all;
};

// One repetition over `prompt`: fills the time of each phase in `t`.
absl::Status RunOnce(const coordinator::LocalPipeline& pipeline, std::span<const int32_t> prompt,
                     int64_t chunk, int64_t decode, bool prefill_all, Timings* t) {
  std::vector<float> logits;
  {
    auto session = pipeline.NewSession();
    const PhaseTimer prefill_timer;
    RETURN_IF_ERROR(pipeline.Prefill(session.get(), prompt, chunk, /*all_logits=*/false, &logits));
    t->prefill = prefill_timer.Elapsed();
    const PhaseTimer decode_timer;
    int32_t token = ArgMax(logits);
    for (int64_t i = 0; i < decode; ++i) {
      const int32_t input[1] = {token};
      RETURN_IF_ERROR(pipeline.RunChunk(session.get(), input, /*all_logits=*/false, &logits));
      token = ArgMax(logits);
    }
    if (decode > 0) t->decode = decode_timer.Elapsed();
  }
  if (prefill_all) {
    // Chunk by chunk, keeping only the current chunk's logits, as bench_ref.py does.
    auto session = pipeline.NewSession();
    const PhaseTimer timer;
    for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
      const size_t len = std::min<size_t>(chunk, prompt.size() - begin);
      RETURN_IF_ERROR(pipeline.RunChunk(session.get(), prompt.subspan(begin, len),
                                        /*all_logits=*/true, &logits));
    }
    t->prefill_all = timer.Elapsed();
  }
  return absl::OkStatus();
}

// Harmonic mix of the per-shape sgemm rates weighted by each shape's FLOPs per token: the
// rate at which the model's matmuls would run if each ran at its measured sgemm rate.
// `head_rows_per_token` is the fraction of tokens whose logits are computed.
double MixRate(const std::vector<GemmShape>& shapes, const std::vector<double>& rates,
               double head_rows_per_token) {
  double flops = 0.0, seconds = 0.0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const double f =
        shapes[i].Flops(1) * (shapes[i].is_head ? head_rows_per_token : shapes[i].per_token);
    flops += f;
    seconds += f / rates[i];
  }
  return flops / seconds;
}

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  const int64_t prompt_len = absl::GetFlag(FLAGS_prompt_len);
  const int64_t chunk = absl::GetFlag(FLAGS_chunk);
  const int64_t decode = absl::GetFlag(FLAGS_decode);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const bool prefill_all = absl::GetFlag(FLAGS_prefill_all_logits);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (prompt_len < 1 || chunk < 1 || decode < 0 || warmup < 0 || repeats < 1) {
    return absl::InvalidArgumentError("need prompt_len, chunk, repeats >= 1; decode, warmup >= 0");
  }

  Stopwatch load_watch;
  ASSIGN_OR_RETURN(std::unique_ptr<worker::ModelShard> shard, worker::ModelShard::Load(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<coordinator::LocalPipeline> pipeline,
                   coordinator::LocalPipeline::Create({shard.get()}));
  const model::ModelConfig& c = shard->config();
  const int threads = omp_get_max_threads();
  const int64_t matmul_params = MatmulParameters(c, /*with_head=*/true);
  // The FLOP accounting must see every parameter: the rest is the embedding (unless tied, when
  // it is the head) and the norm weights.
  const int64_t d = c.hidden_size;
  const int64_t rest =
      (c.tie_word_embeddings ? 0 : int64_t{c.vocab_size} * d) + (2 * int64_t{c.num_layers} + 1) * d;
  if (matmul_params + rest != c.NumParameters()) {
    return absl::InternalError(absl::StrCat("FLOP accounting covers ", matmul_params + rest,
                                            " parameters, the model has ", c.NumParameters()));
  }
  std::cout << absl::StrFormat(
      "qllm_cpu_bench: %s, %.1fM parameters (%.1fM in matmuls), %d layers, hidden %d, "
      "heads %d/%d, ffn %d, vocab %d; loaded in %.1f s; %d OpenMP threads\n"
      "prompt %d tokens in chunks of %d, decode %d tokens, warm-up %d, best of %d\n",
      dir, c.NumParameters() / 1e6, matmul_params / 1e6, c.num_layers, c.hidden_size, c.num_heads,
      c.num_kv_heads, c.intermediate_size, c.vocab_size, load_watch.Seconds(), threads, prompt_len,
      chunk, decode, warmup, repeats);

  // Baseline: sgemm at m = chunk for each of the model's weight shapes.
  const std::vector<GemmShape> shapes = ModelGemmShapes(c);
  std::vector<double> rates, cpu_rates;
  Json sgemm = Json::array();
  std::cout << "\nsgemm (OpenBLAS, m = chunk, y = x w^T):\n";
  for (const GemmShape& g : shapes) {
    ASSIGN_OR_RETURN(SgemmRate rate,
                     MeasureSgemm(chunk, g.n, g.k, absl::GetFlag(FLAGS_sgemm_seconds)));
    rates.push_back(rate.per_s);
    cpu_rates.push_back(rate.per_cpu_s);
    std::cout << absl::StrFormat("  %-8s m=%-5d n=%-6d k=%-5d x%-3d %8.1f GFLOP/s (%.1f per CPU-s)",
                                 g.name, chunk, g.n, g.k, g.per_token, rate.per_s, rate.per_cpu_s)
              << std::endl;
    sgemm.push_back({{"name", g.name},
                     {"m", chunk},
                     {"n", g.n},
                     {"k", g.k},
                     {"per_token", g.per_token},
                     {"gflop_per_s", rate.per_s},
                     {"gflop_per_cpu_s", rate.per_cpu_s}});
  }
  const double head_last = 1.0 / static_cast<double>(prompt_len);
  const double mix_last = MixRate(shapes, rates, head_last);
  const double mix_all = MixRate(shapes, rates, 1.0);
  std::cout << absl::StrFormat(
      "  model FLOP mix: %.1f GFLOP/s (last-token logits), %.1f GFLOP/s (all logits)\n", mix_last,
      mix_all);

  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  std::uniform_int_distribution<int32_t> dist(0, c.vocab_size - 1);
  std::vector<int32_t> prompt(prompt_len);
  for (int32_t& t : prompt) t = dist(rng);

  // Warm-up: one chunk and a few decode steps (thread pool, first touch of the scratch
  // buffers), a fraction of the cost of a measured repetition.
  for (int r = 0; r < warmup; ++r) {
    Timings run;
    const std::span<const int32_t> first(prompt.data(), std::min(prompt_len, chunk));
    RETURN_IF_ERROR(
        RunOnce(*pipeline, first, chunk, std::min<int64_t>(decode, 4), prefill_all, &run));
  }
  Timings best;
  for (int r = 0; r < repeats; ++r) {
    Timings run;
    RETURN_IF_ERROR(RunOnce(*pipeline, prompt, chunk, decode, prefill_all, &run));
    std::cout << absl::StrFormat("repetition %d: prefill %.3f s (CPU %.3f s)", r, run.prefill.wall,
                                 run.prefill.cpu);
    if (decode > 0) {
      std::cout << absl::StrFormat(", decode %.3f s (CPU %.3f s)", run.decode.wall, run.decode.cpu);
    }
    if (prefill_all) {
      std::cout << absl::StrFormat(", prefill (all logits) %.3f s (CPU %.3f s)",
                                   run.prefill_all.wall, run.prefill_all.cpu);
    }
    std::cout << std::endl;  // Flushed: progress of a long run.
    best.prefill.Min(run.prefill);
    best.decode.Min(run.decode);
    best.prefill_all.Min(run.prefill_all);
  }

  Json out;
  out["model"] = dir;
  out["threads"] = threads;
  out["prompt_len"] = prompt_len;
  out["chunk"] = chunk;
  out["decode_tokens"] = decode;
  out["repeats"] = repeats;
  out["parameters"] = c.NumParameters();
  out["matmul_parameters"] = matmul_params;
  out["sgemm"] = {{"shapes", sgemm},
                  {"mix_gflop_per_s", mix_last},
                  {"mix_all_logits_gflop_per_s", mix_all},
                  {"mix_gflop_per_cpu_s", MixRate(shapes, cpu_rates, head_last)},
                  {"mix_all_logits_gflop_per_cpu_s", MixRate(shapes, cpu_rates, 1.0)}};
  std::cout << "\nengine (best of " << repeats << "):\n";
  auto report = [&](const char* name, const Phase& t, int64_t tokens, double flops, double mix) {
    const double gflops = flops / t.wall / 1e9;
    Json j = {{"seconds", t.wall},
              {"cpu_seconds", t.cpu},
              {"tokens_per_s", tokens / t.wall},
              {"tokens_per_cpu_s", tokens / t.cpu},
              {"gflop", flops / 1e9},
              {"gflop_per_s", gflops}};
    std::string line =
        absl::StrFormat("  %-12s %8.1f tok/s %8.1f GFLOP/s", name, tokens / t.wall, gflops);
    if (mix > 0) {
      j["fraction_of_sgemm"] = gflops / mix;
      line += absl::StrFormat("  %.2f of the sgemm mix", gflops / mix);
    }
    line += absl::StrFormat("  (%.1f tok per CPU-s)", tokens / t.cpu);
    std::cout << line << "\n";
    out[name] = j;
  };
  report("prefill", best.prefill, prompt_len, ForwardFlops(c, 0, prompt_len, 1), mix_last);
  if (prefill_all) {
    report("prefill_all", best.prefill_all, prompt_len, ForwardFlops(c, 0, prompt_len, prompt_len),
           mix_all);
  }
  if (decode > 0) {
    report("decode", best.decode, decode, ForwardFlops(c, prompt_len, prompt_len + decode, decode),
           0.0);
    // Decode streams every matmul weight once per token (fp32).
    const double gbps = 4.0 * matmul_params * decode / best.decode.wall / 1e9;
    out["decode"]["weight_gb_per_s"] = gbps;
    std::cout << absl::StrFormat("  decode streams %.2f GB of weights per token: %.1f GB/s\n",
                                 4.0 * matmul_params / 1e9, gbps);
  }
  const std::string json_path = absl::GetFlag(FLAGS_json_out);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << out.dump(2) << "\n";
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", json_path));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace qllm::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = qllm::bench::Run();
  if (!status.ok()) {
    std::cerr << "qllm_cpu_bench: " << status << "\n";
    return 1;
  }
  return 0;
}
