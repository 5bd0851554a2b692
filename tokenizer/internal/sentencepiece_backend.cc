#include "tokenizer/internal/sentencepiece_backend.h"

#include <sentencepiece_processor.h>

#include <utility>

namespace qllm::tokenizer::internal {

struct SentencePieceBackend::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceBackend::SentencePieceBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SentencePieceBackend::~SentencePieceBackend() = default;

std::unique_ptr<SentencePieceBackend> SentencePieceBackend::Load(std::string_view serialized,
                                                                 std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.LoadFromSerializedProto(serialized);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceBackend>(new SentencePieceBackend(std::move(impl)));
}

int SentencePieceBackend::piece_size() const { return impl_->processor.GetPieceSize(); }
std::string SentencePieceBackend::piece(int id) const { return impl_->processor.IdToPiece(id); }

SentencePieceBackend::Type SentencePieceBackend::type(int id) const {
  const auto& p = impl_->processor;
  if (p.IsUnknown(id)) return Type::kUnknown;
  if (p.IsControl(id)) return Type::kControl;
  if (p.IsByte(id)) return Type::kByte;
  if (p.IsUnused(id)) return Type::kUnused;
  return Type::kNormal;
}

int SentencePieceBackend::bos_id() const { return impl_->processor.bos_id(); }
int SentencePieceBackend::eos_id() const { return impl_->processor.eos_id(); }

bool SentencePieceBackend::Encode(std::string_view text, std::vector<int32_t>* ids,
                                  std::vector<uint32_t>* offsets, std::string* error) const {
  if (offsets == nullptr) {
    std::vector<int> out;
    const auto status = impl_->processor.Encode(text, &out);
    if (!status.ok()) {
      *error = status.ToString();
      return false;
    }
    ids->insert(ids->end(), out.begin(), out.end());
    return true;
  }
  const sentencepiece::ImmutableSentencePieceText spt =
      impl_->processor.EncodeAsImmutableProto(text);
  for (size_t i = 0; i < spt.pieces_size(); ++i) {
    const auto piece = spt.pieces(static_cast<int>(i));
    ids->push_back(static_cast<int32_t>(piece.id()));
    offsets->push_back(piece.begin());
    offsets->push_back(piece.end());
  }
  return true;
}

bool SentencePieceBackend::Decode(const std::vector<int32_t>& ids, std::string* text,
                                  std::string* error) const {
  const std::vector<int> in(ids.begin(), ids.end());
  const auto status = impl_->processor.Decode(in, text);
  if (!status.ok()) {
    *error = status.ToString();
    return false;
  }
  return true;
}

}  // namespace qllm::tokenizer::internal
