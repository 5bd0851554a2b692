// Small self-contained tokenizer files for unit tests (no network, no real checkpoints).
// Uses std types only: the SentencePiece trainer header clashes with Abseil.
#ifndef QLLM_TESTS_UNIT_TOKENIZER_TINY_TOKENIZERS_H_
#define QLLM_TESTS_UNIT_TOKENIZER_TINY_TOKENIZERS_H_

#include <string>

namespace qllm::tokenizer::testing {

// A byte-level BPE tokenizer.json with the Llama-3 split pattern, the 256 byte tokens (ids
// 0..255 in byte order), merges producing "Ġt", "he", "Ġthe", "in", "ing", "Ġ Ġ" -> "ĠĠ", and
// added special tokens <|begin_of_text|>=300, <|end_of_text|>=301, <|start_header_id|>=302,
// <|end_header_id|>=303, <|eot_id|>=304 and the qllm-tiny template's <|question|>=305,
// <|context|>=306, <|answer|>=307. ids 256.. are the merge results in merge order.
std::string TinyBpeJson(bool ignore_merges = true);

// Trains a small SentencePiece BPE model (byte_fallback, <unk>=0 <s>=1 </s>=2) on a fixed text
// and returns the serialized ModelProto; empty with *error set on failure.
std::string TrainTinySentencePieceModel(std::string* error);

}  // namespace qllm::tokenizer::testing

#endif  // QLLM_TESTS_UNIT_TOKENIZER_TINY_TOKENIZERS_H_
