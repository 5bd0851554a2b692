#!/usr/bin/env bash
# Scaling benchmark of the context memory (issue 4): prefill time per token and peak RSS at
# growing document lengths, qllm mode in the paper's "1K" setting, full attention up to where
# it is still practical on this machine. Each point runs in its own process.
#
#   bench/qllm/run_scaling_bench.sh [BUILD_DIR] [--quick]
#
# --quick stops at 64K tokens (a minute); the default goes to 1M (a few minutes on 2 cores).
set -euo pipefail
build=${1:-build}
quick=${2:-}
bin="$build/bench/qllm/qllm_scaling_bench"
[ -x "$bin" ] || { echo "missing $bin: build the project first" >&2; exit 1; }
qllm_lengths="16384 65536 262144 1048576"
full_lengths="16384 65536"
if [ "$quick" = "--quick" ]; then qllm_lengths="16384 65536"; full_lengths="16384"; fi
out=$(mktemp)
store_root=$(mktemp -d)
trap 'rm -rf "$store_root"' EXIT
for n in $qllm_lengths; do "$bin" --mode=qllm --tokens="$n" | tee -a "$out"; done
# The same with memory blocks in the RocksDB store (64 MiB host cache): RSS stays flat.
for n in $qllm_lengths; do
  "$bin" --mode=qllm --tokens="$n" --store_dir="$store_root/$n" | tee -a "$out"
  rm -rf "${store_root:?}/$n"
done
for n in $full_lengths; do "$bin" --mode=full --tokens="$n" | tee -a "$out"; done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print()
print("| mode | blocks in | tokens | seconds | us/token | us/token (last 25%) | peak RSS MB | host attention state MB | block store MB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['mode']} | {r['store']} | {r['tokens']} | {r['seconds']:.1f} | {r['us_per_token']:.1f} | "
          f"{r['us_per_token_last_quarter']:.1f} | {r['peak_rss_mb']:.0f} | "
          f"{r['host_attention_state_mb']:.1f} | {r['block_store_mb']:.0f} |")
for mode, store in (("qllm", "host"), ("qllm", "rocksdb"), ("full", "host")):
    rs = [r for r in rows if r["mode"] == mode and r["store"] == store]
    if len(rs) >= 2:
        lo, hi = rs[0], rs[-1]
        print(f"{mode} ({store}): per-token cost at {hi['tokens']} / at {lo['tokens']} tokens = "
              f"{hi['us_per_token'] / lo['us_per_token']:.2f}x "
              f"(last-quarter marginal cost: {hi['us_per_token_last_quarter'] / lo['us_per_token_last_quarter']:.2f}x)")
PY
rm -f "$out"
