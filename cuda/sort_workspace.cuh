// Internal to the .cu files: the device workspace of a descending (float key, int32 id) radix
// sort (CUB), shared by block_topk.cu and sampling.cu, and a CTA-wide arg-max with the
// project's tie rule (the lower index wins).
#ifndef QLLM_CUDA_SORT_WORKSPACE_CUH_
#define QLLM_CUDA_SORT_WORKSPACE_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "absl/status/statusor.h"
#include "cuda/cuda_check.h"

namespace qllm::cuda::internal {

// Carved into 256-byte aligned regions: unsorted and sorted keys, unsorted and sorted ids, then
// the radix sort's scratch.
struct SortWorkspace {
  float* keys_in;
  float* keys_out;
  int32_t* ids_in;
  int32_t* ids_out;
  void* sort_scratch;
  size_t sort_bytes;
};

inline size_t AlignUp256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Scratch bytes of CUB's descending pair sort over n items.
inline absl::StatusOr<size_t> SortScratchBytes(int64_t n) {
  size_t bytes = 0;
  CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(n)));
  return bytes;
}

// Bytes of the four key and id regions for n items.
inline size_t SortRegionsBytes(int64_t n) {
  const size_t u = static_cast<size_t>(n);
  return 2 * AlignUp256(u * sizeof(float)) + 2 * AlignUp256(u * sizeof(int32_t));
}

inline SortWorkspace CarveSortWorkspace(void* base, int64_t n, size_t sort_bytes) {
  const size_t u = static_cast<size_t>(n);
  char* p = static_cast<char*>(base);
  SortWorkspace w{};
  w.keys_in = reinterpret_cast<float*>(p);
  p += AlignUp256(u * sizeof(float));
  w.keys_out = reinterpret_cast<float*>(p);
  p += AlignUp256(u * sizeof(float));
  w.ids_in = reinterpret_cast<int32_t*>(p);
  p += AlignUp256(u * sizeof(int32_t));
  w.ids_out = reinterpret_cast<int32_t*>(p);
  p += AlignUp256(u * sizeof(int32_t));
  w.sort_scratch = p;
  w.sort_bytes = sort_bytes;
  return w;
}

// Sorts (keys_in, ids_in) into (keys_out, ids_out), keys descending; stable, so equal keys keep
// the order of ids_in.
inline cudaError_t SortPairsDescending(SortWorkspace& w, int64_t n, cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairsDescending(
      w.sort_scratch, w.sort_bytes, w.keys_in, w.keys_out, w.ids_in, w.ids_out, static_cast<int>(n),
      0, static_cast<int>(sizeof(float) * 8), stream);
}

// True when (va, a) ranks before (vb, b): a valid index (>= 0) before none, then the higher
// value, then the lower index.
__device__ __forceinline__ bool RanksBefore(float va, int a, float vb, int b) {
  if (a < 0) return false;
  if (b < 0) return true;
  return va > vb || (va == vb && a < b);
}

// CTA-wide arg-max of each thread's (value, index) candidate (index -1: none). `s_val` and
// `s_idx` hold blockDim.x entries of shared memory; blockDim.x must be a power of two. Every
// thread returns the winner's index (-1 if no thread had a candidate).
__device__ __forceinline__ int CtaArgmax(float v, int idx, float* s_val, int* s_idx) {
  s_val[threadIdx.x] = v;
  s_idx[threadIdx.x] = idx;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const float ov = s_val[threadIdx.x + half];
      const int oi = s_idx[threadIdx.x + half];
      if (RanksBefore(ov, oi, s_val[threadIdx.x], s_idx[threadIdx.x])) {
        s_val[threadIdx.x] = ov;
        s_idx[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  const int winner = s_idx[0];
  __syncthreads();  // The arrays may be reused right after.
  return winner;
}

}  // namespace qllm::cuda::internal

#endif  // QLLM_CUDA_SORT_WORKSPACE_CUH_
