// Prefill cost per token and peak memory of the context memory as the document grows.
// One length per process (peak RSS is per process); bench/qllm/run_scaling_bench.sh runs the
// sweep and prints the table.
//
//   qllm_scaling_bench --mode=qllm --tokens=1048576 [--setting=1k] [--layers=2]
//
// Prints one JSON line: mode, tokens, seconds, microseconds per token (overall and over the
// last quarter of the document), peak RSS, bytes in the block storage.
#include <sys/resource.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/stopwatch.h"
#include "coordinator/local_pipeline.h"
#include "memstore/block_store.h"
#include "worker/memstore_block_storage.h"
#include "worker/model_shard.h"

ABSL_FLAG(std::string, mode, "qllm", "full, streaming, infllm or qllm");
ABSL_FLAG(int64_t, tokens, 16384, "Document length in tokens");
ABSL_FLAG(std::string, setting, "1k",
          "Memory setting of the paper: 512 (n_local 256), 1k (n_local 512), 2k (n_local 1024)");
ABSL_FLAG(int32_t, layers, 2, "Layers of the random model");
ABSL_FLAG(int32_t, hidden, 256, "Hidden size of the random model (head_dim 64)");
ABSL_FLAG(std::string, store_dir, "",
          "Keep memory blocks in the RocksDB memory store in this (fresh) directory instead of "
          "host memory");
ABSL_FLAG(int64_t, host_cache_mb, 64, "Host-memory LRU of the RocksDB store, in MiB");

namespace qllm {
namespace {

model::ModelWeights RandomModel(int32_t layers, int32_t hidden) {
  model::ModelWeights w;
  model::ModelConfig& c = w.config;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = hidden;
  c.intermediate_size = hidden * 8 / 3;
  c.num_layers = layers;
  c.head_dim = 64;
  c.num_heads = hidden / 64;
  c.num_kv_heads = std::max(1, c.num_heads / 2);
  c.vocab_size = 512;
  c.rope_theta = 500000.0f;
  w.layer_begin = 0;
  w.layer_end = layers;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  auto fill = [&](std::vector<float>* v, size_t n, float base) {
    v->resize(n);
    for (float& x : *v) x = base + normal(rng);
  };
  const size_t d = hidden, f = c.intermediate_size;
  fill(&w.embedding, c.vocab_size * d, 0.0f);
  fill(&w.final_norm, d, 1.0f);
  fill(&w.lm_head, c.vocab_size * d, 0.0f);
  w.layers.resize(layers);
  for (auto& l : w.layers) {
    fill(&l.attn_norm, d, 1.0f);
    fill(&l.ffn_norm, d, 1.0f);
    fill(&l.wqkv, (c.q_dim() + 2 * c.kv_dim()) * d, 0.0f);
    fill(&l.wo, d * c.q_dim(), 0.0f);
    fill(&l.w13, 2 * f * d, 0.0f);
    fill(&l.w2, d * f, 0.0f);
  }
  return w;
}

worker::MemoryConfig Setting(const std::string& name) {
  worker::MemoryConfig c;
  c.n_init = 128;
  c.repr_topk = 4;
  c.question_weight = 4.0f;
  c.chunk_size = 8192;
  if (name == "512") {
    c.n_local = 256, c.block_size = 64, c.topk = 4, c.exc_block_size = 256;
  } else if (name == "2k") {
    c.n_local = 1024, c.block_size = 128, c.topk = 8, c.exc_block_size = 512;
  } else {
    c.n_local = 512, c.block_size = 64, c.topk = 8, c.exc_block_size = 512;
  }
  return c;
}

int Run() {
  const int64_t n = absl::GetFlag(FLAGS_tokens);
  worker::ModelShard shard(RandomModel(absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_hidden)));
  auto pipeline = coordinator::LocalPipeline::Create({&shard});
  if (!pipeline.ok()) {
    std::fprintf(stderr, "%s\n", pipeline.status().ToString().c_str());
    return 1;
  }
  worker::InMemoryBlockStorage host_storage;
  std::unique_ptr<memstore::BlockStore> store;
  std::unique_ptr<worker::MemstoreBlockStorage> disk_storage;
  worker::BlockStorage* storage = &host_storage;
  if (!absl::GetFlag(FLAGS_store_dir).empty()) {
    memstore::BlockStoreOptions o;
    o.path = absl::GetFlag(FLAGS_store_dir);
    o.model_fingerprint = "scaling-bench";
    o.host_cache_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_host_cache_mb)) << 20;
    o.write_buffer_bytes = size_t{16} << 20;
    auto opened = memstore::BlockStore::Open(o);
    if (!opened.ok()) {
      std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
      return 1;
    }
    store = std::move(opened).value();
    disk_storage = std::make_unique<worker::MemstoreBlockStorage>(store.get(), 1);
    storage = disk_storage.get();
  }
  worker::SessionOptions options;
  options.memory = Setting(absl::GetFlag(FLAGS_setting));
  auto mode = worker::ParseAttentionMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) {
    std::fprintf(stderr, "%s\n", mode.status().ToString().c_str());
    return 2;
  }
  options.memory.mode = *mode;
  options.question = worker::QuestionSpan{1, 33};
  options.storage = storage;
  auto session = (*pipeline)->NewSession(options);
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", session.status().ToString().c_str());
    return 1;
  }
  std::mt19937 rng(2);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 512);
  // Forward calls of 2,048 tokens (a multiple of every setting's exc_block_size) keep the
  // full-attention baseline's activations small and give the last-quarter timing resolution.
  const int64_t chunk = 2048;
  Stopwatch total;
  double last_quarter = 0.0;
  int64_t last_quarter_tokens = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    Stopwatch w;
    // The first call holds the question span, so it is at least 33 tokens long.
    absl::Status s = (*pipeline)->RunChunk(session->get(), std::span(tokens).subspan(begin, len),
                                           false, nullptr);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    if (begin + len > n - n / 4) {  // Chunks that end in the last quarter of the document.
      last_quarter += w.Seconds();
      last_quarter_tokens += len;
    }
  }
  const double seconds = total.Seconds();
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "{\"mode\": \"%s\", \"setting\": \"%s\", \"tokens\": %ld, \"seconds\": %.2f, "
      "\"us_per_token\": %.2f, \"us_per_token_last_quarter\": %.2f, \"peak_rss_mb\": %.1f, "
      "\"host_attention_state_mb\": %.1f, \"block_store_mb\": %.1f, \"store\": \"%s\"}\n",
      absl::GetFlag(FLAGS_mode).c_str(), absl::GetFlag(FLAGS_setting).c_str(), static_cast<long>(n),
      seconds, 1e6 * seconds / n, 1e6 * last_quarter / std::max<int64_t>(last_quarter_tokens, 1),
      usage.ru_maxrss / 1024.0, (*session)->stages[0]->KvBytes() / 1048576.0,
      (store ? static_cast<double>(store->GetStats().disk.bytes) : host_storage.bytes()) /
          1048576.0,
      store ? "rocksdb" : "host");
  return 0;
}

}  // namespace
}  // namespace qllm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qllm::Run();
}
