#include "tokenizer/internal/special_matcher.h"

#include <algorithm>

namespace qllm::tokenizer::internal {

SpecialMatcher::SpecialMatcher(const std::vector<SpecialToken>& tokens) {
  for (const SpecialToken& t : tokens) {
    if (!t.text.empty()) entries_.push_back({t.text, t.id});
  }
  std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    const auto fa = static_cast<unsigned char>(a.text[0]);
    const auto fb = static_cast<unsigned char>(b.text[0]);
    if (fa != fb) return fa < fb;
    return a.text.size() > b.text.size();
  });
  size_t e = 0;
  for (int b = 0; b < 256; ++b) {
    bucket_[b] = static_cast<uint32_t>(e);
    while (e < entries_.size() && static_cast<unsigned char>(entries_[e].text[0]) == b) ++e;
    first_byte_[b] = bucket_[b] != e;
  }
  bucket_[256] = static_cast<uint32_t>(e);
}

const SpecialMatcher::Entry* SpecialMatcher::Match(std::string_view text, size_t pos) const {
  const auto b = static_cast<unsigned char>(text[pos]);
  const std::string_view rest = text.substr(pos);
  for (uint32_t e = bucket_[b]; e < bucket_[b + 1]; ++e) {
    if (rest.starts_with(entries_[e].text)) return &entries_[e];
  }
  return nullptr;
}

}  // namespace qllm::tokenizer::internal
