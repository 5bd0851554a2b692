// One cell of the needle benchmark: a model directory, an attention mode, a task, a document
// length and a needle depth, answered for a few generated documents by the C++ engine
// (coordinator::LocalPipeline + coordinator::Generate, greedy, stop at the model's eos).
#ifndef QLLM_BENCH_NEEDLE_NEEDLE_RUNNER_H_
#define QLLM_BENCH_NEEDLE_NEEDLE_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/needle/haystack.h"
#include "worker/memory_config.h"

namespace qllm::needle {

struct NeedleRunOptions {
  // Model directory (config.json, model.safetensors, tokenizer.json). Required.
  std::string model_dir;
  // Reference YAML memory config; empty means <model_dir>/memory_config.yaml (the parameters
  // the built-in model was trained with). The cell's mode replaces the config's. Default: "".
  std::string memory_config;
  // Chat template that builds the prompt. Default: "qllm-tiny".
  std::string chat_template = "qllm-tiny";
  // Documents per cell. Default: 3.
  int32_t cases = 3;
  // Seed of the documents; case c of (task, length, depth) is the same document in every mode.
  // Default: 1.
  uint64_t seed = 1;
  // Documents of at least this many tokens keep their memory blocks in a memstore::BlockStore
  // (RocksDB) in a fresh directory under store_root instead of host memory. Default: 65536.
  int64_t store_min_tokens = 65536;
  // Parent directory of the block stores; empty means $TMPDIR or /tmp. Default: "".
  std::string store_root;
  // Host-memory LRU of the block store, in MiB. Default: 64.
  int64_t host_cache_mb = 64;
  // Generated-token budget per answer (answers are <= 7 digits + eos). Default: 12.
  int32_t max_new_tokens = 12;
};

struct NeedleCell {
  worker::AttentionMode mode = worker::AttentionMode::kQllm;
  NeedleTask task = NeedleTask::kPassKey;
  // Document length in tokens (the prompt adds the template and the question twice).
  int64_t length = 1024;
  // Needle depth in [0, 1].
  double depth = 0.5;
};

struct NeedleCaseResult {
  std::string expected;
  std::string answer;
  bool correct = false;
  int64_t prompt_tokens = 0;
  // Token position of the needle in the prompt.
  int64_t needle_position = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

struct NeedleCellResult {
  NeedleCell cell;
  // Not run (full attention beyond its limit); `note` says why.
  bool skipped = false;
  // Set when the cell failed (an engine error, or the child process died); no cases then.
  std::string error;
  std::string note;
  std::vector<NeedleCaseResult> cases;
  // Peak resident memory of the process that ran the cell (model, tokenizer, documents and
  // attention state; one process per cell), in MiB.
  double peak_rss_mb = 0.0;
  // Where the memory blocks lived: "host", "rocksdb", or "-" in full mode.
  std::string blocks_in;

  int32_t correct() const;
};

// Runs the cell in this process. Errors: those of loading the model, the tokenizer and the
// memory config, of building the prompt, and of the engine.
absl::StatusOr<NeedleCellResult> RunNeedleCell(const NeedleRunOptions& options,
                                               const NeedleCell& cell);

// Runs the cell in a forked child process, so that peak_rss_mb is the cell's own and a cell
// that runs out of memory does not end the benchmark. Engine errors and a child that dies are
// reported in the result's `error`; returns INTERNAL only when fork/pipe fail. The calling
// process must not have started OpenMP or BLAS threads (they do not survive fork).
absl::StatusOr<NeedleCellResult> RunNeedleCellIsolated(const NeedleRunOptions& options,
                                                       const NeedleCell& cell);

// The result as one JSON object, and back. FromJson errors: INVALID_ARGUMENT.
std::string NeedleCellResultToJson(const NeedleCellResult& result);
absl::StatusOr<NeedleCellResult> NeedleCellResultFromJson(const std::string& json);

}  // namespace qllm::needle

#endif  // QLLM_BENCH_NEEDLE_NEEDLE_RUNNER_H_
