#include "tokenizer/stream_decoder.h"

#include "common/logging.h"
#include "common/status_macros.h"

namespace qllm::tokenizer {

StreamDecoder::StreamDecoder(const Tokenizer* tokenizer, const DecodeOptions& options)
    : tokenizer_(tokenizer), options_(options) {
  QLLM_CHECK(tokenizer_ != nullptr);
}

absl::StatusOr<std::string> StreamDecoder::Feed(int32_t id) {
  scratch_.clear();
  DecodeState next_state = state_;
  RETURN_IF_ERROR(tokenizer_->AppendTokenBytes(id, options_, &next_state, &scratch_));
  state_ = next_state;
  std::string text;
  repairer_.Append(scratch_, &text);
  return text;
}

std::string StreamDecoder::Flush() {
  std::string text;
  repairer_.Finish(&text);
  state_ = DecodeState();
  return text;
}

}  // namespace qllm::tokenizer
