#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/internal/bpe_json.h"
#include "tokenizer/internal/byte_level.h"
#include "tokenizer/internal/regex_splitter.h"
#include "tokenizer/internal/special_matcher.h"
#include "tokenizer/internal/strings.h"
#include "tokenizer/internal/utf8.h"

namespace qllm::tokenizer {
namespace {

// Words with at most this many bytes merge by linear scans; longer ones use a heap.
constexpr size_t kLinearMergeLimit = 48;

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t start;
  uint32_t len;  // 0 once merged into its left neighbour.
};

}  // namespace

BpeTokenizer::BpeTokenizer() = default;
BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromFile(const std::string& path,
                                                                     const BpeOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tok = FromJson(buffer.str(), options);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(std::string_view json_text,
                                                                     const BpeOptions& options) {
  ASSIGN_OR_RETURN(internal::BpeSpec spec, internal::ParseBpeJson(json_text));
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  RETURN_IF_ERROR(tok->Init(std::move(spec), options));
  return tok;
}

absl::Status BpeTokenizer::Init(internal::BpeSpec spec, const BpeOptions& options) {
  int64_t max_id = -1;
  for (const auto& [token, id] : spec.vocab) max_id = std::max<int64_t>(max_id, id);
  for (const auto& added : spec.added_tokens) max_id = std::max<int64_t>(max_id, added.id);
  const size_t n = static_cast<size_t>(max_id + 1);
  id_bytes_.assign(n, "");
  id_token_.assign(n, "");
  id_kind_.assign(n, IdKind::kUnused);
  bytes_to_id_.reserve(spec.vocab.size());
  token_to_id_.reserve(spec.vocab.size() + spec.added_tokens.size());
  for (auto& [token, id] : spec.vocab) {
    std::optional<std::string> bytes = internal::UnicodeToBytes(token);
    if (!bytes.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary token \"", token, "\" is not byte-level encoded"));
    }
    if (id_kind_[id] != IdKind::kUnused) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate vocabulary id ", id));
    }
    id_kind_[id] = IdKind::kModel;
    bytes_to_id_.emplace(*bytes, id);
    id_bytes_[id] = std::move(*bytes);
    token_to_id_.emplace(token, id);
    id_token_[id] = std::move(token);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = bytes_to_id_.find(std::string(1, static_cast<char>(b)));
    if (it == bytes_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary lacks the token for byte ", b));
    }
    byte_id_[b] = it->second;
  }
  merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const auto l = token_to_id_.find(left);
    const auto r = token_to_id_.find(right);
    const auto m = token_to_id_.find(absl::StrCat(left, right));
    if (l == token_to_id_.end() || r == token_to_id_.end() || m == token_to_id_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " (\"", left, "\" \"", right, "\") uses unknown tokens"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    // The first (lowest-rank) occurrence of a pair wins, as in Hugging Face.
    merges_.try_emplace(key, Merge{static_cast<int32_t>(rank), m->second});
  }
  for (const auto& added : spec.added_tokens) {
    if (id_kind_[added.id] == IdKind::kModel && id_token_[added.id] != added.content) {
      return absl::InvalidArgumentError(
          absl::StrCat("added token ", added.content, " reuses vocabulary id ", added.id));
    }
    id_kind_[added.id] = added.special ? IdKind::kSpecial : IdKind::kAdded;
    id_bytes_[added.id] = added.content;
    id_token_[added.id] = added.content;
    token_to_id_[added.content] = added.id;
    added_tokens_.push_back({added.content, added.id});
  }
  matcher_ = std::make_unique<internal::SpecialMatcher>(added_tokens_);
  ASSIGN_OR_RETURN(splitter_, internal::RegexSplitter::Create(spec.split_pattern));
  ignore_merges_ = spec.ignore_merges;
  for (auto [text, slot] :
       {std::pair{&options.bos_token, &bos_id_}, std::pair{&options.eos_token, &eos_id_}}) {
    if (text->empty()) continue;
    const auto it = token_to_id_.find(*text);
    if (it == token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("bos/eos token ", *text, " is not in vocab"));
    }
    *slot = it->second;
  }
  return absl::OkStatus();
}

const BpeTokenizer::Merge* BpeTokenizer::FindMerge(int32_t left, int32_t right) const {
  const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  const auto it = merges_.find(key);
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeTokenizer::EncodeWord(std::string_view word, size_t base, std::vector<int32_t>* ids,
                              std::vector<ByteRange>* offsets) const {
  if (word.size() == 1 || ignore_merges_) {
    const int32_t whole = word.size() == 1 ? byte_id_[static_cast<unsigned char>(word[0])] : -1;
    const auto it = whole >= 0 ? bytes_to_id_.end() : bytes_to_id_.find(internal::ToAbsl(word));
    if (whole >= 0 || it != bytes_to_id_.end()) {
      ids->push_back(whole >= 0 ? whole : it->second);
      if (offsets)
        offsets->push_back({static_cast<int64_t>(base), static_cast<int64_t>(base + word.size())});
      return;
    }
  }
  thread_local std::vector<Symbol> syms;
  const int32_t n = static_cast<int32_t>(word.size());
  syms.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    syms[i] = {byte_id_[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1,
               static_cast<uint32_t>(i), 1};
  }
  auto merge_at = [&](int32_t i, int32_t merged_id) {
    const int32_t j = syms[i].next;
    syms[i].id = merged_id;
    syms[i].len += syms[j].len;
    syms[j].len = 0;
    syms[i].next = syms[j].next;
    if (syms[j].next >= 0) syms[syms[j].next].prev = i;
  };
  if (word.size() <= kLinearMergeLimit) {
    // best_merge[i]: the merge of the pair (i, next(i)), or nullptr.
    thread_local std::vector<const Merge*> best_merge;
    best_merge.resize(n);
    auto merge_of = [&](int32_t i) -> const Merge* {
      return syms[i].next < 0 ? nullptr : FindMerge(syms[i].id, syms[syms[i].next].id);
    };
    for (int32_t i = 0; i < n; ++i) best_merge[i] = merge_of(i);
    for (;;) {
      int32_t best = -1;
      int32_t best_rank = INT32_MAX;
      for (int32_t i = 0; i >= 0; i = syms[i].next) {
        if (best_merge[i] != nullptr && best_merge[i]->rank < best_rank) {
          best_rank = best_merge[i]->rank;
          best = i;
        }
      }
      if (best < 0) break;
      merge_at(best, best_merge[best]->id);
      best_merge[best] = merge_of(best);
      if (syms[best].prev >= 0) best_merge[syms[best].prev] = merge_of(syms[best].prev);
    }
  } else {
    // Candidate merges ordered by (rank, position); stale entries are skipped on pop.
    struct Candidate {
      int32_t rank;
      int32_t pos;
      int32_t left_id;
      int32_t right_id;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](int32_t i) {
      if (i < 0 || syms[i].next < 0) return;
      const int32_t r = syms[syms[i].next].id;
      if (const Merge* m = FindMerge(syms[i].id, r)) heap.push({m->rank, i, syms[i].id, r});
    };
    for (int32_t i = 0; i < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const Symbol& s = syms[c.pos];
      if (s.len == 0 || s.id != c.left_id || s.next < 0 || syms[s.next].id != c.right_id) continue;
      merge_at(c.pos, FindMerge(c.left_id, c.right_id)->id);
      push(syms[c.pos].prev);
      push(c.pos);
    }
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    ids->push_back(syms[i].id);
    if (offsets) {
      const int64_t b = static_cast<int64_t>(base + syms[i].start);
      offsets->push_back({b, b + syms[i].len});
    }
  }
}

absl::Status BpeTokenizer::EncodeInto(std::string_view text, const EncodeOptions& options,
                                      std::vector<int32_t>* ids,
                                      std::vector<ByteRange>* offsets) const {
  if (!internal::IsValidUtf8(text)) {
    return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  }
  ids->reserve(text.size() / 3 + 16);
  if (offsets) offsets->reserve(text.size() / 3 + 16);
  if (options.add_bos && bos_id_.has_value()) {
    ids->push_back(*bos_id_);
    if (offsets) offsets->push_back({0, 0});
  }
  absl::Status status;
  auto encode_text = [&](std::string_view piece, size_t base) {
    if (!status.ok()) return;
    status = splitter_->Split(piece, [&](size_t b, size_t e) {
      EncodeWord(piece.substr(b, e - b), base + b, ids, offsets);
    });
  };
  matcher_->EncodeAround(text, options.parse_special, encode_text, ids, offsets);
  return status;
}

absl::Status BpeTokenizer::AppendTokenBytes(int32_t id, const DecodeOptions& options,
                                            DecodeState* /*state*/, std::string* out) const {
  if (id < 0 || static_cast<size_t>(id) >= id_kind_.size() || id_kind_[id] == IdKind::kUnused) {
    return absl::OutOfRangeError(absl::StrCat("unknown token id ", id));
  }
  if (id_kind_[id] == IdKind::kSpecial && options.skip_special_tokens) return absl::OkStatus();
  out->append(id_bytes_[id]);
  return absl::OkStatus();
}

absl::StatusOr<int32_t> BpeTokenizer::TokenToId(std::string_view token) const {
  const auto it = token_to_id_.find(internal::ToAbsl(token));
  if (it == token_to_id_.end())
    return absl::NotFoundError(absl::StrCat("no token ", internal::ToAbsl(token)));
  return it->second;
}

absl::StatusOr<std::string> BpeTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_kind_.size() || id_kind_[id] == IdKind::kUnused) {
    return absl::OutOfRangeError(absl::StrCat("unknown token id ", id));
  }
  return id_token_[id];
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < id_kind_.size() && id_kind_[id] == IdKind::kSpecial;
}

}  // namespace qllm::tokenizer
