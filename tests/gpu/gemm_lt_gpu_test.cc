// GemmLt (bf16 inputs, fp32 accumulation through cuBLASLt) against its CPU twin GemmRef run on
// the same bf16 values widened to fp32 (exact), over odd and model-like shapes.
//
// Tolerance rule. With inputs of standard deviation s_a, s_b, an output element has magnitude
// about sqrt(k) * s_a * s_b, and two fp32 accumulations of the same exact products differ by
// rounding that grows like the partial sums. Every element must satisfy
//   |gpu - ref| <= 1e-4 * sqrt(k) * |alpha| * s_a * s_b  (+ 2^-8 * |ref| for a bf16 output),
// i.e. 1e-4 relative to the sqrt(k)-scaled magnitude (about 10x the expected fp32 rounding at
// k = 2048), plus one bf16 ulp when C is rounded to bf16. A wrong or missing term (one product
// is about s_a * s_b) exceeds it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "cuda/device.h"
#include "cuda/gemm.h"
#include "cuda/gemm_lt.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::AllClose;
using ::qllm::testing::StatusIs;

// n values ~ N(0, 1) rounded to bf16: the bits for the device and the exact fp32 widening.
struct Bf16Data {
  std::vector<uint16_t> bits;
  std::vector<float> wide;
};

Bf16Data RandomBf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  Bf16Data out;
  out.bits.resize(n);
  out.wide.resize(n);
  for (size_t i = 0; i < n; ++i) {
    out.bits[i] = FloatToBf16(d(rng));
    out.wide[i] = Bf16ToFloat(out.bits[i]);
  }
  return out;
}

struct Case {
  int64_t m, n, k;
  bool trans_b = true;
  bool bf16_out = false;
  float alpha = 1.0f, beta = 0.0f;
  int64_t pad = 0;  // Extra elements per row in every stride.
};

std::string Describe(const Case& c) {
  return absl::StrCat("m ", c.m, " n ", c.n, " k ", c.k, " trans_b ", c.trans_b, " bf16_out ",
                      c.bf16_out, " alpha ", c.alpha, " beta ", c.beta, " pad ", c.pad);
}

class GemmLtGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_OK_AND_ASSIGN(stream_, CudaStream::Create());
    ASSERT_OK_AND_ASSIGN(gemm_, GemmLt::Create());
    ASSERT_OK_AND_ASSIGN(workspace_, DeviceBuffer<char>::Create(GemmLt::kDefaultWorkspaceBytes));
  }

  // Runs `c` on the device and with GemmRef; returns the device output widened to fp32 and the
  // reference. C starts random (read when beta != 0).
  void Run(const Case& c, std::vector<float>* out, std::vector<float>* ref) {
    const int64_t lda = c.k + c.pad, ldb = (c.trans_b ? c.k : c.n) + c.pad, ldc = c.n + c.pad;
    const int64_t b_rows = c.trans_b ? c.n : c.k;
    const Bf16Data a = RandomBf16(c.m * lda, 1), b = RandomBf16(b_rows * ldb, 2);
    const Bf16Data c0 = RandomBf16(c.m * ldc, 3);
    *ref = c0.wide;
    GemmParams rp{.a = a.wide.data(),
                  .b = b.wide.data(),
                  .c = ref->data(),
                  .m = c.m,
                  .n = c.n,
                  .k = c.k,
                  .lda = lda,
                  .ldb = ldb,
                  .ldc = ldc,
                  .trans_b = c.trans_b,
                  .alpha = c.alpha,
                  .beta = c.beta};
    ASSERT_OK(GemmRef(rp));

    ASSERT_OK_AND_ASSIGN(auto d_a, DeviceBuffer<uint16_t>::Create(a.bits.size()));
    ASSERT_OK_AND_ASSIGN(auto d_b, DeviceBuffer<uint16_t>::Create(b.bits.size()));
    ASSERT_OK(d_a.Upload(a.bits, stream()));
    ASSERT_OK(d_b.Upload(b.bits, stream()));
    GemmLtParams p{.a = d_a.data(),
                   .b = d_b.data(),
                   .m = c.m,
                   .n = c.n,
                   .k = c.k,
                   .lda = lda,
                   .ldb = ldb,
                   .ldc = ldc,
                   .trans_b = c.trans_b,
                   .alpha = c.alpha,
                   .beta = c.beta,
                   .workspace = workspace_.data(),
                   .workspace_bytes = workspace_.size()};
    if (c.bf16_out) {
      ASSERT_OK_AND_ASSIGN(auto d_c, DeviceBuffer<uint16_t>::Create(c0.bits.size()));
      ASSERT_OK(d_c.Upload(c0.bits, stream()));
      p.c_bf16 = d_c.data();
      ASSERT_OK(gemm_->Launch(p, stream()));
      ASSERT_OK_AND_ASSIGN(const std::vector<uint16_t> bits, d_c.ToHost(stream()));
      out->resize(bits.size());
      for (size_t i = 0; i < bits.size(); ++i) (*out)[i] = Bf16ToFloat(bits[i]);
    } else {
      ASSERT_OK_AND_ASSIGN(auto d_c, DeviceBuffer<float>::Create(c0.wide.size()));
      ASSERT_OK(d_c.Upload(c0.wide, stream()));
      p.c = d_c.data();
      ASSERT_OK(gemm_->Launch(p, stream()));
      ASSERT_OK_AND_ASSIGN(*out, d_c.ToHost(stream()));
    }
  }

  void ExpectMatches(const Case& c) {
    SCOPED_TRACE(Describe(c));
    std::vector<float> out, ref;
    ASSERT_NO_FATAL_FAILURE(Run(c, &out, &ref));
    const double atol =
        1e-4 * std::sqrt(static_cast<double>(std::max<int64_t>(c.k, 1))) * std::abs(c.alpha) +
        1e-6 * std::abs(c.beta);
    const double rtol = c.bf16_out ? 1.0 / 256 : 0.0;
    EXPECT_TRUE(AllClose(ref, out, atol, rtol));
  }

  Stream stream() const { return stream_.get(); }

  CudaStream stream_;
  std::unique_ptr<GemmLt> gemm_;
  DeviceBuffer<char> workspace_;
};

TEST_F(GemmLtGpuTest, MatchesGemmRefOverShapes) {
  for (int64_t m : {1, 7, 64, 129}) {
    for (int64_t n : {64, 129, 2048}) {
      for (int64_t k : {64, 129, 2048}) {
        for (bool bf16_out : {false, true}) {
          ExpectMatches({.m = m, .n = n, .k = k, .bf16_out = bf16_out});
        }
      }
    }
  }
}

TEST_F(GemmLtGpuTest, MatchesGemmRefWithStridesTransposeAndBeta) {
  for (bool trans_b : {true, false}) {
    for (bool bf16_out : {false, true}) {
      for (int64_t pad : {0, 3, 8}) {
        ExpectMatches({.m = 33,
                       .n = 65,
                       .k = 97,
                       .trans_b = trans_b,
                       .bf16_out = bf16_out,
                       .alpha = 0.5f,
                       .beta = -1.5f,
                       .pad = pad});
      }
    }
  }
}

TEST_F(GemmLtGpuTest, ZeroKScalesC) {
  for (bool bf16_out : {false, true}) {
    for (float beta : {0.0f, 2.0f}) {
      // pad 1: BLAS wants strides >= 1 even for k == 0.
      ExpectMatches({.m = 5, .n = 7, .k = 0, .bf16_out = bf16_out, .beta = beta, .pad = 1});
    }
  }
}

TEST_F(GemmLtGpuTest, BetaZeroDoesNotReadC) {
  const int64_t m = 4, n = 64, k = 64;
  const Bf16Data a = RandomBf16(m * k, 4), b = RandomBf16(n * k, 5);
  ASSERT_OK_AND_ASSIGN(auto d_a, DeviceBuffer<uint16_t>::Create(a.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_b, DeviceBuffer<uint16_t>::Create(b.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_c, DeviceBuffer<float>::Create(m * n));
  ASSERT_OK(d_a.Upload(a.bits, stream()));
  ASSERT_OK(d_b.Upload(b.bits, stream()));
  ASSERT_OK(
      d_c.Upload(std::vector<float>(m * n, std::numeric_limits<float>::quiet_NaN()), stream()));
  ASSERT_OK(gemm_->Launch({.a = d_a.data(),
                           .b = d_b.data(),
                           .c = d_c.data(),
                           .m = m,
                           .n = n,
                           .k = k,
                           .lda = k,
                           .ldb = k,
                           .ldc = n},
                          stream()));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> out, d_c.ToHost(stream()));
  for (float x : out) ASSERT_TRUE(std::isfinite(x));
}

TEST_F(GemmLtGpuTest, PlansAreCachedAndResultsRepeat) {
  const int64_t m = 16, n = 256, k = 512;
  const Bf16Data a = RandomBf16(m * k, 6), b = RandomBf16(n * k, 7);
  ASSERT_OK_AND_ASSIGN(auto d_a, DeviceBuffer<uint16_t>::Create(a.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_b, DeviceBuffer<uint16_t>::Create(b.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_c, DeviceBuffer<float>::Create(m * n));
  ASSERT_OK(d_a.Upload(a.bits, stream()));
  ASSERT_OK(d_b.Upload(b.bits, stream()));
  const GemmLtParams p{.a = d_a.data(),
                       .b = d_b.data(),
                       .c = d_c.data(),
                       .m = m,
                       .n = n,
                       .k = k,
                       .lda = k,
                       .ldb = k,
                       .ldc = n,
                       .workspace = workspace_.data(),
                       .workspace_bytes = workspace_.size()};
  ASSERT_OK(gemm_->Launch(p, stream()));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> first, d_c.ToHost(stream()));
  const size_t plans = gemm_->cached_plans();
  EXPECT_GE(plans, 1u);
  ASSERT_OK(gemm_->Launch(p, stream()));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> second, d_c.ToHost(stream()));
  EXPECT_EQ(gemm_->cached_plans(), plans);
  EXPECT_TRUE(AllClose(first, second, 0.0, 0.0));  // Same algorithm, same bits.

  // Without a workspace: another plan, same product up to rounding.
  GemmLtParams no_ws = p;
  no_ws.workspace = nullptr;
  no_ws.workspace_bytes = 0;
  ASSERT_OK(gemm_->Launch(no_ws, stream()));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> third, d_c.ToHost(stream()));
  EXPECT_EQ(gemm_->cached_plans(), plans + 1);
  EXPECT_TRUE(AllClose(first, third, 1e-4 * std::sqrt(k), 0.0));
}

TEST_F(GemmLtGpuTest, HandlesOperandsAlignedToOneElement) {
  // Operands starting one bf16 (2 bytes) past an allocation: cuBLASLt must be told the
  // alignment instead of assuming 256 bytes.
  const int64_t m = 9, n = 130, k = 66;
  const Bf16Data a = RandomBf16(m * k + 1, 8), b = RandomBf16(n * k + 1, 9);
  std::vector<float> ref(m * n);
  ASSERT_OK(MatMulNT(a.wide.data() + 1, b.wide.data() + 1, ref.data(), m, n, k));
  ASSERT_OK_AND_ASSIGN(auto d_a, DeviceBuffer<uint16_t>::Create(a.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_b, DeviceBuffer<uint16_t>::Create(b.bits.size()));
  ASSERT_OK_AND_ASSIGN(auto d_c, DeviceBuffer<float>::Create(m * n + 1));
  ASSERT_OK(d_a.Upload(a.bits, stream()));
  ASSERT_OK(d_b.Upload(b.bits, stream()));
  ASSERT_OK(gemm_->Launch({.a = d_a.data() + 1,
                           .b = d_b.data() + 1,
                           .c = d_c.data() + 1,
                           .m = m,
                           .n = n,
                           .k = k,
                           .lda = k,
                           .ldb = k,
                           .ldc = n,
                           .workspace = workspace_.data(),
                           .workspace_bytes = workspace_.size()},
                          stream()));
  ASSERT_OK_AND_ASSIGN(std::vector<float> out, d_c.ToHost(stream()));
  out.erase(out.begin());
  EXPECT_TRUE(AllClose(ref, out, 1e-4 * std::sqrt(k), 0.0));
}

// Validate runs on the host, so this runs without a GPU too.
TEST(GemmLtValidation, RejectsInvalidParams) {
  uint16_t x = 0;
  float y = 0;
  uint16_t y16 = 0;
  const GemmLtParams ok{
      .a = &x, .b = &x, .c = &y, .m = 1, .n = 1, .k = 1, .lda = 1, .ldb = 1, .ldc = 1};
  EXPECT_OK(ok.Validate());
  GemmLtParams p = ok;
  p.a = nullptr;
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.c_bf16 = &y16;  // Both outputs.
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.c = nullptr;  // No output.
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.k = 2;  // lda < k.
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.m = -1;
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  p = ok;
  p.workspace_bytes = 16;
  EXPECT_THAT(p.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::cuda
