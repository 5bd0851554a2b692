// GPU parity: each CUDA op (Launch*) against its CPU twin (*Ref) over a sweep of shapes,
// odd sizes included. Tolerance per element: atol + rtol * |ref|. Every test but the
// argument checks skips itself on a machine without a CUDA device.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cast.h"
#include "cuda/embedding.h"
#include "cuda/rmsnorm.h"
#include "cuda/rope.h"
#include "cuda/swiglu.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::AllClose;
using ::qllm::testing::DeviceBuffer;
using ::qllm::testing::StatusIs;
using ::qllm::testing::TestStream;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

class OpsGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    absl::StatusOr<TestStream> stream = TestStream::Create();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_.emplace(*std::move(stream));
  }

  Stream stream() const { return stream_->get(); }

  std::optional<TestStream> stream_;
};

TEST_F(OpsGpuTest, RmsNormMatchesRef) {
  for (int64_t rows : {1, 3, 17}) {
    for (int64_t dim : {1, 7, 32, 129, 768, 4097}) {
      SCOPED_TRACE(absl::StrCat("rows ", rows, " dim ", dim));
      const auto x = Random(rows * dim, 1, 2.0f), w = Random(dim, 2);
      std::vector<float> ref(rows * dim);
      RmsNormParams p{.x = x.data(),
                      .weight = w.data(),
                      .y = ref.data(),
                      .rows = rows,
                      .dim = dim,
                      .eps = 1e-5f};
      ASSERT_OK(RmsNormRef(p));
      ASSERT_OK_AND_ASSIGN(auto d_x, DeviceBuffer<float>::FromHost(x));
      ASSERT_OK_AND_ASSIGN(auto d_w, DeviceBuffer<float>::FromHost(w));
      ASSERT_OK_AND_ASSIGN(auto d_y, DeviceBuffer<float>::Create(rows * dim));
      p.x = d_x.get();
      p.weight = d_w.get();
      p.y = d_y.get();
      ASSERT_OK(LaunchRmsNorm(p, stream()));
      // In place (y aliases x), as the header allows.
      p.y = d_x.get();
      ASSERT_OK(LaunchRmsNorm(p, stream()));
      ASSERT_OK(stream_->Synchronize());
      ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_y.ToHost());
      ASSERT_OK_AND_ASSIGN(const std::vector<float> in_place, d_x.ToHost());
      // fp32 block reduction on the GPU against a double sum on the CPU.
      EXPECT_TRUE(AllClose(ref, out, 1e-5, 1e-4));
      EXPECT_TRUE(AllClose(ref, in_place, 1e-5, 1e-4));
    }
  }
}

TEST_F(OpsGpuTest, RopeMatchesRef) {
  RopeConfig plain{.head_dim = 0, .theta = 10000.0};
  RopeConfig llama3{
      .head_dim = 0, .theta = 500000.0, .llama3_factor = 8.0, .llama3_original_max_position = 64.0};
  for (const RopeConfig& base : {plain, llama3}) {
    for (int64_t head_dim : {2, 6, 64, 128}) {
      for (int64_t heads : {1, 3, 8}) {
        for (int64_t tokens : {1, 5, 33}) {
          SCOPED_TRACE(absl::StrCat("theta ", base.theta, " head_dim ", head_dim, " heads ", heads,
                                    " tokens ", tokens));
          RopeConfig config = base;
          config.head_dim = static_cast<int32_t>(head_dim);
          const std::vector<double> inv_freq = RopeInverseFrequencies(config);
          // Rows padded past the rotated heads (as in a fused QKV buffer); the padding must
          // come back untouched.
          const int64_t stride = heads * head_dim + 5;
          std::vector<int64_t> positions(tokens);
          for (int64_t t = 0; t < tokens; ++t) positions[t] = t * 977 + (t % 2) * 1000003;
          std::vector<float> ref = Random(tokens * stride, 3);
          const std::vector<float> x = ref;
          RopeParams p{.x = ref.data(),
                       .positions = positions.data(),
                       .inv_freq = inv_freq.data(),
                       .tokens = tokens,
                       .heads = heads,
                       .head_dim = head_dim,
                       .row_stride = stride};
          ASSERT_OK(RopeRef(p));
          ASSERT_OK_AND_ASSIGN(auto d_x, DeviceBuffer<float>::FromHost(x));
          ASSERT_OK_AND_ASSIGN(auto d_pos, DeviceBuffer<int64_t>::FromHost(positions));
          ASSERT_OK_AND_ASSIGN(auto d_inv, DeviceBuffer<double>::FromHost(inv_freq));
          p.x = d_x.get();
          p.positions = d_pos.get();
          p.inv_freq = d_inv.get();
          ASSERT_OK(LaunchRope(p, stream()));
          ASSERT_OK(stream_->Synchronize());
          ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_x.ToHost());
          // Both sides form the angle in double; only the last float rounding may differ.
          EXPECT_TRUE(AllClose(ref, out, 1e-5, 1e-5));
        }
      }
    }
  }
}

TEST_F(OpsGpuTest, SwiGluMatchesRef) {
  for (int64_t rows : {1, 3, 17}) {
    for (int64_t dim : {1, 5, 64, 255, 2049}) {
      SCOPED_TRACE(absl::StrCat("rows ", rows, " dim ", dim));
      const auto gate_up = Random(rows * 2 * dim, 4, 3.0f);
      std::vector<float> ref(rows * dim);
      SwiGluParams p{.gate_up = gate_up.data(), .out = ref.data(), .rows = rows, .dim = dim};
      ASSERT_OK(SwiGluRef(p));
      ASSERT_OK_AND_ASSIGN(auto d_in, DeviceBuffer<float>::FromHost(gate_up));
      ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(rows * dim));
      p.gate_up = d_in.get();
      p.out = d_out.get();
      ASSERT_OK(LaunchSwiGlu(p, stream()));
      ASSERT_OK(stream_->Synchronize());
      ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_out.ToHost());
      // expf on the device against std::exp: a few ulp.
      EXPECT_TRUE(AllClose(ref, out, 1e-6, 1e-5));
    }
  }
}

TEST_F(OpsGpuTest, AddMatchesRef) {
  for (int64_t n : {1, 255, 256, 257, 100003}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    const auto x = Random(n, 5), y = Random(n, 6);
    std::vector<float> ref = y;
    ASSERT_OK(AddRef({.x = x.data(), .y = ref.data(), .n = n}));
    ASSERT_OK_AND_ASSIGN(auto d_x, DeviceBuffer<float>::FromHost(x));
    ASSERT_OK_AND_ASSIGN(auto d_y, DeviceBuffer<float>::FromHost(y));
    ASSERT_OK(LaunchAdd({.x = d_x.get(), .y = d_y.get(), .n = n}, stream()));
    ASSERT_OK(stream_->Synchronize());
    ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_y.ToHost());
    EXPECT_TRUE(AllClose(ref, out, 0.0, 0.0));  // One correctly rounded add: exact.
  }
}

TEST_F(OpsGpuTest, CastToBf16MatchesRef) {
  for (int64_t n : {1, 255, 257, 100003}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    // Values across many binades, so that rounding carries into the exponent too.
    std::vector<float> x = Random(n, 11, 3.0f);
    for (int64_t i = 0; i < n; i += 3) x[i] = std::ldexp(x[i], static_cast<int>(i % 41) - 20);
    std::vector<uint16_t> ref(n);
    ASSERT_OK(CastToBf16Ref({.x = x.data(), .y = ref.data(), .n = n}));
    ASSERT_OK_AND_ASSIGN(auto d_x, DeviceBuffer<float>::FromHost(x));
    ASSERT_OK_AND_ASSIGN(auto d_y, DeviceBuffer<uint16_t>::Create(n));
    ASSERT_OK(LaunchCastToBf16({.x = d_x.get(), .y = d_y.get(), .n = n}, stream()));
    ASSERT_OK(stream_->Synchronize());
    ASSERT_OK_AND_ASSIGN(const std::vector<uint16_t> out, d_y.ToHost());
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (out[i] == ref[i]) continue;
      if (++mismatches <= 8) {
        ADD_FAILURE() << "[" << i << "] x " << x[i] << ": expected 0x" << std::hex << ref[i]
                      << ", actual 0x" << out[i];
      }
    }
    EXPECT_EQ(mismatches, 0);  // Round to nearest even on both sides: bit-exact.
  }
}

TEST_F(OpsGpuTest, EmbeddingMatchesRef) {
  for (int64_t vocab : {1, 10, 32000}) {
    for (int64_t dim : {1, 7, 768}) {
      for (int64_t n : {1, 7, 300}) {
        SCOPED_TRACE(absl::StrCat("vocab ", vocab, " dim ", dim, " n ", n));
        const auto table = Random(vocab * dim, 7);
        std::mt19937 rng(8);
        std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab) - 1);
        std::vector<int32_t> tokens(n);
        for (int32_t& t : tokens) t = id(rng);
        tokens.back() = static_cast<int32_t>(vocab) - 1;  // The last row of the table.
        std::vector<float> ref(n * dim);
        EmbeddingParams p{.tokens = tokens.data(),
                          .table = table.data(),
                          .out = ref.data(),
                          .n = n,
                          .vocab = vocab,
                          .dim = dim};
        ASSERT_OK(EmbeddingRef(p));
        ASSERT_OK_AND_ASSIGN(auto d_tokens, DeviceBuffer<int32_t>::FromHost(tokens));
        ASSERT_OK_AND_ASSIGN(auto d_table, DeviceBuffer<float>::FromHost(table));
        ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(n * dim));
        p.tokens = d_tokens.get();
        p.table = d_table.get();
        p.out = d_out.get();
        ASSERT_OK(LaunchEmbedding(p, stream()));
        ASSERT_OK(stream_->Synchronize());
        ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_out.ToHost());
        EXPECT_TRUE(AllClose(ref, out, 0.0, 0.0));  // A copy: exact.
      }
    }
  }
}

TEST_F(OpsGpuTest, EmbeddingWritesZerosForOutOfRangeIds) {
  const int64_t vocab = 10, dim = 5;
  const auto table = Random(vocab * dim, 9);
  const std::vector<int32_t> tokens = {3, -1, 10, 9};
  ASSERT_OK_AND_ASSIGN(auto d_tokens, DeviceBuffer<int32_t>::FromHost(tokens));
  ASSERT_OK_AND_ASSIGN(auto d_table, DeviceBuffer<float>::FromHost(table));
  ASSERT_OK_AND_ASSIGN(auto d_out, DeviceBuffer<float>::Create(tokens.size() * dim));
  ASSERT_OK(LaunchEmbedding({.tokens = d_tokens.get(),
                             .table = d_table.get(),
                             .out = d_out.get(),
                             .n = 4,
                             .vocab = vocab,
                             .dim = dim},
                            stream()));
  ASSERT_OK(stream_->Synchronize());
  ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_out.ToHost());
  std::vector<float> expected(tokens.size() * dim, 0.0f);
  for (int64_t i = 0; i < dim; ++i) {
    expected[i] = table[3 * dim + i];
    expected[3 * dim + i] = table[9 * dim + i];
  }
  EXPECT_TRUE(AllClose(expected, out, 0.0, 0.0));
}

// The launchers validate their parameters before touching the device, so this runs without
// a GPU too.
TEST(OpsGpuValidation, LaunchersRejectInvalidParams) {
  EXPECT_THAT(LaunchRmsNorm(RmsNormParams{}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchRope(RopeParams{}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchSwiGlu(SwiGluParams{}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchAdd(AddParams{}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchCastToBf16(CastToBf16Params{}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LaunchEmbedding(EmbeddingParams{}, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
