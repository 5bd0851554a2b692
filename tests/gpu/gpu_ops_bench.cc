// Micro-benchmarks of the GPU ops at Llama-3-8B shapes (hidden 4096, 32 heads, 8 kv heads,
// head_dim 128, intermediate 14336) on the current device, printed as one table:
//   - bf16 GEMM through cuBLASLt (cuda/gemm_lt.h), prefill (m = 2048) and decode (m = 1) for
//     the QKV, gate/up and down projections, against the device's peak dense bf16 rate
//     (SMs x max clock x tensor FLOP/clock/SM, known for sm_80 and sm_90) and, for decode,
//     the weight bandwidth against the peak memory bandwidth;
//   - the two-stage memory attention (cuda/memory_attention.h) for a 512-query chunk over a
//     2K local window + 4K global keys, and for one decode query;
//   - block scoring + top-k (cuda/block_topk.h) over the representative vectors of a 1M-token
//     document with 128- and 16-token blocks.
// Inputs are constant byte patterns (timings do not depend on the values). Times are the mean
// over repeated launches between CUDA events, after warm-up. Exits 0 with a message when no
// device is usable (CPU-only machines), 1 when an op fails.
//
//   gpu_ops_bench [--quick]   (--quick: fewer repetitions)
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "cuda/block_topk.h"
#include "cuda/device.h"
#include "cuda/gemm_lt.h"
#include "cuda/memory_attention.h"

namespace qllm::cuda {
namespace {

struct Row {
  std::string op, shape;
  double us = 0;
  double tflops = -1;    // < 0: not printed.
  double peak_pct = -1;  // Of the relevant peak.
  double gbps = -1;
};

struct Device {
  std::string name;
  int sms = 0, major = 0, minor = 0;
  double clock_ghz = 0;  // Max SM clock.
  double peak_bf16 = 0;  // Dense bf16 tensor TFLOP/s at clock_ghz; 0 if unknown.
  double peak_fp32 = 0;  // CUDA-core fp32 FMA TFLOP/s at clock_ghz; 0 if unknown.
  double peak_gbps = 0;  // DRAM GB/s; 0 if unknown.
};

Device QueryDevice(int dev) {
  cudaDeviceProp prop{};
  Device d;
  if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess) d.name = prop.name;
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess) d.sms = v;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) {
    d.major = v;
  }
  if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess) {
    d.minor = v;
  }
  if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, dev) == cudaSuccess) d.clock_ghz = v * 1e-6;
  int mem_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) == cudaSuccess) {
    d.peak_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) * 1e-9;  // DDR: two transfers/clock.
  }
  cudaGetLastError();  // A failed query must not surface as a later launch error.
  // Dense bf16 tensor-core FLOP per clock per SM: A100 (sm_80) 2048 (312 TFLOP/s at 1.41 GHz
  // x 108 SMs), H100/H200 (sm_90) 4096 (989 TFLOP/s at 1.83 GHz x 132 SMs).
  double per_sm = 0;
  if (d.major == 8 && d.minor == 0) per_sm = 2048;
  if (d.major == 9 && d.minor == 0) per_sm = 4096;
  d.peak_bf16 = per_sm * d.sms * d.clock_ghz * 1e-3;
  // fp32 FMA: 64 (sm_80) or 128 (sm_90) lanes per SM, 2 FLOP each.
  const double fp32_lanes = d.major == 9 ? 128 : (d.major == 8 && d.minor == 0 ? 64 : 0);
  d.peak_fp32 = 2 * fp32_lanes * d.sms * d.clock_ghz * 1e-3;
  return d;
}

// Mean microseconds per call of `launch` over `iters` calls (after `warmup`) on `stream`.
absl::StatusOr<double> TimeUs(const std::function<absl::Status()>& launch, int warmup, int iters,
                              const CudaStream& stream) {
  for (int i = 0; i < warmup; ++i) {
    if (absl::Status s = launch(); !s.ok()) return s;
  }
  absl::StatusOr<CudaEvent> start = CudaEvent::Create(/*timing=*/true);
  if (!start.ok()) return start.status();
  absl::StatusOr<CudaEvent> stop = CudaEvent::Create(/*timing=*/true);
  if (!stop.ok()) return stop.status();
  if (absl::Status s = start->Record(stream.get()); !s.ok()) return s;
  for (int i = 0; i < iters; ++i) {
    if (absl::Status s = launch(); !s.ok()) return s;
  }
  if (absl::Status s = stop->Record(stream.get()); !s.ok()) return s;
  if (absl::Status s = stop->Synchronize(); !s.ok()) return s;
  absl::StatusOr<float> ms = stop->ElapsedMillis(*start);
  if (!ms.ok()) return ms.status();
  return *ms * 1e3 / iters;
}

template <typename T>
absl::StatusOr<DeviceBuffer<T>> Filled(size_t n, int byte) {
  absl::StatusOr<DeviceBuffer<T>> b = DeviceBuffer<T>::Create(n);
  if (!b.ok()) return b.status();
  if (cudaMemset(b->data(), byte, b->bytes()) != cudaSuccess) {
    return absl::InternalError("cudaMemset failed");
  }
  return b;
}

absl::Status Run(bool quick) {
  const Device dev = QueryDevice(0);
  ASSIGN_OR_RETURN(auto stream, CudaStream::Create());
  std::vector<Row> rows;
  const int reps = quick ? 5 : 20;

  // ---- bf16 GEMM (cuBLASLt), C = A[m,k] * W[n,k]^T, bf16 out. ----
  ASSIGN_OR_RETURN(auto gemm, GemmLt::Create());
  constexpr int64_t kMaxM = 2048, kMaxK = 14336, kMaxN = 28672;
  ASSIGN_OR_RETURN(auto d_a, Filled<uint16_t>(kMaxM * kMaxK, 0x3c));
  ASSIGN_OR_RETURN(auto d_w, Filled<uint16_t>(kMaxN * 4096, 0x3c));  // The largest weight: gate/up.
  ASSIGN_OR_RETURN(auto d_c, Filled<uint16_t>(kMaxM * kMaxN, 0));
  ASSIGN_OR_RETURN(auto d_gemm_ws, DeviceBuffer<uint8_t>::Create(GemmLt::kDefaultWorkspaceBytes));
  struct GemmShape {
    const char* name;
    int64_t k, n;
  };
  const GemmShape shapes[] = {{"qkv", 4096, 6144}, {"gate/up", 4096, 28672}, {"down", 14336, 4096}};
  for (int64_t m : {kMaxM, int64_t{1}}) {
    for (const GemmShape& s : shapes) {
      GemmLtParams p;
      p.a = d_a.data();
      p.b = d_w.data();
      p.c_bf16 = d_c.data();
      p.m = m;
      p.n = s.n;
      p.k = s.k;
      p.lda = s.k;
      p.ldb = s.k;
      p.ldc = s.n;
      p.workspace = d_gemm_ws.data();
      p.workspace_bytes = d_gemm_ws.bytes();
      const int iters = m == 1 ? reps * 10 : reps;
      ASSIGN_OR_RETURN(auto us,
                       TimeUs([&] { return gemm->Launch(p, stream.get()); }, 3, iters, stream));
      Row r;
      r.op = absl::StrFormat("gemm bf16 %s %s", s.name, m == 1 ? "decode" : "prefill");
      r.shape = absl::StrFormat("m=%d k=%d n=%d", m, s.k, s.n);
      r.us = us;
      r.tflops = 2.0 * m * s.n * s.k / (us * 1e-6) * 1e-12;
      if (dev.peak_bf16 > 0) r.peak_pct = 100 * r.tflops / dev.peak_bf16;
      r.gbps = 2.0 * (m * s.k + s.n * s.k + m * s.n) / (us * 1e-6) * 1e-9;
      rows.push_back(r);
    }
  }

  // ---- Memory attention: Llama-3-8B heads, local window 2K, 4K global keys. ----
  constexpr int64_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kLocal = 2048, kGlobal = 4096;
  constexpr int64_t kQDim = kHeads * kHeadDim, kKvDim = kKvHeads * kHeadDim, kChunk = 512;
  ASSIGN_OR_RETURN(auto d_q, Filled<float>(kChunk * kQDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_lk, Filled<float>(kLocal * kKvDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_lv, Filled<float>(kLocal * kKvDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_gk, Filled<float>(kGlobal * kKvDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_gv, Filled<float>(kGlobal * kKvDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_out, Filled<float>(kChunk * kQDim, 0));
  ASSIGN_OR_RETURN(auto d_scores, Filled<float>(kLocal * kHeads, 0));
  for (int64_t n : {kChunk, int64_t{1}}) {
    MemoryAttentionParams p;
    p.q_local = d_q.data();
    p.q_global = d_q.data();
    p.local_k = d_lk.data();
    p.local_v = d_lv.data();
    p.global_k = d_gk.data();
    p.global_v = d_gv.data();
    p.out = d_out.data();
    p.local_scores = d_scores.data();
    p.n = n;
    p.start = 16384;
    p.num_local = kLocal;
    p.local_first = p.start + n - kLocal;  // The window ends at the last query.
    p.num_global = kGlobal;
    p.n_local = kLocal;
    p.heads = kHeads;
    p.kv_heads = kKvHeads;
    p.head_dim = kHeadDim;
    p.scale = 0.08838834764f;
    ASSIGN_OR_RETURN(auto d_ws, DeviceBuffer<uint8_t>::Create(MemoryAttentionWorkspaceBytes(p)));
    ASSIGN_OR_RETURN(
        auto us,
        TimeUs([&] { return LaunchMemoryAttention(p, d_ws.data(), d_ws.bytes(), stream.get()); }, 2,
               n == 1 ? reps * 10 : reps, stream));
    // Visible keys per query: all global keys, and the causal part of the window.
    double keys = 0;
    for (int64_t i = 0; i < n; ++i) keys += kGlobal + (kLocal - (n - 1 - i));
    Row r;
    r.op = n == 1 ? "memory_attention decode" : "memory_attention chunk";
    r.shape = absl::StrFormat("n=%d local=%d global=%d", n, kLocal, kGlobal);
    r.us = us;
    r.tflops = 4.0 * kHeads * kHeadDim * keys / (us * 1e-6) * 1e-12;     // QK^T and PV.
    if (dev.peak_fp32 > 0) r.peak_pct = 100 * r.tflops / dev.peak_fp32;  // fp32 CUDA cores.
    r.gbps = 4.0 * (2 * (kLocal + kGlobal) * kKvDim + 2 * n * kQDim) / (us * 1e-6) * 1e-9;
    rows.push_back(r);
  }

  // ---- Block scoring + top-k over a 1M-token document. ----
  constexpr int64_t kDocTokens = int64_t{1} << 20, kTopK = 32;
  ASSIGN_OR_RETURN(auto d_reprs, Filled<float>((kDocTokens / 16) * kQDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_qbar, Filled<float>(kQDim, 0x3c));
  ASSIGN_OR_RETURN(auto d_ids, DeviceBuffer<int32_t>::Create(kTopK));
  ASSIGN_OR_RETURN(auto d_top, DeviceBuffer<float>::Create(kTopK));
  for (int64_t block_size : {int64_t{128}, int64_t{16}}) {
    BlockTopKParams p;
    p.reprs = d_reprs.data();
    p.qbar = d_qbar.data();
    p.question = d_qbar.data();
    p.question_weight = 1.0f;
    p.num_blocks = kDocTokens / block_size;
    p.q_dim = kQDim;
    p.topk = kTopK;
    p.ids = d_ids.data();
    p.scores = d_top.data();
    ASSIGN_OR_RETURN(auto ws_bytes, BlockTopKWorkspaceBytes(p.num_blocks));
    ASSIGN_OR_RETURN(auto d_ws, DeviceBuffer<uint8_t>::Create(ws_bytes));
    ASSIGN_OR_RETURN(
        auto us, TimeUs([&] { return LaunchBlockTopK(p, d_ws.data(), d_ws.bytes(), stream.get()); },
                        2, reps, stream));
    Row r;
    r.op = "block_topk";
    r.shape = absl::StrFormat("B=%d q_dim=%d top%d", p.num_blocks, kQDim, kTopK);
    r.us = us;
    r.gbps = 4.0 * p.num_blocks * kQDim / (us * 1e-6) * 1e-9;  // R is read once.
    if (dev.peak_gbps > 0) r.peak_pct = 100 * r.gbps / dev.peak_gbps;
    rows.push_back(r);
  }

  // ---- The table (tests/gpu/run.sh copies from the first line to the end). ----
  std::printf("GPU ops benchmark: %s (sm_%d%d), %d SMs, max clock %.2f GHz\n", dev.name.c_str(),
              dev.major, dev.minor, dev.sms, dev.clock_ghz);
  auto peak = [](double v, const char* unit) {
    return v > 0 ? absl::StrFormat("%.0f %s", v, unit) : std::string("unknown");
  };
  std::printf("  peaks: dense bf16 %s, fp32 FMA %s, DRAM %s\n",
              peak(dev.peak_bf16, "TFLOP/s").c_str(), peak(dev.peak_fp32, "TFLOP/s").c_str(),
              peak(dev.peak_gbps, "GB/s").c_str());
  std::printf("  %%peak: gemm vs bf16, memory_attention vs fp32, block_topk vs DRAM\n");
  std::printf("  %-26s %-30s %10s %9s %6s %8s\n", "op", "shape", "time_us", "TFLOP/s", "%peak",
              "GB/s");
  for (const Row& r : rows) {
    const std::string tf = r.tflops >= 0 ? absl::StrFormat("%.1f", r.tflops) : "-";
    const std::string pct = r.peak_pct >= 0 ? absl::StrFormat("%.0f%%", r.peak_pct) : "-";
    const std::string gb = r.gbps >= 0 ? absl::StrFormat("%.0f", r.gbps) : "-";
    std::printf("  %-26s %-30s %10.1f %9s %6s %8s\n", r.op.c_str(), r.shape.c_str(), r.us,
                tf.c_str(), pct.c_str(), gb.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace qllm::cuda

int main(int argc, char** argv) {
  // Line-buffered, so that a run killed at its time limit still shows how far it got.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  bool quick = false;
  for (int i = 1; i < argc; ++i) quick = quick || std::strcmp(argv[i], "--quick") == 0;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("gpu_ops_bench: no usable CUDA device (%s); nothing to measure\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 0;
  }
  if (const absl::Status s = qllm::cuda::Run(quick); !s.ok()) {
    std::fprintf(stderr, "gpu_ops_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
