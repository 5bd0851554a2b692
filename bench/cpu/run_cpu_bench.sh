#!/usr/bin/env bash
# CPU benchmark of issue 2 (item 6): engine prefill/decode on the random ~125M-parameter
# bench100m checkpoint, the OpenBLAS sgemm rate at the model's GEMM shapes (same binary, same
# run), and the PyTorch reference (tools/reference/bench_ref.py) with the same settings and
# thread count. Prints a table with the ratios last.
#
#   bench/cpu/run_cpu_bench.sh [BUILD_DIR] [options]
#     --build-dir DIR   CMake build tree holding (or to build) qllm_cpu_bench (also accepted
#                       as the first argument). Default: build
#     --data-dir DIR    checkpoint cache. Default: <build-dir>/bench-data
#     --threads N       OpenMP / torch threads. Default: nproc
#     --prompt-len N    Default: 2048      --chunk N     Default: 512
#     --decode N        Default: 64        --repeats N   Default: 3 (best of; plus 1 warm-up)
#     --torch-repeats N PyTorch runs (best of). Default: 2; 0 skips the reference
#     --out DIR         where the JSON results go. Default: <build-dir>/bench-results
#     --cpu-time        rate both engines by process CPU time instead of wall time (for a
#                       one-thread run on a machine shared with other work)
#
# Aims (issue 2): engine prefill GFLOP/s >= 0.5 x the sgemm rate at 512-token chunks, and
# >= 1.5x the PyTorch reference's tokens/s. The default run takes about 2 minutes on an idle
# 2-core machine (estimated from its CPU time), 6 minutes on one shared with other work.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=$ROOT/build
DATA_DIR=
OUT_DIR=
THREADS=$(nproc)
PROMPT_LEN=2048
CHUNK=512
DECODE=64
REPEATS=3
TORCH_REPEATS=2
CPU_TIME=0
PYTHON=/usr/bin/python3  # Debian's python has torch; the one on PATH may not.

if [[ $# -gt 0 && $1 != -* ]]; then
  BUILD_DIR=$1
  shift
fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --prompt-len) PROMPT_LEN=$2; shift 2 ;;
    --chunk) CHUNK=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --torch-repeats) TORCH_REPEATS=$2; shift 2 ;;
    --cpu-time) CPU_TIME=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run_cpu_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD_DIR=$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)
DATA_DIR=${DATA_DIR:-$BUILD_DIR/bench-data}
OUT_DIR=${OUT_DIR:-$BUILD_DIR/bench-results}
MODEL=$DATA_DIR/bench100m
mkdir -p "$DATA_DIR" "$OUT_DIR"

# Both engines get the same thread count; OpenBLAS (OpenMP build) and torch follow OMP.
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

BENCH=$BUILD_DIR/bench/cpu/qllm_cpu_bench
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" --target qllm_cpu_bench

if ! "$PYTHON" -c 'import torch' 2> /dev/null; then
  echo "run_cpu_bench.sh: $PYTHON cannot import torch (needed for the checkpoint and the" \
    "reference)" >&2
  exit 1
fi

# The checkpoint is written to a temporary directory and renamed, so an interrupted run never
# leaves a half-written cache behind.
if [[ ! -f $MODEL/config.json || ! -f $MODEL/model.safetensors ]]; then
  echo "== writing the bench100m checkpoint to $MODEL"
  rm -rf "$MODEL.tmp"
  "$PYTHON" "$ROOT/tools/reference/make_checkpoint.py" --out "$MODEL.tmp" --preset bench100m
  rm -rf "$MODEL"
  mv "$MODEL.tmp" "$MODEL"
fi

echo "== engine ($THREADS threads; load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$BENCH" --model="$MODEL" --prompt_len="$PROMPT_LEN" --chunk="$CHUNK" --decode="$DECODE" \
  --warmup=1 --repeats="$REPEATS" --json_out="$OUT_DIR/engine.json"

# With --cpu-time, bench_ref.py runs unchanged except that its clock (time.perf_counter)
# is replaced by the process CPU clock.
TORCH_RUN=("$PYTHON")
if [[ $CPU_TIME -eq 1 ]]; then
  TORCH_RUN+=(-c 'import runpy, sys, time
time.perf_counter = time.process_time
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")')
fi
TORCH_JSON=$OUT_DIR/torch.jsonl
: > "$TORCH_JSON"
for ((i = 0; i < TORCH_REPEATS; ++i)); do
  echo "== PyTorch reference, run $((i + 1))/$TORCH_REPEATS" \
    "(load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "${TORCH_RUN[@]}" "$ROOT/tools/reference/bench_ref.py" --model "$MODEL" \
    --prompt-len "$PROMPT_LEN" --chunk "$CHUNK" --decode "$DECODE" --threads "$THREADS" |
    tee -a "$TORCH_JSON"
done

"$PYTHON" - "$OUT_DIR/engine.json" "$TORCH_JSON" "$(cut -d' ' -f1-3 /proc/loadavg)" "$CPU_TIME" \
  <<'EOF'
import json, sys

e = json.load(open(sys.argv[1]))
runs = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
load = sys.argv[3]
cpu_time = sys.argv[4] == "1"
sg = e["sgemm"]
if cpu_time:
    # Rates per CPU-second, and the sgemm baseline per CPU-second too.
    sg["mix_gflop_per_s"] = sg["mix_gflop_per_cpu_s"]
    sg["mix_all_logits_gflop_per_s"] = sg["mix_all_logits_gflop_per_cpu_s"]
    for phase in ("prefill", "prefill_all", "decode"):
        if phase in e:
            p = e[phase]
            scale = p["seconds"] / p["cpu_seconds"]
            p["tokens_per_s"] = p["tokens_per_cpu_s"]
            p["gflop_per_s"] *= scale
            if "weight_gb_per_s" in p:
                p["weight_gb_per_s"] *= scale
for phase, mix in (("prefill", "mix_gflop_per_s"), ("prefill_all", "mix_all_logits_gflop_per_s")):
    if phase in e:
        e[phase]["fraction_of_sgemm"] = e[phase]["gflop_per_s"] / sg[mix]
t_pre = max((r["prefill_tokens_per_s"] for r in runs), default=None)
t_dec = max((r["decode_tokens_per_s"] or 0 for r in runs), default=None)


def row(name, value, note=""):
    print(f"  {name:<46} {value:>8}  {note}")


def fmt(x, spec="{:.1f}"):
    return "n/a" if x is None else spec.format(x)


pre, dec = e["prefill"], e.get("decode")
pre_all = e.get("prefill_all")
print()
print(f"CPU benchmark: bench100m ({e['parameters'] / 1e6:.0f}M params), {e['threads']} threads, "
      f"prompt {e['prompt_len']} in chunks of {e['chunk']}, decode {e['decode_tokens']}, "
      f"best of {e['repeats']} (engine) / {len(runs)} (PyTorch); load avg at end {load}"
      + ("; rates per CPU-second" if cpu_time else ""))
row("sgemm rate at the model's shapes (m=chunk)", fmt(sg["mix_gflop_per_s"]),
    "GFLOP/s, FLOP-mix weighted")
row("engine prefill (last-token logits)", fmt(pre["tokens_per_s"]), "tok/s")
row("engine prefill GFLOP/s", fmt(pre["gflop_per_s"]),
    f"= {pre['fraction_of_sgemm']:.2f} of sgemm (aim >= 0.5)")
if pre_all:
    row("engine prefill, all logits (reference's work)", fmt(pre_all["tokens_per_s"]),
        f"tok/s, {pre_all['gflop_per_s']:.1f} GFLOP/s = "
        f"{pre_all['fraction_of_sgemm']:.2f} of sgemm")
if dec:
    row("engine decode", fmt(dec["tokens_per_s"]),
        f"tok/s, {dec['gflop_per_s']:.1f} GFLOP/s, {dec['weight_gb_per_s']:.1f} GB/s of weights")
row("PyTorch prefill (all logits)", fmt(t_pre), "tok/s")
row("PyTorch decode", fmt(t_dec), "tok/s")
if t_pre:
    if pre_all:
        row("ratio engine/PyTorch prefill, same work",
            fmt(pre_all["tokens_per_s"] / t_pre, "{:.2f}x"),
            "(aim >= 1.5x)")
    row("ratio engine/PyTorch prefill, serving path", fmt(pre["tokens_per_s"] / t_pre, "{:.2f}x"),
        "(engine skips logits of non-final tokens)")
if t_dec and dec:
    row("ratio engine/PyTorch decode", fmt(dec["tokens_per_s"] / t_dec, "{:.2f}x"), "(aim >= 1.5x)")
EOF
