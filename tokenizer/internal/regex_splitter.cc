#include "tokenizer/internal/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace qllm::tokenizer::internal {
namespace {

constexpr char kSpaceClassBody[] = "\\t-\\r\\x{85}\\p{Z}";

std::string Pcre2ErrorText(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return absl::StrCat(code);
  return std::string(reinterpret_cast<const char*>(buffer));
}

// Per-thread match resources: the JIT stack and match data are reused across calls so short
// encodes (chat-template pieces) do not pay an mmap each.
struct ThreadScratch {
  ThreadScratch() {
    jit_stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
    match_data = pcre2_match_data_create(8, nullptr);
  }
  ~ThreadScratch() {
    pcre2_match_data_free(match_data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
  }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;

  pcre2_jit_stack* jit_stack;
  pcre2_match_context* context;
  pcre2_match_data* match_data;
};

}  // namespace

absl::StatusOr<std::string> TranslateHfPattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out.append(kSpaceClassBody);
        } else {
          absl::StrAppend(&out, "[", kSpaceClassBody, "]");
        }
      } else if (e == 'S') {
        if (in_class) return absl::UnimplementedError("\\S inside a character class");
        absl::StrAppend(&out, "[^", kSpaceClassBody, "]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

struct RegexSplitter::Impl {
  pcre2_code* code = nullptr;
  ~Impl() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RegexSplitter::~RegexSplitter() = default;

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(std::string_view hf_pattern) {
  absl::StatusOr<std::string> pattern = TranslateHfPattern(hf_pattern);
  if (!pattern.ok()) return pattern.status();
  auto impl = std::make_unique<Impl>();
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  impl->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern->data()), pattern->size(),
                             PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (impl->code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex rejected at offset ",
                                                   error_offset, ": ", Pcre2ErrorText(error)));
  }
  const int jit = pcre2_jit_compile(impl->code, PCRE2_JIT_COMPLETE);
  if (jit != 0) {
    return absl::InternalError(absl::StrCat("PCRE2 JIT compile failed: ", Pcre2ErrorText(jit)));
  }
  return std::unique_ptr<RegexSplitter>(new RegexSplitter(std::move(impl)));
}

absl::Status RegexSplitter::Split(
    std::string_view text, const std::function<void(size_t begin, size_t end)>& on_piece) const {
  thread_local ThreadScratch scratch;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0;        // Where the next search starts.
  size_t gap_start = 0;  // End of the last non-empty match.
  while (pos < n) {
    const int rc =
        pcre2_jit_match(impl_->code, subject, n, pos, 0, scratch.match_data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      return absl::ResourceExhaustedError("pre-tokenizer regex exceeded its JIT stack");
    }
    if (rc < 0) {
      return absl::InternalError(absl::StrCat("pre-tokenizer match failed: ", Pcre2ErrorText(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end > begin) {
      if (begin > gap_start) on_piece(gap_start, begin);
      on_piece(begin, end);
      pos = gap_start = end;
    } else {
      // An empty match contributes nothing; search again one character later (Rust find_iter).
      pos = begin + 1;
      while (pos < n && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  if (gap_start < n) on_piece(gap_start, n);
  return absl::OkStatus();
}

}  // namespace qllm::tokenizer::internal
