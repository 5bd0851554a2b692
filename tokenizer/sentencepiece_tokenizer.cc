#include "tokenizer/sentencepiece_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "tokenizer/internal/sentencepiece_backend.h"
#include "tokenizer/internal/special_matcher.h"
#include "tokenizer/internal/strings.h"
#include "tokenizer/internal/utf8.h"
#include "tokenizer/load_tokenizer.h"

namespace qllm::tokenizer {
namespace {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 "▁".

// Parses "<0xAB>" into the byte 0xAB.
std::optional<char> ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return std::nullopt;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    value = value * 16 + digit;
  }
  return static_cast<char>(value);
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(
    std::unique_ptr<internal::SentencePieceBackend> backend)
    : backend_(std::move(backend)) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto tok = FromSerializedModel(buffer.str());
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromSerializedModel(
    std::string_view serialized) {
  std::string error;
  std::unique_ptr<internal::SentencePieceBackend> backend =
      internal::SentencePieceBackend::Load(serialized, &error);
  if (backend == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("not a SentencePiece model: ", error));
  }
  if (backend->piece_size() <= 0) {
    return absl::InvalidArgumentError("SentencePiece model has no pieces");
  }
  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer(std::move(backend)));
  RETURN_IF_ERROR(tok->Init());
  return tok;
}

absl::Status SentencePieceTokenizer::Init() {
  using Type = internal::SentencePieceBackend::Type;
  const int n = backend_->piece_size();
  pieces_.resize(n);
  for (int id = 0; id < n; ++id) {
    Piece& p = pieces_[id];
    p.piece = backend_->piece(id);
    switch (backend_->type(id)) {
      case Type::kUnknown:
      case Type::kControl:
        p.kind = PieceKind::kSpecial;
        p.bytes = p.piece;
        special_.push_back({p.piece, id});
        break;
      case Type::kByte: {
        const std::optional<char> byte = ParseBytePiece(p.piece);
        if (!byte.has_value()) {
          return absl::InvalidArgumentError(absl::StrCat("malformed byte piece ", p.piece));
        }
        p.kind = PieceKind::kByte;
        p.bytes = std::string(1, *byte);
        break;
      }
      case Type::kNormal:
      case Type::kUnused:
        p.kind = PieceKind::kNormal;
        p.bytes = absl::StrReplaceAll(p.piece, {{kSpaceSymbol, " "}});
        break;
    }
    piece_to_id_.emplace(p.piece, id);
  }
  matcher_ = std::make_unique<internal::SpecialMatcher>(special_);
  if (backend_->bos_id() >= 0 && backend_->bos_id() < n) bos_id_ = backend_->bos_id();
  if (backend_->eos_id() >= 0 && backend_->eos_id() < n) eos_id_ = backend_->eos_id();
  return absl::OkStatus();
}

absl::Status SentencePieceTokenizer::EncodeInto(std::string_view text, const EncodeOptions& options,
                                                std::vector<int32_t>* ids,
                                                std::vector<ByteRange>* offsets) const {
  if (!internal::IsValidUtf8(text)) {
    return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  }
  if (options.add_bos && bos_id_.has_value()) {
    ids->push_back(*bos_id_);
    if (offsets) offsets->push_back({0, 0});
  }
  absl::Status status;
  std::vector<uint32_t> spans;
  auto encode_text = [&](std::string_view segment, size_t base) {
    if (!status.ok()) return;
    std::string error;
    spans.clear();
    if (!backend_->Encode(segment, ids, offsets ? &spans : nullptr, &error)) {
      status = absl::InternalError(absl::StrCat("SentencePiece encode failed: ", error));
      return;
    }
    if (offsets) {
      for (size_t i = 0; i + 1 < spans.size(); i += 2) {
        offsets->push_back(
            {static_cast<int64_t>(base + spans[i]), static_cast<int64_t>(base + spans[i + 1])});
      }
    }
  };
  matcher_->EncodeAround(text, options.parse_special, encode_text, ids, offsets);
  return status;
}

absl::Status SentencePieceTokenizer::AppendTokenBytes(int32_t id, const DecodeOptions& options,
                                                      DecodeState* state, std::string* out) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) {
    return absl::OutOfRangeError(absl::StrCat("unknown token id ", id));
  }
  const Piece& p = pieces_[id];
  switch (p.kind) {
    case PieceKind::kSpecial:
      if (!options.skip_special_tokens) out->append(p.bytes);
      state->at_segment_start = true;
      return absl::OkStatus();
    case PieceKind::kByte:
      out->append(p.bytes);
      break;
    case PieceKind::kNormal:
      // The segment's first piece carries SentencePiece's dummy-prefix space.
      if (state->at_segment_start && p.bytes.starts_with(' ')) {
        out->append(p.bytes, 1);
      } else {
        out->append(p.bytes);
      }
      break;
  }
  state->at_segment_start = false;
  return absl::OkStatus();
}

absl::StatusOr<int32_t> SentencePieceTokenizer::TokenToId(std::string_view token) const {
  const auto it = piece_to_id_.find(internal::ToAbsl(token));
  if (it == piece_to_id_.end())
    return absl::NotFoundError(absl::StrCat("no piece ", internal::ToAbsl(token)));
  return it->second;
}

absl::StatusOr<std::string> SentencePieceTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) {
    return absl::OutOfRangeError(absl::StrCat("unknown token id ", id));
  }
  return pieces_[id].piece;
}

bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < pieces_.size() &&
         pieces_[id].kind == PieceKind::kSpecial;
}

absl::StatusOr<std::string> SentencePieceTokenizer::DecodeWithLibrary(
    const std::vector<int32_t>& ids) const {
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) {
      return absl::OutOfRangeError(absl::StrCat("unknown token id ", id));
    }
  }
  std::string text;
  std::string error;
  if (!backend_->Decode(ids, &text, &error)) {
    return absl::InternalError(absl::StrCat("SentencePiece decode failed: ", error));
  }
  return text;
}

namespace {

// Makes LoadTokenizer read tokenizer.model in every binary that links this file.
const bool kRegistered = [] {
  SetSentencePieceLoader([](const std::string& path) -> absl::StatusOr<std::unique_ptr<Tokenizer>> {
    ASSIGN_OR_RETURN(std::unique_ptr<SentencePieceTokenizer> sp,
                     SentencePieceTokenizer::FromFile(path));
    return std::unique_ptr<Tokenizer>(std::move(sp));
  });
  return true;
}();

}  // namespace

}  // namespace qllm::tokenizer
