#!/usr/bin/env bash
# The main job: the service (two worker processes with RocksDB memory stores + a coordinator, in
# a temporary directory) finds a pass key hidden in a long document with the built-in model.
#
#   scripts/demo.sh [BUILD_DIR] [--tokens=N | --million] [--depth=D] [--mode=qllm|infllm|...]
#                   [--backend=cpu|cuda]
#
# Default: a ~64K-token document (a minute or two on 2 cores); --million: 1,048,576 tokens.
set -euo pipefail
build_dir=${1:-build}
shift || true
# $PYTHON: an interpreter with grpcio and protobuf (Debian's by default; tests/gpu/run.sh passes
# the GPU machine's own).
cd "$(dirname "$0")/.."
exec "${PYTHON:-/usr/bin/python3}" clients/python/pass_key_demo.py --build "$build_dir" "$@"
