// Saving and restoring a session's attention state (ModelShard::SaveSession / RestoreSession):
// a document prefilled once without a question, restored into a new session that asks a late
// question, behaves bit for bit like one session that never left memory.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/status_macros.h"
#include "memstore/block_store.h"
#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/memstore_block_storage.h"
#include "worker/model_shard.h"

namespace qllm::worker {
namespace {

using ::qllm::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kTenant = 3;
constexpr int64_t kDocLen = 300;

class SessionStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = qllm::testing::MakeScratchDir();
    std::filesystem::create_directories(dir_ + "/model");
    qllm::testing::WriteTinyModel(dir_ + "/model", spec_);
    auto shard = ModelShard::Load(dir_ + "/model");
    ASSERT_OK(shard.status());
    shard_ = std::move(shard).value();
    memstore::BlockStoreOptions o;
    o.path = dir_ + "/db";
    o.model_fingerprint = "tiny";
    o.host_cache_bytes = 64 << 10;  // Small: most reads go to RocksDB.
    auto store = memstore::BlockStore::Open(o);
    ASSERT_OK(store.status());
    store_ = std::move(store).value();
    disk_ = std::make_unique<MemstoreBlockStorage>(store_.get(), kTenant);
    for (int i = 0; i < kDocLen; ++i) doc_.push_back((i * 7919 + 13) % spec_.vocab);
    for (int i = 0; i < 40; ++i) suffix_.push_back((i * 31 + 5) % spec_.vocab);
    for (int i = 0; i < 6; ++i) decode_.push_back((i * 11 + 2) % spec_.vocab);
  }
  void TearDown() override {
    disk_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Blocks are cut (8 sinks, window 32, blocks of 8) and selected (2 of them per chunk).
  static SessionOptions Options(AttentionMode mode, BlockStorage* storage, uint64_t id) {
    SessionOptions o;
    o.memory.mode = mode;
    o.memory.n_init = 8;
    o.memory.n_local = 32;
    o.memory.block_size = 8;
    o.memory.topk = 2;
    o.memory.repr_topk = 2;
    o.memory.exc_block_size = 16;
    o.memory.question_weight = 4.0f;
    o.storage = storage;
    o.session_id = id;
    o.record_selections = true;
    return o;
  }
  // The same options asking a late question that the suffix holds; it crosses the boundary of
  // the suffix's first two execution chunks ([300, 316) and [316, 332)).
  static SessionOptions Asking(SessionOptions o) {
    o.question = QuestionSpan{kDocLen + 5, kDocLen + 20};
    o.late_question = true;
    return o;
  }

  // Runs `tokens` through the shard in one Forward call and appends every position's logits.
  absl::Status Step(ShardSession* s, std::span<const int32_t> tokens, std::vector<float>* logits) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    std::vector<float> hidden(n * spec_.hidden), out(n * spec_.vocab);
    RETURN_IF_ERROR(shard_->Embed(tokens, hidden.data()));
    RETURN_IF_ERROR(shard_->Forward(s, hidden.data(), n));
    RETURN_IF_ERROR(shard_->Logits(hidden.data(), n, out.data()));
    logits->insert(logits->end(), out.begin(), out.end());
    return absl::OkStatus();
  }
  // The suffix in one call, then the decode tokens one at a time.
  absl::Status AskAndDecode(ShardSession* s, std::vector<float>* logits) {
    RETURN_IF_ERROR(Step(s, suffix_, logits));
    for (const int32_t& t : decode_) RETURN_IF_ERROR(Step(s, {&t, 1}, logits));
    return absl::OkStatus();
  }

  // Prefills the document in a session of `ingest` and returns its saved state. A document
  // owner on the memstore is written as a memstore document, with the blobs as its metadata,
  // and the blobs come back from the store.
  absl::StatusOr<std::vector<std::string>> Ingest(const SessionOptions& ingest) {
    const bool document = ingest.storage == disk_.get() && (ingest.session_id & kDocumentOwnerBit);
    const uint64_t doc = ingest.session_id & ~kDocumentOwnerBit;
    if (document) RETURN_IF_ERROR(store_->BeginDocument(kTenant, doc));
    ASSIGN_OR_RETURN(auto session, shard_->NewSession(ingest));
    std::vector<float> logits;
    RETURN_IF_ERROR(Step(session.get(), doc_, &logits));
    ASSIGN_OR_RETURN(std::vector<std::string> blobs, shard_->SaveSession(*session));
    if (!document) return blobs;
    const memstore::OwnerId owner = memstore::OwnerId::Document(kTenant, doc);
    for (size_t l = 0; l < blobs.size(); ++l) {
      RETURN_IF_ERROR(store_->PutMetadata(owner, static_cast<uint32_t>(l), /*tag=*/1, blobs[l]));
    }
    RETURN_IF_ERROR(store_->CommitDocument(kTenant, doc));
    for (size_t l = 0; l < blobs.size(); ++l) {
      ASSIGN_OR_RETURN(blobs[l], store_->GetMetadata(owner, static_cast<uint32_t>(l), 1));
    }
    return blobs;
  }

  qllm::testing::TinyModelSpec spec_;
  std::string dir_;
  std::unique_ptr<ModelShard> shard_;
  std::unique_ptr<memstore::BlockStore> store_;
  std::unique_ptr<MemstoreBlockStorage> disk_;
  InMemoryBlockStorage host_;
  std::vector<int32_t> doc_, suffix_, decode_;
};

// The selections of chunks at or after `from`.
std::vector<ChunkSelection> From(const std::vector<ChunkSelection>& all, int64_t from) {
  std::vector<ChunkSelection> out;
  for (const ChunkSelection& s : all) {
    if (s.chunk_begin >= from) out.push_back(s);
  }
  return out;
}

void ExpectSameSelections(const std::vector<ChunkSelection>& a,
                          const std::vector<ChunkSelection>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].layer, b[i].layer) << i;
    EXPECT_EQ(a[i].chunk_begin, b[i].chunk_begin) << i;
    EXPECT_EQ(a[i].candidates, b[i].candidates) << i;
    EXPECT_EQ(a[i].blocks, b[i].blocks) << i;
    EXPECT_EQ(a[i].scores, b[i].scores) << i;
    EXPECT_EQ(a[i].block_starts, b[i].block_starts) << i;
  }
}

TEST_F(SessionStateTest, RestoredDocumentAnswersLikeOneUninterruptedSession) {
  uint64_t next_id = 1;
  for (AttentionMode mode : {AttentionMode::kFull, AttentionMode::kStreaming,
                             AttentionMode::kInfLlm, AttentionMode::kQllm}) {
    for (BlockStorage* storage : std::vector<BlockStorage*>{&host_, disk_.get()}) {
      SCOPED_TRACE(::testing::Message()
                   << AttentionModeName(mode)
                   << (storage == &host_ ? " in host memory" : " on memstore"));
      // A: one session reads the document, then the question, the rest of the suffix and the
      // decode steps.
      const SessionOptions ask = Asking(Options(mode, storage, next_id++));
      ASSERT_OK_AND_ASSIGN(auto a, shard_->NewSession(ask));
      std::vector<float> a_doc, a_answer;
      ASSERT_OK(Step(a.get(), doc_, &a_doc));
      ASSERT_OK(AskAndDecode(a.get(), &a_answer));

      // B: the document is ingested without a question (qllm needs one, so a qllm document is
      // ingested in infllm mode), saved, and restored into a new asking session.
      const AttentionMode ingest_mode =
          mode == AttentionMode::kQllm ? AttentionMode::kInfLlm : mode;
      const uint64_t owner = kDocumentOwnerBit | next_id++;
      ASSERT_OK_AND_ASSIGN(std::vector<std::string> blobs,
                           Ingest(Options(ingest_mode, storage, owner)));
      ASSERT_EQ(blobs.size(), 3u);
      SessionOptions restored = ask;
      restored.session_id = next_id++;
      ASSERT_OK_AND_ASSIGN(auto b, shard_->RestoreSession(restored, blobs));
      EXPECT_EQ(b->position(), kDocLen);
      std::vector<float> b_answer;
      ASSERT_OK(AskAndDecode(b.get(), &b_answer));

      EXPECT_EQ(a_answer, b_answer);  // Bit-identical.
      ExpectSameSelections(From(a->selections(), kDocLen), b->selections());
      if (mode != AttentionMode::kFull) {
        EXPECT_GT(b->memory(0)->num_blocks(), 0);
        EXPECT_TRUE(b->memory(0)->has_question_vector());
        EXPECT_EQ(a->memory(0)->question_vector(), b->memory(0)->question_vector());
      }
      if (mode == AttentionMode::kInfLlm || mode == AttentionMode::kQllm) {
        size_t selected = 0;
        for (const ChunkSelection& s : b->selections()) selected += s.blocks.size();
        EXPECT_GT(selected, 0u);
      }
    }
  }
}

TEST_F(SessionStateTest, LateQuestionSteersRetrievalAndZeroWeightIsInfLlm) {
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> blobs,
                       Ingest(Options(AttentionMode::kInfLlm, &host_, kDocumentOwnerBit | 1)));
  auto answer = [&](AttentionMode mode, float weight,
                    std::vector<ChunkSelection>* sels) -> absl::StatusOr<std::vector<float>> {
    SessionOptions o = Asking(Options(mode, &host_, 2));
    o.memory.question_weight = weight;
    ASSIGN_OR_RETURN(auto s, shard_->RestoreSession(o, blobs));
    std::vector<float> logits;
    RETURN_IF_ERROR(AskAndDecode(s.get(), &logits));
    for (int l = 0; l < 3; ++l) {
      if (!s->memory(l)->has_question_vector()) return absl::InternalError("no question vector");
    }
    *sels = s->selections();
    return logits;
  };
  std::vector<ChunkSelection> inf, zero, q;
  ASSERT_OK_AND_ASSIGN(auto l_inf, answer(AttentionMode::kInfLlm, 4.0f, &inf));
  ASSERT_OK_AND_ASSIGN(auto l_zero, answer(AttentionMode::kQllm, 0.0f, &zero));
  ASSERT_OK_AND_ASSIGN(auto l_q, answer(AttentionMode::kQllm, 4.0f, &q));
  EXPECT_EQ(l_inf, l_zero);
  ExpectSameSelections(inf, zero);
  // Chunks that retrieve after the question completes (the suffix's last chunk and the decode
  // steps) see the question term.
  ASSERT_EQ(q.size(), inf.size());
  int differ = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i].chunk_begin < kDocLen + 32) {
      EXPECT_EQ(q[i].blocks, inf[i].blocks) << i;  // Before Q exists the weight is unused.
    } else {
      differ += q[i].scores != inf[i].scores;
    }
  }
  EXPECT_GT(differ, 0);
  EXPECT_NE(l_q, l_inf);
}

TEST_F(SessionStateTest, LateQuestionNeedsTheFlagAndFitsTheWindow) {
  // Without late_question a question after the sinks fill is refused as before.
  SessionOptions o = Options(AttentionMode::kQllm, &host_, 1);
  o.question = QuestionSpan{kDocLen + 5, kDocLen + 20};
  ASSERT_OK_AND_ASSIGN(auto s, shard_->NewSession(o));
  std::vector<float> logits;
  EXPECT_THAT(Step(s.get(), doc_, &logits), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     HasSubstr("before the attention sinks fill")));
  // A late question must fit in the local window (its tokens are still pending when Q forms).
  o.late_question = true;
  o.question = QuestionSpan{kDocLen, kDocLen + 33};
  EXPECT_THAT(shard_->NewSession(o), StatusIs(absl::StatusCode::kInvalidArgument));
  o.question = QuestionSpan{kDocLen, kDocLen + 32};
  EXPECT_OK(shard_->NewSession(o).status());
  // A late question whose tokens arrive as the sinks first fill (after token 48) is formed by the
  // chunk that completes it.
  o.question = QuestionSpan{20, 50};
  ASSERT_OK_AND_ASSIGN(s, shard_->NewSession(o));
  ASSERT_OK(Step(s.get(), std::span(doc_).first(48), &logits));
  EXPECT_FALSE(s->memory(0)->has_question_vector());
  ASSERT_OK(Step(s.get(), std::span(doc_).subspan(48), &logits));
  EXPECT_TRUE(s->memory(0)->has_question_vector());
  // A question complete when the sinks first fill takes the usual path (step 5b): late_question
  // changes nothing.
  std::vector<float> usual, late;
  o.question = QuestionSpan{1, 12};
  for (bool flag : {false, true}) {
    o.late_question = flag;
    ASSERT_OK_AND_ASSIGN(s, shard_->NewSession(o));
    ASSERT_OK(Step(s.get(), doc_, flag ? &late : &usual));
  }
  EXPECT_EQ(usual, late);
}

TEST_F(SessionStateTest, ShardsSaveAndRestoreTheirOwnLayers) {
  model::LoadOptions first{.layer_begin = 0, .layer_end = 1, .load_head = false};
  model::LoadOptions rest{.layer_begin = 1, .layer_end = 3, .load_embedding = false};
  ASSERT_OK_AND_ASSIGN(auto s0, ModelShard::Load(dir_ + "/model", first));
  ASSERT_OK_AND_ASSIGN(auto s1, ModelShard::Load(dir_ + "/model", rest));
  const SessionOptions o = Options(AttentionMode::kInfLlm, &host_, kDocumentOwnerBit | 9);
  ASSERT_OK_AND_ASSIGN(auto a0, s0->NewSession(o));
  ASSERT_OK_AND_ASSIGN(auto a1, s1->NewSession(o));
  std::vector<float> hidden(kDocLen * spec_.hidden);
  ASSERT_OK(s0->Embed(doc_, hidden.data()));
  ASSERT_OK(s0->Forward(a0.get(), hidden.data(), kDocLen));
  ASSERT_OK(s1->Forward(a1.get(), hidden.data(), kDocLen));
  ASSERT_OK_AND_ASSIGN(auto blobs0, s0->SaveSession(*a0));
  ASSERT_OK_AND_ASSIGN(auto blobs1, s1->SaveSession(*a1));
  ASSERT_EQ(blobs0.size(), 1u);
  ASSERT_EQ(blobs1.size(), 2u);
  // The whole model restores from the two shards' blobs in layer order.
  std::vector<std::string> all = blobs0;
  all.insert(all.end(), blobs1.begin(), blobs1.end());
  EXPECT_OK(shard_->RestoreSession(o, all).status());
  // A shard refuses another layer's blob.
  EXPECT_THAT(s0->RestoreSession(o, std::span(blobs1).first(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("layer")));
}

TEST_F(SessionStateTest, RejectsDamagedAndMismatchedStates) {
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> blobs,
                       Ingest(Options(AttentionMode::kInfLlm, &host_, 5)));
  const SessionOptions base = Options(AttentionMode::kInfLlm, &host_, 6);
  auto restore = [&](const SessionOptions& o, std::vector<std::string> b) {
    return shard_->RestoreSession(o, b).status();
  };
  EXPECT_OK(restore(base, blobs));

  // Damage: truncated anywhere, a wrong magic, an inconsistent position.
  for (size_t size :
       {size_t{0}, size_t{20}, size_t{40}, blobs[1].size() / 2, blobs[1].size() - 1}) {
    std::vector<std::string> b = blobs;
    b[1].resize(size);
    EXPECT_THAT(restore(base, b), StatusIs(absl::StatusCode::kDataLoss)) << size;
  }
  for (size_t at : {size_t{0}, size_t{32}}) {  // The shard header's and the layer state's magic.
    std::vector<std::string> b = blobs;
    b[2][at] ^= 0x20;
    EXPECT_THAT(restore(base, b), StatusIs(absl::StatusCode::kDataLoss)) << at;
  }
  {
    std::vector<std::string> b = blobs;
    b[0] += "x";
    EXPECT_THAT(restore(base, b), StatusIs(absl::StatusCode::kDataLoss));
    b = blobs;
    b[0][24] ^= 1;  // The position in the shard header.
    EXPECT_THAT(restore(base, b), StatusIs(absl::StatusCode::kDataLoss));
    b = blobs;
    b[0][32 + 12 + 11 * 8] ^= 4;  // The layer state's token count.
    EXPECT_THAT(restore(base, b), StatusIs(absl::StatusCode::kDataLoss));
  }

  // Wrong blob count; blobs out of layer order.
  EXPECT_THAT(restore(base, {blobs[0], blobs[1]}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(restore(base, {blobs[1], blobs[0], blobs[2]}),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  // Layout mismatches name the field; retrieval settings may differ.
  SessionOptions o = base;
  o.memory.block_size = 16;
  EXPECT_THAT(restore(o, blobs),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("block_size=8")));
  o = base;
  o.memory.n_local = 64;
  EXPECT_THAT(restore(o, blobs),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("n_local")));
  o = base;
  o.memory.topk = 5;
  o.memory.question_weight = 1.0f;
  EXPECT_OK(restore(o, blobs));
  o = Asking(Options(AttentionMode::kQllm, &host_, 6));
  EXPECT_OK(restore(o, blobs));

  // Modes: streaming and the block modes do not mix, nor does full attention with either.
  ASSERT_OK_AND_ASSIGN(auto streaming, Ingest(Options(AttentionMode::kStreaming, &host_, 7)));
  EXPECT_THAT(restore(Asking(Options(AttentionMode::kQllm, &host_, 8)), streaming),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("streaming")));
  EXPECT_THAT(restore(Options(AttentionMode::kStreaming, &host_, 8), blobs),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(auto full, Ingest(Options(AttentionMode::kFull, &host_, 9)));
  EXPECT_THAT(restore(base, full), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(restore(Options(AttentionMode::kFull, &host_, 10), blobs),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_OK(restore(Options(AttentionMode::kFull, &host_, 10), full));
  {
    std::vector<std::string> b = full;
    b[1].resize(b[1].size() - 4);
    EXPECT_THAT(restore(Options(AttentionMode::kFull, &host_, 10), b),
                StatusIs(absl::StatusCode::kDataLoss));
  }

  // A question of a restored session comes after the document and needs late_question.
  o = Asking(base);
  o.late_question = false;
  EXPECT_THAT(restore(o, blobs), StatusIs(absl::StatusCode::kInvalidArgument));
  o = Asking(base);
  o.question = QuestionSpan{kDocLen - 4, kDocLen + 4};
  EXPECT_THAT(restore(o, blobs), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::worker
