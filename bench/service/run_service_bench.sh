#!/usr/bin/env bash
# Service benchmark (issue 6): gRPC activation throughput on loopback, and the same long inline
# question answered in embedded mode and by three worker processes (relayed, and linked worker to
# worker), side by side.
#
#   bench/service/run_service_bench.sh [BUILD_DIR] [extra service_bench flags]
#
# e.g. --sentences=3000 for a ~33K-token document, --model_dir=DIR for another checkpoint.
set -euo pipefail
build=${1:-build}
shift || true
bin="$build/bench/service/service_bench"
[ -x "$bin" ] || { echo "missing $bin: build the project first" >&2; exit 1; }
exec "$bin" --worker_bin="$build/worker/qllm-worker" \
  --coordinator_bin="$build/coordinator/qllm-coordinator" "$@"
