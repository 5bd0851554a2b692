// The CUDA twins of cuda/memory_ops.h against their CPU twins on random inputs with odd sizes.
// CopyRows, FillPositions and GatherBlocks move data and must match exactly; MeanRows sums in
// the same order as its twin and must match exactly too; TopMean picks the same rows (integer
// scores with many ties check the tie rule) and sums them in the same order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/memory_ops.h"
#include "tests/testutil/cuda_test_util.h"
#include "tests/testutil/status_matchers.h"

namespace qllm::cuda {
namespace {

using ::qllm::testing::StatusIs;

std::vector<float> Random(size_t n, uint32_t seed, int int_range = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> ints(-int_range, int_range);
  std::vector<float> v(n);
  for (float& x : v) x = int_range > 0 ? static_cast<float>(ints(rng)) : normal(rng);
  return v;
}

class MemoryOpsGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QLLM_SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_OK_AND_ASSIGN(stream_, CudaStream::Create());
  }
  template <typename T>
  DeviceBuffer<T> Upload(const std::vector<T>& host) {
    auto d = DeviceBuffer<T>::Create(host.size());
    QLLM_CHECK(d.ok()) << d.status();
    QLLM_CHECK(d->Upload(host, stream_.get()).ok());
    return std::move(*d);
  }
  template <typename T>
  std::vector<T> Download(const DeviceBuffer<T>& d) {
    auto h = d.ToHost(stream_.get());
    QLLM_CHECK(h.ok()) << h.status();
    return *h;
  }
  CudaStream stream_;
};

TEST_F(MemoryOpsGpuTest, CopyRowsAndFillPositionsMatchRef) {
  const int64_t rows = 37, cols = 29, ss = 45, ds = 31;
  const std::vector<float> src = Random(rows * ss, 1);
  std::vector<float> want(rows * ds, -1.0f);
  ASSERT_OK(CopyRowsRef({.src = src.data(),
                         .dst = want.data(),
                         .rows = rows,
                         .cols = cols,
                         .src_stride = ss,
                         .dst_stride = ds}));
  DeviceBuffer<float> d_src = Upload(src), d_dst = Upload(std::vector<float>(rows * ds, -1.0f));
  ASSERT_OK(LaunchCopyRows({.src = d_src.data(),
                            .dst = d_dst.data(),
                            .rows = rows,
                            .cols = cols,
                            .src_stride = ss,
                            .dst_stride = ds},
                           stream_.get()));
  EXPECT_EQ(Download(d_dst), want);

  std::vector<int64_t> pos(1000);
  ASSERT_OK(FillPositionsRef({.out = pos.data(), .n = 1000, .first = -7, .step = 3}));
  DeviceBuffer<int64_t> d_pos = Upload(std::vector<int64_t>(1000, 0));
  ASSERT_OK(
      LaunchFillPositions({.out = d_pos.data(), .n = 1000, .first = -7, .step = 3}, stream_.get()));
  EXPECT_EQ(Download(d_pos), pos);
}

TEST_F(MemoryOpsGpuTest, MeanRowsMatchesRefExactly) {
  const int64_t rows = 53, dim = 301, stride = 320;
  const std::vector<float> x = Random(rows * stride, 2);
  std::vector<float> want(dim);
  ASSERT_OK(
      MeanRowsRef({.x = x.data(), .out = want.data(), .rows = rows, .dim = dim, .stride = stride}));
  DeviceBuffer<float> d_x = Upload(x), d_out = Upload(std::vector<float>(dim));
  ASSERT_OK(LaunchMeanRows(
      {.x = d_x.data(), .out = d_out.data(), .rows = rows, .dim = dim, .stride = stride},
      stream_.get()));
  EXPECT_EQ(Download(d_out), want);
}

TEST_F(MemoryOpsGpuTest, TopMeanMatchesRefIncludingTies) {
  struct Shape {
    int64_t rows, heads, group, head_dim, k;
  };
  // A block (GQA 4), a question (group 1), k above rows, and many ties (scores in [-2, 2]).
  for (const Shape& s : {Shape{16, 8, 4, 32, 4}, Shape{37, 6, 1, 16, 4}, Shape{3, 6, 3, 8, 5},
                         Shape{129, 4, 2, 64, 7}}) {
    for (int range : {0, 2}) {
      SCOPED_TRACE(::testing::Message() << "rows " << s.rows << " heads " << s.heads << " group "
                                        << s.group << " k " << s.k << " int range " << range);
      const int64_t score_stride = s.heads + 1;
      const int64_t vector_stride = (s.heads / s.group) * s.head_dim + 3;
      const std::vector<float> scores = Random(s.rows * score_stride, 3, range);
      const std::vector<float> vectors = Random(s.rows * vector_stride, 4);
      std::vector<float> want(s.heads * s.head_dim);
      TopMeanParams p{.scores = scores.data(),
                      .vectors = vectors.data(),
                      .out = want.data(),
                      .rows = s.rows,
                      .heads = s.heads,
                      .group = s.group,
                      .head_dim = s.head_dim,
                      .k = s.k,
                      .score_stride = score_stride,
                      .vector_stride = vector_stride};
      ASSERT_OK(TopMeanRef(p));
      DeviceBuffer<float> d_scores = Upload(scores), d_vectors = Upload(vectors);
      DeviceBuffer<float> d_out = Upload(std::vector<float>(want.size()));
      p.scores = d_scores.data();
      p.vectors = d_vectors.data();
      p.out = d_out.data();
      ASSERT_OK(LaunchTopMean(p, stream_.get()));
      EXPECT_EQ(Download(d_out), want);
    }
  }
  TopMeanParams big{.rows = kTopMeanMaxRows + 1,
                    .heads = 1,
                    .head_dim = 2,
                    .k = 1,
                    .score_stride = 1,
                    .vector_stride = 2};
  DeviceBuffer<float> d = Upload(std::vector<float>(2 * (kTopMeanMaxRows + 1)));
  big.scores = big.vectors = d.data();
  big.out = d.data();
  EXPECT_THAT(LaunchTopMean(big, stream_.get()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(MemoryOpsGpuTest, GatherBlocksReadsDeviceIds) {
  const int64_t num_blocks = 23, elems = 16 * 24 + 5;
  const std::vector<float> pool_k = Random(num_blocks * elems, 5),
                           pool_v = Random(num_blocks * elems, 6);
  const std::vector<int32_t> ids = {22, 0, 7, 7, 13, -1, 23};
  const int64_t count = static_cast<int64_t>(ids.size());
  std::vector<float> want_k(count * elems), want_v(count * elems);
  GatherBlocksParams p{.ids = ids.data(),
                       .pool_k = pool_k.data(),
                       .pool_v = pool_v.data(),
                       .dst_k = want_k.data(),
                       .dst_v = want_v.data(),
                       .count = count,
                       .num_blocks = num_blocks,
                       .block_elems = elems};
  ASSERT_OK(GatherBlocksRef(p));
  DeviceBuffer<int32_t> d_ids = Upload(ids);
  DeviceBuffer<float> d_pk = Upload(pool_k), d_pv = Upload(pool_v);
  DeviceBuffer<float> d_k = Upload(std::vector<float>(count * elems, 1.0f));
  DeviceBuffer<float> d_v = Upload(std::vector<float>(count * elems, 1.0f));
  p.ids = d_ids.data();
  p.pool_k = d_pk.data();
  p.pool_v = d_pv.data();
  p.dst_k = d_k.data();
  p.dst_v = d_v.data();
  ASSERT_OK(LaunchGatherBlocks(p, stream_.get()));
  EXPECT_EQ(Download(d_k), want_k);
  EXPECT_EQ(Download(d_v), want_v);
}

}  // namespace
}  // namespace qllm::cuda
