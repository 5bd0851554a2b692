#include "tests/unit/tokenizer/tiny_tokenizers.h"

#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "tokenizer/internal/byte_level.h"

namespace qllm::tokenizer::testing {

std::string TinyBpeJson(bool ignore_merges) {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[internal::ByteToUnicode(static_cast<unsigned char>(b))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"in", "g"}, {"Ġ", "Ġ"}};
  json merge_list = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = next++;
    merge_list.push_back(a + " " + b);
  }
  json added = json::array();
  const char* specials[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>",      "<|question|>",
                            "<|context|>",       "<|answer|>"};
  for (int i = 0; i < 8; ++i) {
    added.push_back({{"id", 300 + i},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const std::string pattern =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  json root = {{"version", "1.0"},
               {"added_tokens", added},
               {"normalizer", nullptr},
               {"pre_tokenizer",
                {{"type", "Sequence"},
                 {"pretokenizers", json::array({{{"type", "Split"},
                                                 {"pattern", {{"Regex", pattern}}},
                                                 {"behavior", "Isolated"},
                                                 {"invert", false}},
                                                {{"type", "ByteLevel"},
                                                 {"add_prefix_space", false},
                                                 {"trim_offsets", true},
                                                 {"use_regex", false}}})}}},
               {"decoder", {{"type", "ByteLevel"}}},
               {"model",
                {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"byte_fallback", false},
                 {"ignore_merges", ignore_merges},
                 {"vocab", vocab},
                 {"merges", merge_list}}}};
  return root.dump();
}

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(std::vector<std::string> items) : items_(std::move(items)) {}
  bool done() const override { return index_ >= items_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return items_[index_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  std::vector<std::string> items_;
  size_t index_ = 0;
};

}  // namespace

std::string TrainTinySentencePieceModel(std::string* error) {
  std::vector<std::string> sentences;
  for (int i = 0; i < 200; ++i) {
    std::ostringstream s;
    s << "the quick brown fox " << i << " jumps over the lazy dog; hello world, the end.";
    sentences.push_back(s.str());
    sentences.push_back("Question: what is in the context? Answer: the answer is here.");
  }
  VectorIterator it(std::move(sentences));
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--model_type=bpe --vocab_size=320 --byte_fallback=true --character_coverage=1.0 "
      "--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --minloglevel=2 "
      "--normalization_rule_name=identity --remove_extra_whitespaces=false",
      &it, &model);
  if (!status.ok()) {
    *error = status.ToString();
    return "";
  }
  return model;
}

}  // namespace qllm::tokenizer::testing
