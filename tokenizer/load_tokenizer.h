// Factory that opens the tokenizer of a model directory.
#ifndef QLLM_TOKENIZER_LOAD_TOKENIZER_H_
#define QLLM_TOKENIZER_LOAD_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace qllm::tokenizer {

// Opens the tokenizer in `model_dir`:
//  - tokenizer.json with a byte-level BPE model (Llama-3) -> BpeTokenizer; bos/eos come from
//    tokenizer_config.json ("bos_token"/"eos_token", string or {"content": ...}) when present;
//  - otherwise tokenizer.model (SentencePiece; Mistral, Llama-2) -> SentencePieceTokenizer.
// A tokenizer.json that is not byte-level (e.g. Mistral's converted one) is skipped when a
// tokenizer.model sits beside it.
// Returns kNotFound when neither file exists, kUnimplemented when only an unsupported
// tokenizer.json exists, and the loaders' errors otherwise (kInvalidArgument for malformed
// files), prefixed with the path.
// Only binaries linked with qllm_tokenizer_sentencepiece read tokenizer.model files (elsewhere
// that case is kUnimplemented): Debian's libsentencepiece carries its own copy of protobuf
// 3.14, whose exported symbols clash with libprotobuf 3.21 in a process that also uses gRPC,
// so the service binaries leave it out and read tokenizer.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// How LoadTokenizer opens tokenizer.model; installed by qllm_tokenizer_sentencepiece at start-up.
using SentencePieceLoader =
    absl::StatusOr<std::unique_ptr<Tokenizer>> (*)(const std::string& model_path);
void SetSentencePieceLoader(SentencePieceLoader loader);

}  // namespace qllm::tokenizer

#endif  // QLLM_TOKENIZER_LOAD_TOKENIZER_H_
