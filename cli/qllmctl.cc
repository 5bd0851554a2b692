#include "cli/qllmctl.h"

#include <algorithm>
#include <iomanip>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "coordinator/generator.h"
#include "model/checkpoint.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/load_tokenizer.h"
#include "tokenizer/stream_decoder.h"

namespace qllm::cli {

absl::Status InspectModel(const std::string& model_dir, std::ostream& out) {
  ASSIGN_OR_RETURN(auto ckpt, model::Checkpoint::Open(model_dir));
  const model::ModelConfig& c = ckpt->config();
  out << "architecture       " << c.architecture << "\n"
      << "layers             " << c.num_layers << "\n"
      << "hidden_size        " << c.hidden_size << "\n"
      << "intermediate_size  " << c.intermediate_size << "\n"
      << "heads / kv_heads   " << c.num_heads << " / " << c.num_kv_heads << " (head_dim "
      << c.head_dim << ")\n"
      << "vocab_size         " << c.vocab_size << "\n"
      << "rope_theta         " << c.rope_theta
      << (c.has_llama3_scaling ? absl::StrCat(" (llama3 scaling x", c.llama3_scaling.factor, ")")
                               : std::string())
      << "\n"
      << "tied embeddings    " << (c.tie_word_embeddings ? "yes" : "no") << "\n"
      << "parameters         " << c.NumParameters() << "\n";
  for (const std::string& name : ckpt->TensorNames()) {
    ASSIGN_OR_RETURN(const model::TensorView* v, ckpt->Find(name));
    out << "  " << std::left << std::setw(56) << name << " " << model::DTypeName(v->dtype) << " "
        << model::ShapeString(v->shape) << "\n";
  }
  ASSIGN_OR_RETURN(model::ModelWeights w, model::LoadWeights(model_dir));
  out << "all " << w.layers.size() << " layers loaded and checked\n";
  return absl::OkStatus();
}

absl::Status ParseIdList(const std::string& text, std::vector<int32_t>* ids) {
  ids->clear();
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(absl::StrCat("\"", part, "\" is not a token id"));
    }
    ids->push_back(id);
  }
  if (ids->empty()) return absl::InvalidArgumentError("no token ids given");
  return absl::OkStatus();
}

absl::Status RunGenerate(const GenerateCommand& cmd, std::ostream& out) {
  ASSIGN_OR_RETURN(auto shard, worker::ModelShard::Load(cmd.model_dir));
  ASSIGN_OR_RETURN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  coordinator::GenerateOptions options;
  options.max_new_tokens = cmd.max_new_tokens;
  options.chunk_size = cmd.chunk_size;
  options.sampling = cmd.sampling;
  options.stop_tokens = shard->config().eos_token_ids;
  worker::InMemoryBlockStorage storage;
  options.session = cmd.session;
  options.session.storage = &storage;
  options.session.record_selections = true;
  ASSIGN_OR_RETURN(coordinator::GenerateResult r,
                   coordinator::Generate(*pipeline, cmd.prompt_ids, options));
  out << "mode: " << worker::AttentionModeName(cmd.session.memory.mode) << "\n";
  out << "generated: " << absl::StrJoin(r.tokens, " ") << "\n";
  if (!r.selections.empty()) {
    // The evidence of the last chunk of each layer: which blocks (token ranges) it attended.
    std::map<int32_t, const worker::ChunkSelection*> last;
    for (const auto& sel : r.selections) last[sel.layer] = &sel;
    for (const auto& [layer, sel] : last) {
      out << "layer " << layer << " retrieved " << sel->blocks.size() << " of " << sel->candidates
          << " blocks:";
      for (size_t i = 0; i < sel->blocks.size(); ++i) {
        out << " [" << sel->block_starts[i] << ", "
            << sel->block_starts[i] + cmd.session.memory.block_size << ")";
      }
      out << "\n";
    }
  }
  out << std::fixed << std::setprecision(1) << "prefill: " << r.prompt_tokens << " tokens, "
      << r.prompt_tokens / std::max(r.prefill_seconds, 1e-9)
      << " tokens/s; decode: " << r.tokens.size() << " tokens, "
      << r.tokens.size() / std::max(r.decode_seconds, 1e-9) << " tokens/s\n";
  return absl::OkStatus();
}

absl::Status RunAsk(const AskCommand& cmd, std::ostream& out) {
  ASSIGN_OR_RETURN(auto shard, worker::ModelShard::Load(cmd.model_dir));
  ASSIGN_OR_RETURN(auto tok, tokenizer::LoadTokenizer(
                                 cmd.tokenizer_dir.empty() ? cmd.model_dir : cmd.tokenizer_dir));
  if (tok->vocab_size() > static_cast<size_t>(shard->config().vocab_size)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the tokenizer has ", tok->vocab_size(), " ids but the model's vocabulary ",
                     shard->config().vocab_size, ": they do not belong together"));
  }
  ASSIGN_OR_RETURN(tokenizer::ChatTemplate tmpl, tokenizer::GetChatTemplate(cmd.chat_template));
  ASSIGN_OR_RETURN(tokenizer::ChatPrompt prompt,
                   tokenizer::BuildChatPrompt(*tok, tmpl, cmd.system, cmd.question, cmd.context));
  ASSIGN_OR_RETURN(auto pipeline, coordinator::LocalPipeline::Create({shard.get()}));
  coordinator::GenerateOptions options;
  options.max_new_tokens = cmd.max_new_tokens;
  options.chunk_size = cmd.session.memory.chunk_size;
  options.sampling = cmd.sampling;
  options.stop_tokens = shard->config().eos_token_ids;
  if (tok->eos_id().has_value()) options.stop_tokens.push_back(*tok->eos_id());
  worker::InMemoryBlockStorage storage;
  options.session = cmd.session;
  options.session.storage = &storage;
  options.session.record_selections = true;
  options.session.question = worker::QuestionSpan{prompt.question_begin, prompt.question_end};
  tokenizer::DecodeOptions decode;
  decode.skip_special_tokens = true;
  tokenizer::StreamDecoder stream(tok.get(), decode);
  absl::Status stream_status;
  auto on_token = [&](int32_t id) {
    absl::StatusOr<std::string> text = stream.Feed(id);
    if (!text.ok()) {
      stream_status = text.status();
      return false;
    }
    out << *text << std::flush;
    return true;
  };
  ASSIGN_OR_RETURN(coordinator::GenerateResult r,
                   coordinator::Generate(*pipeline, prompt.ids, options, on_token));
  RETURN_IF_ERROR(stream_status);
  out << stream.Flush() << "\n";
  out << std::fixed << std::setprecision(2) << "[" << r.prompt_tokens << " prompt tokens in "
      << r.prefill_seconds << " s, " << r.tokens.size() << " generated in " << r.decode_seconds
      << " s; mode " << worker::AttentionModeName(cmd.session.memory.mode) << ", question at ["
      << prompt.question_begin << ", " << prompt.question_end << ")]\n";
  // Evidence: how often each block was selected while answering (all layers and chunks).
  std::map<int64_t, int> hits;
  for (const auto& sel : r.selections) {
    for (int64_t start : sel.block_starts) ++hits[start];
  }
  std::vector<std::pair<int, int64_t>> ranked;
  for (const auto& [start, n] : hits) ranked.push_back({-n, start});
  std::sort(ranked.begin(), ranked.end());
  for (size_t i = 0; i < ranked.size() && i < 5; ++i) {
    out << "evidence: tokens [" << ranked[i].second << ", "
        << ranked[i].second + cmd.session.memory.block_size << ") selected " << -ranked[i].first
        << " times\n";
  }
  return absl::OkStatus();
}

}  // namespace qllm::cli
