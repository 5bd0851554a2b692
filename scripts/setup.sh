#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: installs the packages, configures, builds,
# then runs what was asked.
#
#   scripts/setup.sh demo    # the main job on the built-in model
#   scripts/setup.sh test    # the default test suite (what CI runs)
#   scripts/setup.sh build   # install and build only
#
# Environment: BUILD_DIR (default: build), JOBS (default: nproc), QLLM_CMAKE_ARGS (extra
# configure arguments, e.g. -DQLLM_WITH_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-build}
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}

scripts/install_deps.sh
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${QLLM_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$jobs"

case "$what" in
  build) ;;
  demo) scripts/demo.sh "$build_dir" ;;
  test)
    cd "$build_dir"
    # The default suite: everything but the long runs (those are separate commands; see
    # README.md). It includes the built-in model's pass-key accuracy check (label accuracy).
    # GPU tests skip themselves without a GPU.
    ctest --output-on-failure -j "$jobs" --timeout 1200 -LE long
    ;;
  *)
    echo "usage: scripts/setup.sh demo|test|build" >&2
    exit 2
    ;;
esac
