#include "worker/context_memory.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "cuda/gemm.h"
#include "cuda/rope.h"
#include "cuda/softmax_ref.h"

namespace qllm::worker {
namespace {

// Rotates `rows` rows of `heads` heads (row stride `stride`) to `positions`.
void Rotate(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t stride,
            const int64_t* positions, const double* inv_freq) {
  cuda::RopeParams p;
  p.x = x;
  p.positions = positions;
  p.inv_freq = inv_freq;
  p.tokens = rows;
  p.heads = heads;
  p.head_dim = head_dim;
  p.row_stride = stride;
  absl::Status s = cuda::RopeRef(p);
  QLLM_CHECK(s.ok()) << s;
}

// Indices of the k largest of values[0..n) (stride `stride`), largest first; ties go to the
// lower index.
void TopIndices(const float* values, int64_t n, int64_t stride, int64_t k,
                std::vector<int64_t>* out) {
  out->resize(n);
  std::iota(out->begin(), out->end(), 0);
  k = std::min(k, n);
  std::partial_sort(out->begin(), out->begin() + k, out->end(), [&](int64_t a, int64_t b) {
    const float va = values[a * stride], vb = values[b * stride];
    return va > vb || (va == vb && a < b);
  });
  out->resize(k);
}

// Saved layer states: host-order binary, which the format fixes as little-endian.
static_assert(std::endian::native == std::endian::little, "saved layer states are little-endian");
constexpr char kStateMagic[8] = {'Q', 'L', 'L', 'M', 'L', 'A', 'Y', 'R'};
constexpr uint32_t kStateVersion = 1;

// Appends fixed-size values and arrays to a string.
class BlobWriter {
 public:
  explicit BlobWriter(std::string* out) : out_(out) {}
  template <typename T>
  void Put(T value) {
    static_assert(std::is_arithmetic_v<T>);
    out_->append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  template <typename T>
  void PutArray(const T* data, int64_t n) {
    if (n > 0) out_->append(reinterpret_cast<const char*>(data), n * sizeof(T));
  }

 private:
  std::string* const out_;
};

// Reads what BlobWriter wrote; each Get returns false when the blob is too short.
class BlobReader {
 public:
  explicit BlobReader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* value) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(value, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  // Reads rows * width values; false for a negative or too large count (no overflow).
  template <typename T>
  bool GetRows(int64_t rows, int64_t width, std::vector<T>* out) {
    if (rows < 0 || static_cast<uint64_t>(rows) > in_.size() / (width * sizeof(T))) return false;
    out->resize(rows * width);
    if (rows > 0) std::memcpy(out->data(), in_.data(), rows * width * sizeof(T));
    in_.remove_prefix(rows * width * sizeof(T));
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

// The settings and dimensions a saved state must share with the memory it is loaded into, in
// saved order. The mode is saved first and checked by category instead (streaming vs blocks).
struct LayoutField {
  const char* name;
  int64_t value;
};
std::array<LayoutField, 10> Layout(const MemoryConfig& c, bool pending_global, int32_t layer,
                                   int64_t heads, int64_t kv_heads, int64_t head_dim) {
  return {{{"n_init", c.n_init},
           {"n_local", c.n_local},
           {"block_size", c.block_size},
           {"repr_topk", c.repr_topk},
           {"exc_block_size", c.exc_block_size},
           {"far_pending_global", pending_global ? 1 : 0},
           {"layer", layer},
           {"heads", heads},
           {"kv_heads", kv_heads},
           {"head_dim", head_dim}}};
}

absl::Status Truncated(const char* what) {
  return absl::DataLossError(absl::StrCat("saved layer state is truncated (", what, ")"));
}

}  // namespace

LayerMemoryDims::LayerMemoryDims(const MemoryConfig& config, const LayerShape& shape)
    : heads_(shape.heads),
      kv_heads_(shape.kv_heads),
      head_dim_(shape.head_dim),
      group_(shape.heads / shape.kv_heads),
      q_dim_(static_cast<int64_t>(shape.heads) * shape.head_dim),
      kv_dim_(static_cast<int64_t>(shape.kv_heads) * shape.head_dim),
      scale_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape.head_dim)))),
      w_(config.effective_question_weight()),
      n_local_(config.n_local),
      pending_global_(config.mode != AttentionMode::kStreaming && config.far_pending_global),
      topk_(config.mode == AttentionMode::kStreaming ? 0 : config.topk) {}

LayerMemory::LayerMemory(const MemoryConfig& config, const LayerShape& shape, int32_t layer,
                         uint64_t session, std::optional<QuestionSpan> question, bool late_question,
                         BlockStorage* storage, const double* inv_freq)
    : LayerMemoryDims(config, shape),
      config_(config),
      layer_(layer),
      session_(session),
      question_(question),
      late_question_(late_question),
      storage_(storage),
      inv_freq_(inv_freq) {
  QLLM_CHECK(config.uses_memory());
  if (question_.has_value()) {
    question_q_.assign((question_->end - question_->begin) * q_dim_, 0.0f);
  }
}

int64_t LayerMemory::MemoryBytes() const {
  const size_t floats = init_k_.capacity() + init_v_.capacity() + pk_.capacity() + pkr_.capacity() +
                        pv_.capacity() + ps_.capacity() + reprs_.capacity() +
                        question_q_.capacity() + global_k_.capacity() + global_v_.capacity();
  return static_cast<int64_t>(floats * sizeof(float) +
                              (block_start_.capacity() + block_owner_.capacity()) * 8);
}

absl::Status LayerMemory::Process(const float* qkv, int64_t stride, int64_t n, int64_t start,
                                  float* out, std::vector<ChunkSelection>* record) {
  QLLM_CHECK(start == end_) << "chunk at " << start << " after " << end_ << " tokens";
  // 1. Queries at their own positions (local keys) and at n_local - 1 (global keys).
  std::vector<float> q_loc(n * q_dim_), q_glob(n * q_dim_);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&q_loc[i * q_dim_], qkv + i * stride, q_dim_ * sizeof(float));
  }
  q_glob = q_loc;
  std::vector<int64_t> positions(n), fixed(n, n_local_ - 1);
  std::iota(positions.begin(), positions.end(), start);
  Rotate(q_loc.data(), n, heads_, head_dim_, q_dim_, positions.data(), inv_freq_);
  Rotate(q_glob.data(), n, heads_, head_dim_, q_dim_, fixed.data(), inv_freq_);
  AppendPending(qkv, stride, n, start);

  // 2. Retrieval, once per chunk, before attention (this chunk's own blocks do not exist yet).
  std::vector<int32_t> ids;
  std::vector<float> scores;
  if (topk_ > 0 && !block_start_.empty()) Retrieve(q_glob.data(), n, &ids, &scores);
  const int64_t n_init = init_size();
  const int64_t bs = config_.block_size;
  const int64_t ng = n_init + static_cast<int64_t>(ids.size()) * bs;
  global_k_.resize(ng * kv_dim_);
  global_v_.resize(ng * kv_dim_);
  std::copy(init_k_.begin(), init_k_.end(), global_k_.begin());
  std::copy(init_v_.begin(), init_v_.end(), global_v_.begin());
  if (!ids.empty()) {
    std::vector<BlockId> keys;
    for (int32_t b : ids) keys.push_back(BlockId{block_owner_[b], layer_, b});
    RETURN_IF_ERROR(storage_->MultiGet(keys, bs * kv_dim_, global_k_.data() + n_init * kv_dim_,
                                       global_v_.data() + n_init * kv_dim_));
  }
  if (record != nullptr) {
    ChunkSelection sel;
    sel.layer = layer_;
    sel.chunk_begin = start;
    sel.chunk_end = start + n;
    sel.candidates = num_blocks();
    sel.blocks = ids;
    sel.scores = scores;
    for (int32_t b : ids) sel.block_starts.push_back(block_start_[b]);
    record->push_back(std::move(sel));
  }

  // 3-4. Two-stage attention with one joint softmax, and local-score accumulation.
  Attend(q_loc.data(), q_glob.data(), n, start, ng, out);
  // 5-6. Commit.
  return Commit();
}

void LayerMemory::AppendPending(const float* qkv, int64_t stride, int64_t n, int64_t start) {
  const int64_t count = end_ - p0_;
  if (pb_ > 0 && pb_ >= count) {  // Compact: move the live rows to the front.
    std::memmove(pk_.data(), pk(0), count * kv_dim_ * sizeof(float));
    std::memmove(pkr_.data(), pkr(0), count * kv_dim_ * sizeof(float));
    std::memmove(pv_.data(), pv(0), count * kv_dim_ * sizeof(float));
    std::memmove(ps_.data(), ps(0), count * heads_ * sizeof(float));
    pb_ = 0;
  }
  const size_t rows = pb_ + count + n;
  if (pk_.size() < rows * kv_dim_) {
    pk_.resize(rows * kv_dim_);
    pkr_.resize(rows * kv_dim_);
    pv_.resize(rows * kv_dim_);
    ps_.resize(rows * heads_);
  }
  for (int64_t i = 0; i < n; ++i) {
    const float* row = qkv + i * stride;
    std::memcpy(pk(count + i), row + q_dim_, kv_dim_ * sizeof(float));
    std::memcpy(pkr(count + i), row + q_dim_, kv_dim_ * sizeof(float));
    std::memcpy(pv(count + i), row + q_dim_ + kv_dim_, kv_dim_ * sizeof(float));
    std::fill(ps(count + i), ps(count + i) + heads_, 0.0f);
    const int64_t pos = start + i;
    if (question_.has_value() && question_vector_.empty() && pos >= question_->begin &&
        pos < question_->end) {
      std::memcpy(&question_q_[(pos - question_->begin) * q_dim_], row, q_dim_ * sizeof(float));
    }
  }
  std::vector<int64_t> positions(n);
  std::iota(positions.begin(), positions.end(), start);
  Rotate(pkr(count), n, kv_heads_, head_dim_, kv_dim_, positions.data(), inv_freq_);
  end_ += n;
}

void LayerMemory::Retrieve(const float* q_glob, int64_t n, std::vector<int32_t>* ids,
                           std::vector<float>* scores) const {
  const int64_t num = num_blocks();
  std::vector<float> qbar(q_dim_, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < q_dim_; ++d) qbar[d] += q_glob[i * q_dim_ + d];
  }
  for (float& x : qbar) x /= static_cast<float>(n);
  std::vector<float> s(num);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, num, q_dim_, 1.0f, reprs_.data(), q_dim_, qbar.data(), 1,
              0.0f, s.data(), 1);
  if (w_ != 0.0f && !question_vector_.empty()) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, num, q_dim_, w_, reprs_.data(), q_dim_,
                question_vector_.data(), 1, 1.0f, s.data(), 1);
  }
  std::vector<int64_t> top;
  TopIndices(s.data(), num, 1, topk_, &top);
  for (int64_t b : top) {
    ids->push_back(static_cast<int32_t>(b));
    scores->push_back(s[b]);
  }
}

void LayerMemory::Attend(const float* q_loc, const float* q_glob, int64_t n, int64_t start,
                         int64_t ng, float* out) {
  const int64_t P = end_ - p0_;
  const int64_t width = ng + P;
  const int64_t nl = n_local_;
  // Pending tokens beyond the window exist only if the oldest one is far from the last query.
  const bool any_far = pending_global_ && (start + n - 1) - p0_ >= nl;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const float* kg = global_k_.data();
  const float* vg = global_v_.data();
  const float* pk0 = pk(0);
  const float* pkr0 = pkr(0);
  const float* pv0 = pv(0);
  float* ps0 = ps(0);
#pragma omp parallel
  {
    std::vector<float> s(n * width), far(any_far ? n * P : 0), mass(P);
#pragma omp for schedule(dynamic, 1)
    for (int64_t h = 0; h < heads_; ++h) {
      const int64_t g = h / group_;
      const float* qg = q_glob + h * head_dim_;
      const float* ql = q_loc + h * head_dim_;
      float* sp = s.data() + ng;  // Pending part of each row.
      std::fill(mass.begin(), mass.end(), 0.0f);
      if (ng > 0) {
        cuda::Sgemm(true, n, ng, head_dim_, scale_, qg, q_dim_, kg + g * head_dim_, kv_dim_, 0.0f,
                    s.data(), width);
      }
      cuda::Sgemm(true, n, P, head_dim_, scale_, ql, q_dim_, pkr0 + g * head_dim_, kv_dim_, 0.0f,
                  sp, width);
      if (any_far) {
        cuda::Sgemm(true, n, P, head_dim_, scale_, qg, q_dim_, pk0 + g * head_dim_, kv_dim_, 0.0f,
                    far.data(), P);
      }
      // For query i, pending key j is local for j in [lo_i, hi_i] (distance < n_local),
      // global ("far") below lo_i, and in the future above hi_i.
      for (int64_t i = 0; i < n; ++i) {
        float* row = s.data() + i * width;
        float* prow = row + ng;
        const int64_t hi = start + i - p0_;
        const int64_t lo = std::max<int64_t>(0, hi - nl + 1);
        const int64_t far_end = any_far ? lo : 0;
        std::copy(far.data() + i * P, far.data() + i * P + far_end, prow);
        std::fill(prow + far_end, prow + lo, neg_inf);
        std::fill(prow + hi + 1, prow + P, 0.0f);
        // Softmax over [0, ng + hi]; entries at -inf become 0.
        cuda::SoftmaxRow(row, ng + hi + 1);
        // Local scores: the mass each local key received (step 4).
        for (int64_t j = lo; j <= hi; ++j) mass[j] += prow[j];
      }
      float* oh = out + h * head_dim_;
      if (ng > 0) {
        cuda::Sgemm(false, n, head_dim_, ng, 1.0f, s.data(), width, vg + g * head_dim_, kv_dim_,
                    0.0f, oh, q_dim_);
      }
      cuda::Sgemm(false, n, head_dim_, P, 1.0f, sp, width, pv0 + g * head_dim_, kv_dim_,
                  ng > 0 ? 1.0f : 0.0f, oh, q_dim_);
      for (int64_t j = 0; j < P; ++j) ps0[j * heads_ + h] += mass[j];
    }
  }
}

absl::StatusOr<CommitPlan> PlanCommit(const MemoryConfig& config,
                                      const std::optional<QuestionSpan>& question,
                                      bool late_question, bool question_formed, bool init_ran,
                                      int64_t init_size, int64_t p0, int64_t end) {
  CommitPlan plan;
  const bool want_question = question.has_value() && !question_formed;
  // b (late question). The sinks started filling before the span was complete: Q is formed by
  // the chunk that completes it, before any of this commit's tokens leave pending.
  plan.question_first = want_question && late_question && init_ran && question->end <= end;
  // a. Fill init from the oldest pending tokens while it has room and more than n_local
  //    tokens are pending.
  plan.move = std::max<int64_t>(
      0, std::min<int64_t>(config.n_init - init_size, (end - p0) - config.n_local));
  // b. The first time (a) runs: the question vector, from the scores at this moment. A late
  //    question that is not complete yet waits for the branch above.
  if (plan.move > 0 && !init_ran && want_question && !(late_question && question->end > end)) {
    if (question->end > end) {
      return absl::InvalidArgumentError(
          absl::StrCat("the question span [", question->begin, ", ", question->end,
                       ") must be processed before the attention sinks fill (after token ", end,
                       "): put the question at the start of the first prefill call"));
    }
    plan.question_at_sinks = true;
  }
  return plan;
}

absl::Status LayerMemory::Commit() {
  ASSIGN_OR_RETURN(const CommitPlan plan,
                   PlanCommit(config_, question_, late_question_, !question_vector_.empty(),
                              init_ran_, init_size(), p0_, end_));
  if (plan.question_first) ComputeQuestionVector();
  if (plan.move > 0) {
    const int64_t move = plan.move;
    if (plan.question_at_sinks) ComputeQuestionVector();
    init_ran_ = true;
    init_k_.insert(init_k_.end(), pk(0), pk(0) + move * kv_dim_);
    init_v_.insert(init_v_.end(), pv(0), pv(0) + move * kv_dim_);
    PopPending(move);
  }
  // c. Cut blocks while the tokens older than the window number at least block_size.
  while ((end_ - p0_) - config_.block_size >= n_local_) RETURN_IF_ERROR(CutBlock());
  // 6. The window needs no trimming: local keys are chosen by distance.
  return absl::OkStatus();
}

void LayerMemory::ComputeQuestionVector() {
  const int64_t qs = question_->begin, nq = question_->end - question_->begin;
  // Token t sits at pending index t - p0_. Before the sinks first fill nothing has left pending;
  // a late question of at most n_local tokens is formed by the commit that completes it, and
  // every earlier commit left at least n_local tokens pending.
  QLLM_CHECK(qs >= p0_) << "question token " << qs << " left pending (first pending " << p0_ << ")";
  std::vector<float> rotated = question_q_;
  std::vector<int64_t> fixed(nq, n_local_ - 1);
  Rotate(rotated.data(), nq, heads_, head_dim_, q_dim_, fixed.data(), inv_freq_);
  question_vector_.assign(q_dim_, 0.0f);
  std::vector<int64_t> top;
  for (int64_t h = 0; h < heads_; ++h) {
    TopIndices(ps(qs - p0_) + h, nq, heads_, config_.repr_topk, &top);
    float* qh = &question_vector_[h * head_dim_];
    for (int64_t t : top) {
      for (int64_t d = 0; d < head_dim_; ++d) qh[d] += rotated[t * q_dim_ + h * head_dim_ + d];
    }
    for (int64_t d = 0; d < head_dim_; ++d) qh[d] /= static_cast<float>(top.size());
  }
  question_q_ = {};
}

absl::Status LayerMemory::CutBlock() {
  const int64_t bs = config_.block_size;
  const int32_t b = num_blocks();
  RETURN_IF_ERROR(storage_->Put(BlockId{session_, layer_, b},
                                std::span<const float>(pk(0), bs * kv_dim_),
                                std::span<const float>(pv(0), bs * kv_dim_)));
  // R_b[h]: mean pre-RoPE key (kv head h / G) of the block's repr_topk highest-scoring tokens.
  const size_t base = reprs_.size();
  reprs_.resize(base + q_dim_, 0.0f);
  std::vector<int64_t> top;
  for (int64_t h = 0; h < heads_; ++h) {
    TopIndices(ps(0) + h, bs, heads_, config_.repr_topk, &top);
    float* r = &reprs_[base + h * head_dim_];
    const int64_t g = h / group_;
    for (int64_t t : top) {
      const float* k = pk(t) + g * head_dim_;
      for (int64_t d = 0; d < head_dim_; ++d) r[d] += k[d];
    }
    for (int64_t d = 0; d < head_dim_; ++d) r[d] /= static_cast<float>(top.size());
  }
  block_start_.push_back(p0_);
  block_owner_.push_back(session_);
  PopPending(bs);
  return absl::OkStatus();
}

void LayerMemory::PopPending(int64_t count) {
  pb_ += count;
  p0_ += count;
}

void EncodeLayerMemoryState(const MemoryConfig& config, int32_t layer, const LayerShape& shape,
                            const LayerMemoryStateView& st, std::string* out) {
  const bool pending_global = config.mode != AttentionMode::kStreaming && config.far_pending_global;
  BlobWriter w(out);
  w.PutArray(kStateMagic, sizeof(kStateMagic));
  w.Put(kStateVersion);
  w.Put(static_cast<int64_t>(config.mode));
  for (const LayoutField& f :
       Layout(config, pending_global, layer, shape.heads, shape.kv_heads, shape.head_dim)) {
    w.Put(f.value);
  }
  const int64_t blocks = static_cast<int64_t>(st.block_start.size());
  for (int64_t v : {st.end, st.p0, st.n_init, blocks, static_cast<int64_t>(st.init_ran),
                    static_cast<int64_t>(st.question_vector.size())}) {
    w.Put(v);
  }
  for (std::span<const float> a : {st.init_k, st.init_v, st.pk, st.pkr, st.pv, st.ps}) {
    w.PutArray(a.data(), static_cast<int64_t>(a.size()));
  }
  w.PutArray(st.block_start.data(), blocks);
  w.PutArray(st.block_owner.data(), blocks);
  w.PutArray(st.reprs.data(), static_cast<int64_t>(st.reprs.size()));
  w.PutArray(st.question_vector.data(), static_cast<int64_t>(st.question_vector.size()));
}

absl::StatusOr<LayerMemoryState> DecodeLayerMemoryState(const MemoryConfig& config, int32_t layer,
                                                        const LayerShape& shape,
                                                        std::string_view blob) {
  const bool pending_global = config.mode != AttentionMode::kStreaming && config.far_pending_global;
  const int64_t heads = shape.heads, kv_dim = static_cast<int64_t>(shape.kv_heads) * shape.head_dim;
  const int64_t q_dim = heads * shape.head_dim;
  BlobReader in(blob);
  char magic[sizeof(kStateMagic)];
  uint32_t version = 0;
  if (!in.Get(&magic) || std::memcmp(magic, kStateMagic, sizeof(magic)) != 0) {
    return absl::DataLossError("not a saved layer state (bad magic)");
  }
  if (!in.Get(&version)) return Truncated("version");
  if (version != kStateVersion) {
    return absl::DataLossError(
        absl::StrCat("saved layer state has version ", version, ", expected ", kStateVersion));
  }
  // Layout: the mode by category, then each field by value.
  int64_t mode = 0;
  if (!in.Get(&mode)) return Truncated("mode");
  if (mode <= static_cast<int64_t>(AttentionMode::kFull) ||
      mode > static_cast<int64_t>(AttentionMode::kQllm)) {
    return absl::DataLossError(absl::StrCat("saved layer state has mode ", mode));
  }
  const AttentionMode saved_mode = static_cast<AttentionMode>(mode);
  if ((saved_mode == AttentionMode::kStreaming) != (config.mode == AttentionMode::kStreaming)) {
    return absl::FailedPreconditionError(
        absl::StrCat("state was saved in ", AttentionModeName(saved_mode),
                     " mode, this session uses ", AttentionModeName(config.mode), " mode"));
  }
  for (const LayoutField& f :
       Layout(config, pending_global, layer, shape.heads, shape.kv_heads, shape.head_dim)) {
    int64_t saved = 0;
    if (!in.Get(&saved)) return Truncated(f.name);
    if (saved != f.value) {
      return absl::FailedPreconditionError(absl::StrCat("state was saved with ", f.name, "=", saved,
                                                        ", this session has ", f.value));
    }
  }
  // Positions and counts; every token before p0 is in init or in a block.
  LayerMemoryState st;
  int64_t blocks = 0, init_ran = 0, qv = 0;
  for (int64_t* v : {&st.end, &st.p0, &st.n_init, &blocks, &init_ran, &qv}) {
    if (!in.Get(v)) return Truncated("positions");
  }
  const int64_t bs = config.block_size;
  if (st.end < 0 || st.p0 < 0 || st.p0 > st.end || st.end - st.p0 >= config.n_local + bs ||
      st.n_init < 0 || st.n_init > config.n_init || blocks < 0 ||
      blocks > (st.p0 - st.n_init) / bs || st.p0 != st.n_init + blocks * bs ||
      init_ran != (st.n_init > 0 ? 1 : 0) || (qv != 0 && qv != q_dim)) {
    return absl::DataLossError(absl::StrCat("saved layer state is inconsistent: ", st.end,
                                            " tokens, ", st.p0, " before pending, ", st.n_init,
                                            " sinks, ", blocks, " blocks, init_ran ", init_ran,
                                            ", question vector of ", qv));
  }
  st.init_ran = init_ran != 0;
  const int64_t pending = st.end - st.p0;
  if (!in.GetRows(st.n_init, kv_dim, &st.init_k) || !in.GetRows(st.n_init, kv_dim, &st.init_v)) {
    return Truncated("sinks");
  }
  if (!in.GetRows(pending, kv_dim, &st.pk) || !in.GetRows(pending, kv_dim, &st.pkr) ||
      !in.GetRows(pending, kv_dim, &st.pv) || !in.GetRows(pending, heads, &st.ps)) {
    return Truncated("pending tokens");
  }
  if (!in.GetRows(blocks, 1, &st.block_start) || !in.GetRows(blocks, 1, &st.block_owner) ||
      !in.GetRows(blocks, q_dim, &st.reprs)) {
    return Truncated("blocks");
  }
  if (!in.GetRows(qv, 1, &st.question_vector)) return Truncated("question vector");
  if (!in.done()) return absl::DataLossError("saved layer state has trailing bytes");
  for (int64_t b = 0; b < blocks; ++b) {
    if (st.block_start[b] != st.n_init + b * bs) {
      return absl::DataLossError(absl::StrCat("saved block ", b, " starts at ", st.block_start[b],
                                              ", expected ", st.n_init + b * bs));
    }
  }
  return st;
}

absl::Status LayerMemory::Save(std::string* out) const {
  const int64_t pending = end_ - p0_;
  LayerMemoryStateView st;
  st.end = end_;
  st.p0 = p0_;
  st.n_init = init_size();
  st.init_ran = init_ran_;
  st.init_k = init_k_;
  st.init_v = init_v_;
  st.pk = std::span<const float>(pk_).subspan(pb_ * kv_dim_, pending * kv_dim_);
  st.pkr = std::span<const float>(pkr_).subspan(pb_ * kv_dim_, pending * kv_dim_);
  st.pv = std::span<const float>(pv_).subspan(pb_ * kv_dim_, pending * kv_dim_);
  st.ps = std::span<const float>(ps_).subspan(pb_ * heads_, pending * heads_);
  st.block_start = block_start_;
  st.block_owner = block_owner_;
  st.reprs = reprs_;
  st.question_vector = question_vector_;
  EncodeLayerMemoryState(config_, layer_,
                         {static_cast<int32_t>(heads_), static_cast<int32_t>(kv_heads_),
                          static_cast<int32_t>(head_dim_)},
                         st, out);
  return absl::OkStatus();
}

absl::Status LayerMemory::Load(std::string_view blob) {
  QLLM_CHECK(end_ == 0) << "Load into a layer memory that has processed " << end_ << " tokens";
  ASSIGN_OR_RETURN(LayerMemoryState st, DecodeLayerMemoryState(config_, layer_,
                                                               {static_cast<int32_t>(heads_),
                                                                static_cast<int32_t>(kv_heads_),
                                                                static_cast<int32_t>(head_dim_)},
                                                               blob));
  end_ = st.end;
  p0_ = st.p0;
  pb_ = 0;
  init_ran_ = st.init_ran;
  init_k_ = std::move(st.init_k);
  init_v_ = std::move(st.init_v);
  pk_ = std::move(st.pk);
  pkr_ = std::move(st.pkr);
  pv_ = std::move(st.pv);
  ps_ = std::move(st.ps);
  block_start_ = std::move(st.block_start);
  block_owner_ = std::move(st.block_owner);
  reprs_ = std::move(st.reprs);
  if (!st.question_vector.empty()) {
    question_vector_ = std::move(st.question_vector);
    question_q_ = {};
  }
  return absl::OkStatus();
}

}  // namespace qllm::worker
