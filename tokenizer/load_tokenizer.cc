#include "tokenizer/load_tokenizer.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/bpe_tokenizer.h"

namespace qllm::tokenizer {
namespace {

// Reads bos_token / eos_token from tokenizer_config.json; missing or odd entries leave the
// option empty.
BpeOptions ReadBpeOptions(const std::filesystem::path& config_path) {
  BpeOptions options;
  std::ifstream in(config_path);
  if (!in) return options;
  // nlohmann::json throws on malformed input; a broken config only loses bos/eos.
  try {
    const nlohmann::json config = nlohmann::json::parse(in);
    auto read = [&](const char* key, std::string* out) {
      const auto it = config.find(key);
      if (it == config.end()) return;
      if (it->is_string()) *out = it->get<std::string>();
      if (it->is_object() && it->contains("content")) *out = (*it)["content"].get<std::string>();
    };
    read("bos_token", &options.bos_token);
    read("eos_token", &options.eos_token);
  } catch (const nlohmann::json::exception&) {
    return BpeOptions();
  }
  return options;
}

std::atomic<SentencePieceLoader> g_sentencepiece_loader{nullptr};

}  // namespace

void SetSentencePieceLoader(SentencePieceLoader loader) { g_sentencepiece_loader.store(loader); }

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::filesystem::path json_path = dir / "tokenizer.json";
  const std::filesystem::path model_path = dir / "tokenizer.model";
  std::error_code ec;
  const bool has_json = std::filesystem::is_regular_file(json_path, ec);
  const bool has_model = std::filesystem::is_regular_file(model_path, ec);
  if (has_json) {
    BpeOptions options = ReadBpeOptions(dir / "tokenizer_config.json");
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> bpe =
        BpeTokenizer::FromFile(json_path.string(), options);
    if (bpe.ok()) return std::unique_ptr<Tokenizer>(std::move(*bpe));
    if (!has_model || bpe.status().code() != absl::StatusCode::kUnimplemented) {
      return bpe.status();
    }
  }
  if (has_model) {
    const SentencePieceLoader loader = g_sentencepiece_loader.load();
    if (loader == nullptr) {
      return absl::UnimplementedError(
          absl::StrCat(model_path.string(),
                       ": this binary reads tokenizer.json only (no "
                       "SentencePiece support); add the model's tokenizer.json"));
    }
    return loader(model_path.string());
  }
  return absl::NotFoundError(absl::StrCat("no tokenizer.json or tokenizer.model in ", model_dir));
}

}  // namespace qllm::tokenizer
