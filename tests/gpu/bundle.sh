#!/usr/bin/env bash
# Builds what tests/gpu/run.sh runs, on THIS machine (Debian 12 with the CUDA toolkit: nvcc
# compiles here even without a GPU), and packs it with the shared libraries it needs from
# Debian into one archive that travels to a GPU machine whose image lacks those libraries (the
# device tool's image has CUDA, cuBLAS, PyTorch and NCCL's Python wheel, but no gRPC, abseil,
# RocksDB or OpenBLAS, and nothing can be installed there). run.sh finds the archive and runs
# from it instead of building.
#
#   tests/gpu/bundle.sh [BUILD_DIR]     # default: build-gpu
#
# Writes .gpu-bundle/qllm-gpu-bundle.tar.xz (ignored by git; about 20-30 MB) holding, in the
# build tree's layout: the GPU test binaries and their list, gpu_ops_bench, device_model_bench,
# qllm-worker, qllm-coordinator, the generated Python protocol (python/), and lib/ with every
# shared library they load except the C runtime and the CUDA libraries (cudart, cuBLAS,
# cuBLASLt, NCCL), which must come from the GPU machine (run.sh puts its toolkit's and NCCL's
# wheel's directories on LD_LIBRARY_PATH). The binaries need a glibc and libstdc++ at least as
# new as Debian 12's. Carry .gpu-bundle with the device tool.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${1:-$ROOT/build-gpu}
CUDA_ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
OUT_DIR=$ROOT/.gpu-bundle
ARCHIVE=$OUT_DIR/qllm-gpu-bundle.tar.xz

cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQLLM_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" -DQLLM_BUILD_TESTS=ON -DQLLM_BUILD_BENCH=ON > /dev/null
cmake --build "$BUILD_DIR" --target qllm_gpu_tests qllm-worker qllm-coordinator \
  qllm_python_proto -j "$JOBS"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The GPU tests: every executable ctest -L gpu runs, by its path in the build tree.
tests=$(cd "$BUILD_DIR" && ctest -L gpu -N --show-only=json-v1 |
  "${PYTHON:-python3}" -c '
import json, os, sys
seen = []
for t in json.load(sys.stdin)["tests"]:
    exe = os.path.relpath(t["command"][0], sys.argv[1])
    if exe not in seen:
        seen.append(exe)
print("\n".join(seen))' "$BUILD_DIR")
[[ -n $tests ]] || { echo "bundle.sh: ctest -L gpu lists no tests" >&2; exit 1; }
files="$tests
tests/gpu/gpu_ops_bench
tests/gpu/device_model_bench
worker/qllm-worker
coordinator/qllm-coordinator"
while read -r f; do
  mkdir -p "$stage/$(dirname "$f")"
  cp "$BUILD_DIR/$f" "$stage/$f"
done <<< "$files"
echo "$tests" > "$stage/gpu_tests.txt"
cp -r "$BUILD_DIR/python" "$stage/python"

# Shared libraries, less the C runtime and the CUDA ones the GPU machine has.
mkdir -p "$stage/lib"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libgcc_s|libstdc\+\+|libcuda\.so|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)'
while read -r f; do
  ldd "$BUILD_DIR/$f" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done <<< "$files" | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$stage/lib/$name"
done
(cd "$ROOT" && git rev-parse HEAD 2> /dev/null || echo unknown) > "$stage/COMMIT"

mkdir -p "$OUT_DIR"
tar -C "$stage" -cf - . | xz -T"$JOBS" -6 > "$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "bundle.sh: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1); $(wc -l < "$stage/gpu_tests.txt") test" \
  "binaries, $(find "$stage/lib" -type f | wc -l) libraries; commit $(cat "$stage/COMMIT"))"
