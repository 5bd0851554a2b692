// The CUDA stream type, declared without including CUDA headers so that op headers compile in
// builds without the CUDA toolkit. Launch functions exist only when QLLM_HAVE_CUDA is defined.
#ifndef QLLM_CUDA_STREAM_H_
#define QLLM_CUDA_STREAM_H_

struct CUstream_st;

namespace qllm::cuda {
using Stream = CUstream_st*;
}  // namespace qllm::cuda

#endif  // QLLM_CUDA_STREAM_H_
