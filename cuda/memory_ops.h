// The small data-movement and reduction ops of the Q-LLM context memory on the device
// (../shared/docs/qllm-algorithm.md), the pieces DeviceLayerMemory (cuda/device_layer_memory.h)
// needs besides RoPE, block top-k and the two-stage attention:
//   - CopyRows: a strided row copy (pending tokens in, sinks and blocks out);
//   - FillPositions: first, first + step, ... (RoPE positions, global-key positions);
//   - MeanRows: the chunk's mean query qbar (step 2);
//   - TopMean: per head, the mean of the vectors of the k rows with the highest scores, the
//     representative vector of a block (step 5c) and the question vector (step 5b);
//   - GatherBlocks: the selected blocks' K and V, addressed by ids that live on the device,
//     into the global keys of the chunk (no host round trip between top-k and attention).
// Each op has a CPU twin (<Op>Ref, host pointers) with the arithmetic of the engine's CPU path
// (worker/context_memory.cc) and a CUDA twin (Launch<Op>, device pointers) that enqueues on a
// stream, does not synchronize and allocates nothing.
#ifndef QLLM_CUDA_MEMORY_OPS_H_
#define QLLM_CUDA_MEMORY_OPS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < cols (floats). Source and
// destination must not overlap.
struct CopyRowsParams {
  const float* src = nullptr;  // required if rows * cols > 0
  float* dst = nullptr;        // required if rows * cols > 0
  int64_t rows = 0;            // >= 0
  int64_t cols = 0;            // >= 0
  int64_t src_stride = 0;      // >= cols
  int64_t dst_stride = 0;      // >= cols
  // INVALID_ARGUMENT for negative sizes, strides below cols or a missing pointer.
  absl::Status Validate() const;
};
absl::Status CopyRowsRef(const CopyRowsParams& p);
absl::Status LaunchCopyRows(const CopyRowsParams& p, Stream stream);

// out[i] = first + i * step for i < n.
struct FillPositionsParams {
  int64_t* out = nullptr;  // required if n > 0
  int64_t n = 0;           // >= 0
  int64_t first = 0;
  int64_t step = 1;
  absl::Status Validate() const;
};
absl::Status FillPositionsRef(const FillPositionsParams& p);
absl::Status LaunchFillPositions(const FillPositionsParams& p, Stream stream);

// out[d] = (sum over r < rows of x[r * stride + d]) / rows for d < dim: the sum in row order,
// in fp32, then one division (LayerMemory::Retrieve's qbar).
struct MeanRowsParams {
  const float* x = nullptr;  // [rows, stride], required
  float* out = nullptr;      // [dim], required
  int64_t rows = 0;          // > 0
  int64_t dim = 0;           // > 0
  int64_t stride = 0;        // >= dim
  absl::Status Validate() const;
};
absl::Status MeanRowsRef(const MeanRowsParams& p);
absl::Status LaunchMeanRows(const MeanRowsParams& p, Stream stream);

// For each head h < heads: the k' = min(k, rows) rows with the highest scores[r * score_stride
// + h] (ties to the lower row), and out[h * head_dim + d] = (sum over those rows, highest score
// first, of vectors[r * vector_stride + (h / group) * head_dim + d]) / k'. With group =
// heads / kv_heads and key rows this is a block's representative vector; with group 1 and
// query rows the question vector.
struct TopMeanParams {
  const float* scores = nullptr;   // [rows, score_stride], column h for head h; required
  const float* vectors = nullptr;  // [rows, vector_stride]; required
  float* out = nullptr;            // [heads * head_dim]; required
  int64_t rows = 0;                // > 0 (the device op takes rows <= kTopMeanMaxRows)
  int64_t heads = 0;               // > 0
  int64_t group = 1;               // > 0, divides heads
  int64_t head_dim = 0;            // > 0
  int64_t k = 0;                   // > 0
  int64_t score_stride = 0;        // >= heads
  int64_t vector_stride = 0;       // >= (heads / group) * head_dim
  absl::Status Validate() const;
};
// Most rows LaunchTopMean takes (the scores of one head are staged in shared memory).
inline constexpr int64_t kTopMeanMaxRows = 4096;
absl::Status TopMeanRef(const TopMeanParams& p);
absl::Status LaunchTopMean(const TopMeanParams& p, Stream stream);

// For i < count: the block ids[i] of the pools, block_elems floats each, is copied to
// dst_k / dst_v at offset i * block_elems. Ids are read where they are (device memory for the
// CUDA twin); an id outside [0, num_blocks) copies zeros and is a caller bug.
struct GatherBlocksParams {
  const int32_t* ids = nullptr;   // [count]; required if count > 0
  const float* pool_k = nullptr;  // [num_blocks, block_elems]; required if count > 0
  const float* pool_v = nullptr;  // [num_blocks, block_elems]; required if count > 0
  float* dst_k = nullptr;         // [count, block_elems]; required if count > 0
  float* dst_v = nullptr;         // [count, block_elems]; required if count > 0
  int64_t count = 0;              // >= 0
  int64_t num_blocks = 0;         // >= 0
  int64_t block_elems = 0;        // > 0
  absl::Status Validate() const;
};
absl::Status GatherBlocksRef(const GatherBlocksParams& p);
absl::Status LaunchGatherBlocks(const GatherBlocksParams& p, Stream stream);

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_MEMORY_OPS_H_
