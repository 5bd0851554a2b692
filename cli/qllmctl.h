// Commands of qllmctl, the admin CLI. Each returns a process exit code and prints to the
// given streams, so the commands are testable without spawning processes.
#ifndef QLLM_CLI_QLLMCTL_H_
#define QLLM_CLI_QLLMCTL_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/sampler.h"
#include "worker/model_shard.h"

namespace qllm::cli {

// Prints a checkpoint's configuration and tensors and loads every weight to validate it.
absl::Status InspectModel(const std::string& model_dir, std::ostream& out);

struct GenerateCommand {
  std::string model_dir;
  std::vector<int32_t> prompt_ids;
  int32_t max_new_tokens = 32;
  int64_t chunk_size = 512;
  model::SamplingOptions sampling;
  // Attention mode and Q-LLM parameters (the block storage is provided by RunGenerate).
  worker::SessionOptions session;
};

// Loads the model, generates, and prints the token ids and timings.
absl::Status RunGenerate(const GenerateCommand& cmd, std::ostream& out);

struct AskCommand {
  std::string model_dir;
  // Directory with tokenizer.json or tokenizer.model. Default: the model directory.
  std::string tokenizer_dir;
  // Chat template name (tokenizer::ChatTemplateNames()).
  std::string chat_template = "llama-3-inst";
  std::string system;
  std::string question;
  std::string context;
  int32_t max_new_tokens = 64;
  model::SamplingOptions sampling;
  // Attention mode and parameters; the question span comes from the chat template.
  worker::SessionOptions session;
};

// Builds the prompt (question before and after the context), runs it with the context memory,
// streams the answer to `out` as it is generated, then prints usage and the retrieved blocks.
absl::Status RunAsk(const AskCommand& cmd, std::ostream& out);

// Parses "1,2, 3" into ids. INVALID_ARGUMENT on anything else.
absl::Status ParseIdList(const std::string& text, std::vector<int32_t>* ids);

}  // namespace qllm::cli

#endif  // QLLM_CLI_QLLMCTL_H_
