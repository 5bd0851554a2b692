#include "bench/needle/needle_runner.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "coordinator/generator.h"
#include "coordinator/local_pipeline.h"
#include "memstore/block_store.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "worker/block_storage.h"
#include "worker/memstore_block_storage.h"
#include "worker/model_shard.h"

namespace qllm::needle {
namespace {

// VmHWM of this process in MiB (0 when /proc is unavailable).
double PeakRssMb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return 0.0;
}

uint64_t CaseSeed(const NeedleRunOptions& o, const NeedleCell& cell, int32_t c) {
  uint64_t s = MixSeed(o.seed, static_cast<uint64_t>(cell.task));
  s = MixSeed(s, static_cast<uint64_t>(cell.length));
  s = MixSeed(s, static_cast<uint64_t>(std::llround(cell.depth * 1e6)));
  return MixSeed(s, static_cast<uint64_t>(c));
}

// A fresh RocksDB block store in a new directory under `root`; removes it when destroyed.
class TempBlockStore {
 public:
  static absl::StatusOr<std::unique_ptr<TempBlockStore>> Open(std::string root, int64_t cache_mb) {
    if (root.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      root = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    }
    std::string pattern = root + "/qllm_needle_XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
    }
    auto t = std::unique_ptr<TempBlockStore>(new TempBlockStore(pattern));
    memstore::BlockStoreOptions o;
    o.path = pattern;
    o.model_fingerprint = "needle-bench";
    o.host_cache_bytes = static_cast<size_t>(cache_mb) << 20;
    o.write_buffer_bytes = size_t{16} << 20;
    ASSIGN_OR_RETURN(t->store_, memstore::BlockStore::Open(o));
    t->storage_ = std::make_unique<worker::MemstoreBlockStorage>(t->store_.get(), 1);
    return t;
  }
  ~TempBlockStore() {
    storage_.reset();
    store_.reset();
    std::error_code ec;  // Best effort: a leftover temp directory is not an error.
    std::filesystem::remove_all(dir_, ec);
  }
  worker::BlockStorage* storage() { return storage_.get(); }

 private:
  explicit TempBlockStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string dir_;
  std::unique_ptr<memstore::BlockStore> store_;
  std::unique_ptr<worker::MemstoreBlockStorage> storage_;
};

}  // namespace

int32_t NeedleCellResult::correct() const {
  int32_t n = 0;
  for (const NeedleCaseResult& c : cases) n += c.correct ? 1 : 0;
  return n;
}

absl::StatusOr<NeedleCellResult> RunNeedleCell(const NeedleRunOptions& options,
                                               const NeedleCell& cell) {
  ASSIGN_OR_RETURN(auto shard, worker::ModelShard::Load(options.model_dir));
  ASSIGN_OR_RETURN(auto tok, tokenizer::LoadTokenizer(options.model_dir));
  ASSIGN_OR_RETURN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  ASSIGN_OR_RETURN(worker::MemoryConfig memory,
                   worker::LoadMemoryConfig(options.memory_config.empty()
                                                ? options.model_dir + "/memory_config.yaml"
                                                : options.memory_config));
  memory.mode = cell.mode;
  ASSIGN_OR_RETURN(tokenizer::ChatTemplate tmpl, tokenizer::GetChatTemplate(options.chat_template));

  NeedleCellResult result;
  result.cell = cell;
  const bool use_store = memory.uses_memory() && cell.length >= options.store_min_tokens;
  result.blocks_in = !memory.uses_memory() ? "-" : use_store ? "rocksdb" : "host";
  std::unique_ptr<TempBlockStore> store;
  if (use_store) {
    ASSIGN_OR_RETURN(store, TempBlockStore::Open(options.store_root, options.host_cache_mb));
  }
  for (int32_t c = 0; c < options.cases; ++c) {
    HaystackOptions h;
    h.task = cell.task;
    h.context_tokens = cell.length;
    h.depth = cell.depth;
    h.seed = CaseSeed(options, cell, c);
    ASSIGN_OR_RETURN(Haystack hay, MakeHaystack(*tok, h));
    ASSIGN_OR_RETURN(tokenizer::ChatPrompt prompt,
                     tokenizer::BuildChatPrompt(*tok, tmpl, "", hay.question, hay.context));
    hay.context.clear();
    hay.context.shrink_to_fit();

    worker::InMemoryBlockStorage host_storage;
    coordinator::GenerateOptions g;
    g.max_new_tokens = options.max_new_tokens;
    g.chunk_size = memory.chunk_size;
    g.stop_tokens = shard->config().eos_token_ids;
    if (tok->eos_id().has_value()) g.stop_tokens.push_back(*tok->eos_id());
    g.session.memory = memory;
    g.session.storage = store ? store->storage() : &host_storage;
    g.session.session_id = static_cast<uint64_t>(c) + 1;
    g.session.question = worker::QuestionSpan{prompt.question_begin, prompt.question_end};
    ASSIGN_OR_RETURN(coordinator::GenerateResult r,
                     coordinator::Generate(*pipeline, prompt.ids, g));
    if (store) RETURN_IF_ERROR(store->storage()->DeleteSession(g.session.session_id));

    std::vector<int32_t> answer_ids;
    for (int32_t id : r.tokens) {
      if (!tok->IsSpecial(id)) answer_ids.push_back(id);
    }
    ASSIGN_OR_RETURN(std::string answer, tok->Decode(answer_ids));
    NeedleCaseResult cr;
    cr.expected = hay.answer;
    cr.answer = std::string(absl::StripAsciiWhitespace(answer));
    cr.correct = cr.answer == cr.expected;
    cr.prompt_tokens = r.prompt_tokens;
    // <|context|> follows the question span; the document's tokens follow it.
    cr.needle_position = prompt.question_end + 1 + hay.needle_token;
    cr.prefill_seconds = r.prefill_seconds;
    cr.decode_seconds = r.decode_seconds;
    result.cases.push_back(std::move(cr));
  }
  result.peak_rss_mb = PeakRssMb();
  return result;
}

std::string NeedleCellResultToJson(const NeedleCellResult& r) {
  nlohmann::json cases = nlohmann::json::array();
  for (const NeedleCaseResult& c : r.cases) {
    cases.push_back({{"expected", c.expected},
                     {"answer", c.answer},
                     {"correct", c.correct},
                     {"prompt_tokens", c.prompt_tokens},
                     {"needle_position", c.needle_position},
                     {"prefill_seconds", c.prefill_seconds},
                     {"decode_seconds", c.decode_seconds}});
  }
  nlohmann::json j = {{"mode", worker::AttentionModeName(r.cell.mode)},
                      {"task", NeedleTaskName(r.cell.task)},
                      {"length", r.cell.length},
                      {"depth", r.cell.depth},
                      {"skipped", r.skipped},
                      {"error", r.error},
                      {"note", r.note},
                      {"correct", r.correct()},
                      {"cases", cases},
                      {"peak_rss_mb", r.peak_rss_mb},
                      {"blocks_in", r.blocks_in}};
  // Invalid UTF-8 in a model's answer is replaced rather than failing the dump.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<NeedleCellResult> NeedleCellResultFromJson(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    NeedleCellResult r;
    ASSIGN_OR_RETURN(r.cell.mode, worker::ParseAttentionMode(j.at("mode").get<std::string>()));
    ASSIGN_OR_RETURN(r.cell.task, ParseNeedleTask(j.at("task").get<std::string>()));
    r.cell.length = j.at("length").get<int64_t>();
    r.cell.depth = j.at("depth").get<double>();
    r.skipped = j.at("skipped").get<bool>();
    r.error = j.at("error").get<std::string>();
    r.note = j.at("note").get<std::string>();
    r.peak_rss_mb = j.at("peak_rss_mb").get<double>();
    r.blocks_in = j.at("blocks_in").get<std::string>();
    for (const nlohmann::json& c : j.at("cases")) {
      NeedleCaseResult cr;
      cr.expected = c.at("expected").get<std::string>();
      cr.answer = c.at("answer").get<std::string>();
      cr.correct = c.at("correct").get<bool>();
      cr.prompt_tokens = c.at("prompt_tokens").get<int64_t>();
      cr.needle_position = c.at("needle_position").get<int64_t>();
      cr.prefill_seconds = c.at("prefill_seconds").get<double>();
      cr.decode_seconds = c.at("decode_seconds").get<double>();
      r.cases.push_back(std::move(cr));
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("needle cell result: ", e.what()));
  }
}

absl::StatusOr<NeedleCellResult> RunNeedleCellIsolated(const NeedleRunOptions& options,
                                                       const NeedleCell& cell) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {  // Child: run, write the JSON, and leave without running the parent's atexit.
    close(fds[0]);
    absl::StatusOr<NeedleCellResult> r = RunNeedleCell(options, cell);
    NeedleCellResult out;
    if (r.ok()) {
      out = *std::move(r);
    } else {
      out.cell = cell;
      out.error = r.status().ToString();
      out.peak_rss_mb = PeakRssMb();
    }
    const std::string json = NeedleCellResultToJson(out);
    size_t done = 0;
    while (done < json.size()) {
      const ssize_t n = write(fds[1], json.data() + done, json.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(3);
      done += static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string json;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    json.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  NeedleCellResult failed;
  failed.cell = cell;
  if (WIFSIGNALED(status)) {
    failed.error = absl::StrCat("the cell's process was killed by signal ", WTERMSIG(status),
                                WTERMSIG(status) == SIGKILL ? " (out of memory?)" : "");
    return failed;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    failed.error = absl::StrCat("the cell's process exited with status ", WEXITSTATUS(status));
    return failed;
  }
  absl::StatusOr<NeedleCellResult> r = NeedleCellResultFromJson(json);
  if (!r.ok()) {
    failed.error = r.status().ToString();
    return failed;
  }
  return r;
}

}  // namespace qllm::needle
