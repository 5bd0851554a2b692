// Tokenizer throughput benchmark (single thread). Generates the deterministic corpus used by
// the conformance tests, times Encode over it, and optionally writes the corpus for the
// JavaScript reference driver (run_tokenizer_bench.sh runs both and prints the ratio).
//
// Usage: tokenizer_bench --model-dir DIR [--mb 4] [--repeat 3] [--corpus-out FILE]
// Prints one JSON line: {"impl", "bytes", "seconds", "mb_per_s", "tokens",
//                        "one_doc_seconds", "one_doc_tokens"}.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tokenizer/load_tokenizer.h"
#include "tokenizer/testing/corpus.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Run(const std::string& model_dir, double mb, int repeat, const std::string& corpus_out) {
  auto tok = qllm::tokenizer::LoadTokenizer(model_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "load %s: %s\n", model_dir.c_str(), tok.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> specials;
  for (const auto& t : (*tok)->special_tokens()) specials.push_back(t.text);
  const auto docs = qllm::tokenizer::testing::MakeCorpus(static_cast<size_t>(mb * 1e6), specials);
  if (!corpus_out.empty()) {
    const absl::Status s = qllm::tokenizer::testing::WriteCorpusFile(corpus_out, docs);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  size_t bytes = 0;
  std::string joined;
  for (const auto& d : docs) {
    bytes += d.size();
    joined += d;
  }
  double best = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    tokens = 0;
    const auto start = Clock::now();
    for (const auto& d : docs) {
      auto ids = (*tok)->Encode(d, {});
      if (!ids.ok()) {
        std::fprintf(stderr, "encode: %s\n", ids.status().ToString().c_str());
        return 1;
      }
      tokens += ids->size();
    }
    best = std::min(best, Seconds(start, Clock::now()));
  }
  // The whole corpus as one document: the long-document latency Q-LLM prefill sees.
  const auto start = Clock::now();
  auto one = (*tok)->Encode(joined, {});
  const double one_seconds = Seconds(start, Clock::now());
  if (!one.ok()) {
    std::fprintf(stderr, "encode: %s\n", one.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "{\"impl\": \"qllm\", \"bytes\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.2f, "
      "\"tokens\": %zu, \"one_doc_seconds\": %.4f, \"one_doc_tokens\": %zu}\n",
      bytes, best, bytes / 1e6 / best, tokens, one_seconds, one->size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  std::string corpus_out;
  double mb = 4.0;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model-dir") {
      model_dir = argv[i + 1];
    } else if (flag == "--mb") {
      mb = std::atof(argv[i + 1]);
    } else if (flag == "--repeat") {
      repeat = std::max(1, std::atoi(argv[i + 1]));
    } else if (flag == "--corpus-out") {
      corpus_out = argv[i + 1];
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (model_dir.empty()) {
    std::fprintf(stderr,
                 "usage: tokenizer_bench --model-dir DIR [--mb 4] [--repeat 3] "
                 "[--corpus-out FILE]\n");
    return 2;
  }
  return Run(model_dir, mb, repeat, corpus_out);
}
