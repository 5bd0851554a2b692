#!/usr/bin/env bash
# ASan + UBSan run of the unit suites (not part of the default suite: it needs its own Debug
# build, about 10 minutes on 2 cores). Fails on any sanitizer report or test failure.
#
#   scripts/sanitize.sh [BUILD_DIR]     # default: build-asan
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build-asan}
scripts/install_deps.sh
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DQLLM_WITH_CUDA=OFF \
  -DQLLM_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$build_dir" -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$build_dir"
ctest --output-on-failure -j "$(nproc)" -L "unit|tokenizer|memstore" --timeout 1800
