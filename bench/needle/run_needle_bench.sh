#!/usr/bin/env bash
# Needle-in-a-haystack benchmark of the built-in model (models/qllm-tiny) through the C++
# engine in the four attention modes; writes a Markdown table, a JSON file with every case and
# one heat map per mode and task.
#
#   bench/needle/run_needle_bench.sh [BUILD_DIR] [--full] [--model DIR] [--out DIR]
#       [--cases N] [--tasks passkey,magic] [--modes full,streaming,infllm,qllm]
#       [--threads N] [-- extra qllm_needle_bench flags]
#
#   (default)  quick: documents of 1K, 2K, 4K, 8K, 16K tokens, depths 0/25/50/75/100%,
#              3 documents per cell, pass key; full attention up to 8K (minutes on 2 cores).
#   --full     documents of 1K .. 1M tokens (powers of two), same depths, 2 per cell, pass key
#              and multi-needle magic numbers; blocks in RocksDB from 64K (hours on 2 cores).
#   --model    model directory (default models/qllm-tiny)
#   --out      output directory (default BUILD_DIR/needle): needle.md, needle.json, PNGs
#   --cases    documents per cell
#   --tasks    passkey (one pass key), magic (2-4 "special magic number for X" needles)
#   --modes    attention modes to run
#   --threads  OMP_NUM_THREADS for the engine (default: $OMP_NUM_THREADS, else 1: the model
#              is so small that OpenMP's per-region synchronisation costs more than it saves)
# Anything after "--" goes to qllm_needle_bench (e.g. --full_max_tokens=16384, --seed=2).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then build=$1; shift; fi
model="$root/models/qllm-tiny"
out=""
lengths="1K,2K,4K,8K,16K"
depths="0,0.25,0.5,0.75,1"
cases=3
tasks="passkey"
modes="full,streaming,infllm,qllm"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) lengths="1K,2K,4K,8K,16K,32K,64K,128K,256K,512K,1M"; cases=2; tasks="passkey,magic" ;;
    --model) model=$2; shift ;;
    --out) out=$2; shift ;;
    --cases) cases=$2; shift ;;
    --tasks) tasks=$2; shift ;;
    --modes) modes=$2; shift ;;
    --threads) export OMP_NUM_THREADS=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown flag $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
bin="$build/bench/needle/qllm_needle_bench"
[ -x "$bin" ] || { echo "missing $bin: cmake --build $build --target qllm_needle_bench" >&2; exit 1; }
out=${out:-$build/needle}
mkdir -p "$out"
"$bin" --model_dir="$model" --lengths="$lengths" --depths="$depths" --cases="$cases" \
  --tasks="$tasks" --modes="$modes" --out_md="$out/needle.md" --out_json="$out/needle.json" \
  "${extra[@]}"
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  /usr/bin/python3 "$root/bench/needle/plot_needle.py" "$out/needle.json" --out-dir "$out"
else
  echo "python3-matplotlib is missing: no heat maps (scripts/install_deps.sh installs it)" >&2
fi
echo "report: $out/needle.md, cases: $out/needle.json"
