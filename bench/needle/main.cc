// Needle-in-a-haystack benchmark of the built-in model through the C++ engine.
//
//   qllm_needle_bench --model_dir=models/qllm-tiny --lengths=1K,2K,4K --depths=0,0.5,1
//       --modes=full,streaming,infllm,qllm --tasks=passkey,magic --cases=3
//       --out_md=needle.md --out_json=needle.json
//
// Every (mode, task, length, depth) cell runs in its own process (peak RSS per cell); prints
// a line per cell to stderr and the Markdown report to stdout. bench/needle/run_needle_bench.sh
// runs the standard sweeps and draws the heat maps.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/needle/needle_report.h"
#include "bench/needle/needle_runner.h"

ABSL_FLAG(std::string, model_dir, "models/qllm-tiny", "Model directory");
ABSL_FLAG(std::string, memory_config, "",
          "Reference YAML memory config (default: <model_dir>/memory_config.yaml)");
ABSL_FLAG(std::string, chat_template, "qllm-tiny", "Chat template of the prompt");
ABSL_FLAG(std::string, modes, "full,streaming,infllm,qllm", "Attention modes");
ABSL_FLAG(std::string, tasks, "passkey", "Tasks: passkey (one pass key), magic (2-4 needles)");
ABSL_FLAG(std::string, lengths, "1K,2K,4K,8K,16K", "Document lengths in tokens (K = 1024)");
ABSL_FLAG(std::string, depths, "0,0.25,0.5,0.75,1", "Needle depths in [0, 1]");
ABSL_FLAG(int32_t, cases, 3, "Documents per cell");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the documents");
ABSL_FLAG(int64_t, full_max_tokens, 8192, "Longest document full attention runs on");
ABSL_FLAG(int64_t, store_min_tokens, 65536,
          "Documents of at least this many tokens keep memory blocks in a RocksDB block store");
ABSL_FLAG(std::string, store_root, "", "Where the block stores go (default $TMPDIR or /tmp)");
ABSL_FLAG(int64_t, host_cache_mb, 64, "Host-memory cache of the block store, MiB");
ABSL_FLAG(std::string, out_md, "", "Also write the Markdown report here");
ABSL_FLAG(std::string, out_json, "", "Write every case as JSON here");

namespace qllm::needle {
namespace {

bool ParseLength(absl::string_view s, int64_t* out) {
  s = absl::StripAsciiWhitespace(s);
  int64_t scale = 1;
  if (!s.empty() && (s.back() == 'K' || s.back() == 'k')) scale = 1024;
  if (!s.empty() && (s.back() == 'M' || s.back() == 'm')) scale = 1024 * 1024;
  if (scale != 1) s.remove_suffix(1);
  int64_t v = 0;
  if (!absl::SimpleAtoi(s, &v) || v < 1) return false;
  *out = v * scale;
  return true;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "qllm_needle_bench: %s\n", message.c_str());
  return 2;
}

int Run() {
  NeedleRunOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.memory_config = absl::GetFlag(FLAGS_memory_config);
  options.chat_template = absl::GetFlag(FLAGS_chat_template);
  options.cases = absl::GetFlag(FLAGS_cases);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.store_min_tokens = absl::GetFlag(FLAGS_store_min_tokens);
  options.store_root = absl::GetFlag(FLAGS_store_root);
  options.host_cache_mb = absl::GetFlag(FLAGS_host_cache_mb);
  if (options.cases < 1) return Fail("--cases must be >= 1");

  std::vector<worker::AttentionMode> modes;
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_modes), ',', absl::SkipEmpty())) {
    auto mode = worker::ParseAttentionMode(std::string(absl::StripAsciiWhitespace(m)));
    if (!mode.ok()) return Fail(mode.status().ToString());
    modes.push_back(*mode);
  }
  std::vector<NeedleTask> tasks;
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',', absl::SkipEmpty())) {
    auto task = ParseNeedleTask(std::string(absl::StripAsciiWhitespace(t)));
    if (!task.ok()) return Fail(task.status().ToString());
    tasks.push_back(*task);
  }
  std::vector<int64_t> lengths;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',', absl::SkipEmpty())) {
    int64_t n;
    if (!ParseLength(s, &n)) return Fail(absl::StrCat("bad length \"", s, "\""));
    lengths.push_back(n);
  }
  std::vector<double> depths;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_depths), ',', absl::SkipEmpty())) {
    double d;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(s), &d) || !(d >= 0.0 && d <= 1.0)) {
      return Fail(absl::StrCat("bad depth \"", s, "\" (expected a number in [0, 1])"));
    }
    depths.push_back(d);
  }
  if (modes.empty() || tasks.empty() || lengths.empty() || depths.empty()) {
    return Fail("--modes, --tasks, --lengths and --depths must not be empty");
  }

  std::vector<NeedleCellResult> results;
  const size_t total = tasks.size() * lengths.size() * depths.size() * modes.size();
  for (NeedleTask task : tasks) {
    for (int64_t length : lengths) {
      for (double depth : depths) {
        for (worker::AttentionMode mode : modes) {
          const NeedleCell cell{mode, task, length, depth};
          NeedleCellResult r;
          if (mode == worker::AttentionMode::kFull &&
              length > absl::GetFlag(FLAGS_full_max_tokens)) {
            r.cell = cell;
            r.skipped = true;
            r.note = absl::StrCat("skipped above --full_max_tokens=",
                                  absl::GetFlag(FLAGS_full_max_tokens));
          } else {
            auto run = RunNeedleCellIsolated(options, cell);
            if (!run.ok()) return Fail(run.status().ToString());
            r = *std::move(run);
          }
          results.push_back(r);
          double seconds = 0.0;
          for (const NeedleCaseResult& c : r.cases) {
            seconds += c.prefill_seconds + c.decode_seconds;
          }
          std::fprintf(stderr, "[%zu/%zu] %s %s %ld tokens depth %.2f: %s\n", results.size(), total,
                       worker::AttentionModeName(mode), NeedleTaskName(task),
                       static_cast<long>(length), depth,
                       r.skipped          ? "skipped"
                       : !r.error.empty() ? r.error.c_str()
                                          : absl::StrCat(r.correct(), "/", r.cases.size(),
                                                         " correct, ", seconds / r.cases.size(),
                                                         " s/case, peak RSS ", r.peak_rss_mb, " MB")
                                                .c_str());
        }
      }
    }
  }

  NeedleReportInfo info;
  info.model_dir = options.model_dir;
  auto memory = worker::LoadMemoryConfig(options.memory_config.empty()
                                             ? options.model_dir + "/memory_config.yaml"
                                             : options.memory_config);
  if (memory.ok()) {
    info.memory = absl::StrCat(
        "n_init ", memory->n_init, ", n_local ", memory->n_local, ", block_size ",
        memory->block_size, ", topk ", memory->topk, ", repr_topk ", memory->repr_topk,
        ", exc_block_size ", memory->exc_block_size, ", question_weight ", memory->question_weight);
  } else {
    info.memory = memory.status().ToString();
  }
  info.seed = options.seed;
  info.cases = options.cases;
  info.full_max_tokens = absl::GetFlag(FLAGS_full_max_tokens);
  info.store_min_tokens = options.store_min_tokens;
  const char* threads = std::getenv("OMP_NUM_THREADS");
  info.threads = threads != nullptr ? threads : "default";
  const std::string md = FormatNeedleMarkdown(info, results);
  std::fputs(md.c_str(), stdout);
  if (!absl::GetFlag(FLAGS_out_md).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_out_md)) << md;
  }
  if (!absl::GetFlag(FLAGS_out_json).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_out_json)) << FormatNeedleJson(info, results);
  }
  return 0;
}

}  // namespace
}  // namespace qllm::needle

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return qllm::needle::Run();
}
