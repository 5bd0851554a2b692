// The Q-LLM context memory of one attention layer on the device: LayerMemoryEngine
// (cuda/layer_memory_engine.h, where the steps are documented) over CudaMemoryBackend, whose
// arrays are device memory and whose ops are the CUDA twins of cuda/memory_ops.h, rope.h,
// block_topk.h and memory_attention.h, enqueued on the stream the memory was created with.
// The CUDA twin of worker::LayerMemory; tests/gpu/device_layer_memory_gpu_test.cc holds it to
// that class chunk by chunk.
//
// CUDA builds only (QLLM_HAVE_CUDA); the header includes no CUDA headers.
#ifndef QLLM_CUDA_DEVICE_LAYER_MEMORY_H_
#define QLLM_CUDA_DEVICE_LAYER_MEMORY_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cuda/block_topk.h"
#include "cuda/device.h"
#include "cuda/device_block_cache.h"
#include "cuda/layer_memory_engine.h"
#include "cuda/memory_attention.h"
#include "cuda/memory_ops.h"
#include "cuda/rope.h"
#include "cuda/stream.h"

namespace qllm::cuda {

// Device arrays (cuda/device.h) and the CUDA ops; defined in device_layer_memory.cc.
struct CudaMemoryBackend {
  template <typename T>
  using Buffer = DeviceBuffer<T>;
  template <typename T>
  using HostBuffer = PinnedHostBuffer<T>;
  using BlockCache = DeviceBlockCache;
  // Create(), Record(stream), Synchronize() (cuda/device.h).
  using Event = CudaEvent;

  static absl::Status CopyRows(const CopyRowsParams& p, Stream s);
  static absl::Status FillPositions(const FillPositionsParams& p, Stream s);
  static absl::Status MeanRows(const MeanRowsParams& p, Stream s);
  static absl::Status TopMean(const TopMeanParams& p, Stream s);
  static absl::Status GatherBlocks(const GatherBlocksParams& p, Stream s);
  static absl::Status Rope(const RopeParams& p, Stream s);
  static absl::StatusOr<size_t> BlockTopKWorkspaceBytes(int64_t num_blocks);
  static absl::Status BlockTopK(const BlockTopKParams& p, void* ws, size_t ws_bytes, Stream s);
  static absl::Status BlockTopKToHost(const BlockTopKParams& p, void* ws, size_t ws_bytes,
                                      int32_t* h_ids, float* h_scores, Stream s);
  // Chunks of at least kGemmAttentionMinQueries queries take the SGEMM path
  // (cuda/memory_attention_gemm.h, one per thread and device), smaller ones (decode) the
  // scalar kernel.
  static constexpr int64_t kGemmAttentionMinQueries = 16;
  static absl::Status MemoryAttention(const MemoryAttentionParams& p, void* ws, size_t ws_bytes,
                                      Stream s);
  // Split attention (cuda/memory_attention.h), on the same two paths.
  static absl::Status MemoryAttentionLocalScores(const MemoryAttentionParams& p, Stream s);
  static absl::Status MergeAttention(const MergeAttentionParams& p, Stream s);
  // cudaMemsetAsync of count floats to 0.
  static absl::Status Zero(float* d, int64_t count, Stream s);
  // cudaMemcpyAsync device to host (pageable `host`: returns once the copy is done).
  static absl::Status CopyToHost(float* host, const float* d, int64_t count, Stream s);
  static absl::Status Synchronize(Stream s);
};

extern template class LayerMemoryEngine<CudaMemoryBackend>;
using DeviceLayerMemory = LayerMemoryEngine<CudaMemoryBackend>;
using DeviceLayerMemoryOptions = LayerMemoryEngineOptions;

}  // namespace qllm::cuda

#endif  // QLLM_CUDA_DEVICE_LAYER_MEMORY_H_
