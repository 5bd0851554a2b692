#include "tokenizer/internal/utf8.h"

#include <cstdint>

namespace qllm::tokenizer::internal {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Result of examining the sequence starting at a lead byte.
struct SeqCheck {
  // Bytes forming a valid character (> 0), or 0 when invalid / incomplete.
  size_t valid_len = 0;
  // When invalid: length of the maximal ill-formed subpart (>= 1).
  size_t bad_len = 0;
  // True when the available bytes are a valid but incomplete prefix.
  bool incomplete = false;
};

// Checks the sequence at s[0..n) following Unicode Table 3-7.
SeqCheck CheckSequence(const unsigned char* s, size_t n) {
  const unsigned char b0 = s[0];
  if (b0 < 0x80) return {1, 0, false};
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // Allowed range of the second byte.
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // Excludes surrogates.
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, 1, false};
  }
  for (size_t i = 1; i < len; ++i) {
    if (i >= n) return {0, 0, true};
    const unsigned char lo_i = i == 1 ? lo : 0x80;
    const unsigned char hi_i = i == 1 ? hi : 0xBF;
    if (s[i] < lo_i || s[i] > hi_i) return {0, i, false};
  }
  return {len, 0, false};
}

// Repairs `data`; returns the number of bytes consumed. When `final` is false a trailing
// incomplete prefix is left unconsumed.
size_t Repair(std::string_view data, bool final, std::string* out) {
  const auto* s = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  size_t i = 0;
  size_t run_start = 0;  // Start of the current run of valid bytes not yet copied.
  while (i < n) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    const SeqCheck c = CheckSequence(s + i, n - i);
    if (c.valid_len > 0) {
      i += c.valid_len;
      continue;
    }
    out->append(data.substr(run_start, i - run_start));
    if (c.incomplete) {
      if (!final) return i;
      out->append(kReplacement);
      return n;
    }
    out->append(kReplacement);
    i += c.bad_len;
    run_start = i;
  }
  out->append(data.substr(run_start, n - run_start));
  return n;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Fast path over ASCII, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      __builtin_memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    const SeqCheck c = CheckSequence(s + i, n - i);
    if (c.valid_len == 0) return false;
    i += c.valid_len;
  }
  return true;
}

void Utf8Repairer::Append(std::string_view bytes, std::string* out) {
  if (pending_.empty()) {
    const size_t used = Repair(bytes, /*final=*/false, out);
    pending_.assign(bytes.substr(used));
    return;
  }
  pending_.append(bytes);
  const size_t used = Repair(pending_, /*final=*/false, out);
  pending_.erase(0, used);
}

void Utf8Repairer::Finish(std::string* out) {
  Repair(pending_, /*final=*/true, out);
  pending_.clear();
}

}  // namespace qllm::tokenizer::internal
