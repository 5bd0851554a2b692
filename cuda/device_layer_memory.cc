#include "cuda/device_layer_memory.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "cuda/cuda_check.h"
#include "cuda/memory_attention_gemm.h"

namespace qllm::cuda {

absl::Status CudaMemoryBackend::CopyRows(const CopyRowsParams& p, Stream s) {
  return LaunchCopyRows(p, s);
}
absl::Status CudaMemoryBackend::FillPositions(const FillPositionsParams& p, Stream s) {
  return LaunchFillPositions(p, s);
}
absl::Status CudaMemoryBackend::MeanRows(const MeanRowsParams& p, Stream s) {
  return LaunchMeanRows(p, s);
}
absl::Status CudaMemoryBackend::TopMean(const TopMeanParams& p, Stream s) {
  return LaunchTopMean(p, s);
}
absl::Status CudaMemoryBackend::GatherBlocks(const GatherBlocksParams& p, Stream s) {
  return LaunchGatherBlocks(p, s);
}
absl::Status CudaMemoryBackend::Rope(const RopeParams& p, Stream s) { return LaunchRope(p, s); }
absl::StatusOr<size_t> CudaMemoryBackend::BlockTopKWorkspaceBytes(int64_t num_blocks) {
  return ::qllm::cuda::BlockTopKWorkspaceBytes(num_blocks);
}
absl::Status CudaMemoryBackend::BlockTopK(const BlockTopKParams& p, void* ws, size_t ws_bytes,
                                          Stream s) {
  return LaunchBlockTopK(p, ws, ws_bytes, s);
}
absl::Status CudaMemoryBackend::BlockTopKToHost(const BlockTopKParams& p, void* ws, size_t ws_bytes,
                                                int32_t* h_ids, float* h_scores, Stream s) {
  return LaunchBlockTopKToHost(p, ws, ws_bytes, h_ids, h_scores, s);
}
namespace {

// One SGEMM path (a cuBLAS handle and a score workspace) per device and stream: work on one
// stream runs in order, so the layers and sessions enqueued on it share the workspace, while
// engines on other streams (other threads) get their own. Keyed by stream rather than by
// thread, since a worker's RPC threads take turns on one stream. Entries live as long as the
// process: engines create their streams once (a worker's backend, a DeviceModel), and an
// address reused by a later stream simply reuses the entry. The caller owns the stream: no
// other thread enqueues on it while it uses the result.
absl::StatusOr<MemoryAttentionGemm*> GemmFor(Stream s) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* gemms =
      new absl::flat_hash_map<std::pair<int, Stream>, std::unique_ptr<MemoryAttentionGemm>>();
  int device = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  absl::MutexLock lock(&mu);
  std::unique_ptr<MemoryAttentionGemm>& slot = (*gemms)[{device, s}];
  if (slot == nullptr) {
    ASSIGN_OR_RETURN(slot, MemoryAttentionGemm::Create());
  }
  return slot.get();
}

}  // namespace

absl::Status CudaMemoryBackend::MemoryAttention(const MemoryAttentionParams& p, void* ws,
                                                size_t ws_bytes, Stream s) {
  if (p.n < kGemmAttentionMinQueries) return LaunchMemoryAttention(p, ws, ws_bytes, s);
  ASSIGN_OR_RETURN(MemoryAttentionGemm * gemm, GemmFor(s));
  return gemm->Launch(p, s);
}
absl::Status CudaMemoryBackend::MemoryAttentionLocalScores(const MemoryAttentionParams& p,
                                                           Stream s) {
  if (p.n < kGemmAttentionMinQueries) return LaunchMemoryAttentionLocalScores(p, s);
  ASSIGN_OR_RETURN(MemoryAttentionGemm * gemm, GemmFor(s));
  return gemm->LaunchLocalScores(p, s);
}
absl::Status CudaMemoryBackend::MergeAttention(const MergeAttentionParams& p, Stream s) {
  return LaunchMergeAttention(p, s);
}
absl::Status CudaMemoryBackend::Zero(float* d, int64_t count, Stream s) {
  if (count <= 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d, 0, static_cast<size_t>(count) * sizeof(float), s));
  return absl::OkStatus();
}
absl::Status CudaMemoryBackend::CopyToHost(float* host, const float* d, int64_t count, Stream s) {
  return internal::CopyAsync(host, d, static_cast<size_t>(count) * sizeof(float),
                             internal::CopyKind::kDeviceToHost, s);
}
absl::Status CudaMemoryBackend::Synchronize(Stream s) { return internal::SynchronizeStream(s); }

template class LayerMemoryEngine<CudaMemoryBackend>;

}  // namespace qllm::cuda
