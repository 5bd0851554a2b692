// qllmctl: the admin CLI.
//   qllmctl inspect MODEL_DIR
//   qllmctl ask --model=DIR --question=TEXT --context_file=FILE [--chat_template=NAME]
//               [--mode=qllm ...] (memory and sampling flags as for generate)
//   qllmctl generate --model=DIR --prompt_ids=1,2,3 [--max_new_tokens=N] [--temperature=T]
//                    [--top_k=K] [--top_p=P] [--seed=S] [--chunk_size=C]
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "cli/qllmctl.h"

ABSL_FLAG(std::string, model, "", "Model directory (config.json + safetensors)");
ABSL_FLAG(std::string, prompt_ids, "", "Comma-separated prompt token ids");
ABSL_FLAG(std::string, tokenizer, "", "Tokenizer directory (ask); default: the model directory");
ABSL_FLAG(std::string, chat_template, "llama-3-inst", "Chat template (ask)");
ABSL_FLAG(std::string, question, "", "The question (ask)");
ABSL_FLAG(std::string, context_file, "", "File holding the document (ask)");
ABSL_FLAG(std::string, system, "", "System text (ask)");
ABSL_FLAG(int32_t, max_new_tokens, 32, "Tokens to generate");
ABSL_FLAG(int64_t, chunk_size, 512,
          "Prefill chunk size in tokens (a multiple of exc_block_size with a context memory)");
ABSL_FLAG(float, temperature, 0.0f, "Sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, 0, "Top-k filter; 0 disables");
ABSL_FLAG(float, top_p, 1.0f, "Nucleus filter in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed");
ABSL_FLAG(std::string, memory_config, "",
          "Reference-style YAML config (model: {type: qllm, n_init: ...}); overrides the "
          "individual memory flags");
ABSL_FLAG(std::string, mode, "full", "Attention mode: full, streaming, infllm, qllm");
ABSL_FLAG(int32_t, n_init, 128, "Attention-sink tokens");
ABSL_FLAG(int32_t, n_local, 512, "Local window in tokens");
ABSL_FLAG(int32_t, block_size, 64, "Tokens per memory block");
ABSL_FLAG(int32_t, topk, 8, "Blocks retrieved per execution chunk");
ABSL_FLAG(int32_t, repr_topk, 4, "Representative tokens per block");
ABSL_FLAG(int32_t, exc_block_size, 512, "Execution chunk in tokens");
ABSL_FLAG(float, question_weight, 4.0f, "Weight of the question term (qllm)");
ABSL_FLAG(int64_t, question_begin, -1, "First token of the question span (qllm)");
ABSL_FLAG(int64_t, question_end, -1, "One past the last token of the question span (qllm)");

namespace {

// The context-memory configuration from --memory_config (a reference YAML file) or, without
// it, from the individual flags.
absl::Status MemoryFromFlags(qllm::worker::MemoryConfig* m) {
  if (!absl::GetFlag(FLAGS_memory_config).empty()) {
    auto config = qllm::worker::LoadMemoryConfig(absl::GetFlag(FLAGS_memory_config));
    if (!config.ok()) return config.status();
    *m = *config;
    return absl::OkStatus();
  }
  auto mode = qllm::worker::ParseAttentionMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return mode.status();
  m->mode = *mode;
  m->n_init = absl::GetFlag(FLAGS_n_init);
  m->n_local = absl::GetFlag(FLAGS_n_local);
  m->block_size = absl::GetFlag(FLAGS_block_size);
  m->topk = absl::GetFlag(FLAGS_topk);
  m->repr_topk = absl::GetFlag(FLAGS_repr_topk);
  m->exc_block_size = absl::GetFlag(FLAGS_exc_block_size);
  m->question_weight = absl::GetFlag(FLAGS_question_weight);
  m->chunk_size = static_cast<int32_t>(absl::GetFlag(FLAGS_chunk_size));
  return absl::OkStatus();
}

qllm::model::SamplingOptions SamplingFromFlags() {
  qllm::model::SamplingOptions s;
  s.temperature = absl::GetFlag(FLAGS_temperature);
  s.top_k = absl::GetFlag(FLAGS_top_k);
  s.top_p = absl::GetFlag(FLAGS_top_p);
  s.seed = absl::GetFlag(FLAGS_seed);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "qllmctl <command> [flags]\n  inspect MODEL_DIR\n  generate --model=DIR --prompt_ids=...\n"
      "  ask --model=DIR --question=TEXT --context_file=FILE");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string command = args[1];
  absl::Status status;
  if (command == "inspect") {
    if (args.size() != 3) {
      std::cerr << "usage: qllmctl inspect MODEL_DIR\n";
      return 2;
    }
    status = qllm::cli::InspectModel(args[2], std::cout);
  } else if (command == "generate") {
    qllm::cli::GenerateCommand cmd;
    cmd.model_dir = absl::GetFlag(FLAGS_model);
    cmd.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    cmd.chunk_size = absl::GetFlag(FLAGS_chunk_size);
    cmd.sampling = SamplingFromFlags();
    if (absl::Status st = MemoryFromFlags(&cmd.session.memory); !st.ok()) {
      std::cerr << "qllmctl generate: " << st << "\n";
      return 2;
    }
    cmd.chunk_size = cmd.session.memory.chunk_size;
    if (absl::GetFlag(FLAGS_question_end) >= 0) {
      cmd.session.question = qllm::worker::QuestionSpan{absl::GetFlag(FLAGS_question_begin),
                                                        absl::GetFlag(FLAGS_question_end)};
    }
    status = qllm::cli::ParseIdList(absl::GetFlag(FLAGS_prompt_ids), &cmd.prompt_ids);
    if (status.ok()) status = qllm::cli::RunGenerate(cmd, std::cout);
  } else if (command == "ask") {
    qllm::cli::AskCommand cmd;
    cmd.model_dir = absl::GetFlag(FLAGS_model);
    cmd.tokenizer_dir = absl::GetFlag(FLAGS_tokenizer);
    cmd.chat_template = absl::GetFlag(FLAGS_chat_template);
    cmd.system = absl::GetFlag(FLAGS_system);
    cmd.question = absl::GetFlag(FLAGS_question);
    cmd.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    cmd.sampling = SamplingFromFlags();
    status = MemoryFromFlags(&cmd.session.memory);
    std::ifstream in(absl::GetFlag(FLAGS_context_file));
    if (status.ok() && !in) {
      status =
          absl::NotFoundError("cannot read --context_file=" + absl::GetFlag(FLAGS_context_file));
    }
    if (status.ok()) {
      std::stringstream ss;
      ss << in.rdbuf();
      cmd.context = ss.str();
      status = qllm::cli::RunAsk(cmd, std::cout);
    }
  } else {
    std::cerr << "unknown command \"" << command << "\"\n" << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "qllmctl " << command << ": " << status << "\n";
    return 1;
  }
  return 0;
}
