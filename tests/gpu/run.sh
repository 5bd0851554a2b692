#!/usr/bin/env bash
# The GPU check in one command: configure and build the CUDA backend in build-gpu, run the
# GPU parity tests (ctest -L gpu), the GPU op micro-benchmarks (gpu_ops_bench, incl. the bf16
# GEMM rate), the end-to-end benchmark at Llama-3-8B shapes with the Q-LLM memory on the device
# (device_model_bench: prefill 32K and 128K, decode at 128K), the PyTorch reference of the
# same configuration on the same GPU (tools/reference/gpu_bench_ref.py, 32K), then a short CPU
# benchmark, and print a summary table last. Aimed at under 8 minutes on a 16-core H100
# machine (not yet run on one).
#
#   tests/gpu/run.sh
#
# A machine without this project's Debian libraries (the device tool's GPU image: CUDA and
# PyTorch, no gRPC, abseil, RocksDB or OpenBLAS, no network) cannot build. There, run it from a
# bundle made on a Debian 12 machine with the CUDA toolkit (tests/gpu/bundle.sh, which writes
# .gpu-bundle/qllm-gpu-bundle.tar.xz): when that archive exists, run.sh unpacks it into
# BUNDLE_DIR instead of configuring and building, puts its libraries and the machine's CUDA and
# NCCL libraries on LD_LIBRARY_PATH, and runs the GPU test binaries itself (as ctest -L gpu
# would; the CPU benchmark is skipped). With the device tool:
#   here:  tests/gpu/bundle.sh build
#   there: run(command="tests/gpu/run.sh 2>&1 | tail -c 11000", carry=[".gpu-bundle"],
#              timeout_s=600); the logs come back as $OUT/gpu-run-logs.tgz
#
# Environment (all optional):
#   BUNDLE         the prebuilt archive. Default: <repo>/.gpu-bundle/qllm-gpu-bundle.tar.xz when
#                  it exists; empty: always build
#   BUNDLE_DIR     where a bundle is unpacked (emptied first). Default: <repo>/build-gpu-bundle
#   BUILD_DIR      build tree. Default: <repo>/build-gpu
#   CUDA_ARCHS     CMAKE_CUDA_ARCHITECTURES. Default: 90 (H100)
#   JOBS           build parallelism. Default: nproc
#   RUN_BENCH      0 skips the CPU benchmark. Default: 1
#   RUN_GPU_BENCH  0 skips the GPU op micro-benchmarks (gpu_ops_bench). Default: 1
#   RUN_MODEL_BENCH 0 skips device_model_bench. Default: 1
#   MODEL_BENCH_ARGS  its flags. Default: --layers=32 --lengths=32768,131072 --decode=32
#   TIERED_BENCH_ARGS flags of a second run with the blocks in host memory (it also prints
#                  the speedup of overlapping the block loads with the attention), empty to skip.
#                  Default: --tiered --layers=32 --lengths=32768 --decode=16
#   RUN_SERVICE    0 skips the service on the GPU: the main job (scripts/demo.sh, the built-in
#                  model, two worker processes) with --backend=cuda and then --backend=cpu on
#                  the same document. Default: 1
#   SERVICE_ARGS   the demo's flags. Default: --tokens=32768
#   RUN_REF_BENCH  0 skips the PyTorch reference. Default: 1
#   REF_BENCH_ARGS its flags. Default: --layers=32 --lengths=32768 --decode=8
#   PYTHON         interpreter with PyTorch (CUDA) for the reference. Default: python3
#   REQUIRE_GPU    1: fail when the GPU tests skip; 0: allow skipping; default: 1 when
#                  nvidia-smi lists a GPU, else 0
#
# Exit status: non-zero when the build or a GPU test fails (or the tests skip although a GPU
# is listed). A failing benchmark (CPU or GPU) is reported in the table but does not fail the run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-gpu}
CUDA_ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
RUN_BENCH=${RUN_BENCH:-1}
RUN_GPU_BENCH=${RUN_GPU_BENCH:-1}
RUN_MODEL_BENCH=${RUN_MODEL_BENCH:-1}
MODEL_BENCH_ARGS=${MODEL_BENCH_ARGS:---layers=32 --lengths=32768,131072 --decode=32}
TIERED_BENCH_ARGS=${TIERED_BENCH_ARGS---tiered --layers=32 --lengths=32768 --decode=16}
RUN_SERVICE=${RUN_SERVICE:-1}
SERVICE_ARGS=${SERVICE_ARGS:---tokens=32768}
RUN_REF_BENCH=${RUN_REF_BENCH:-1}
REF_BENCH_ARGS=${REF_BENCH_ARGS:---layers 32 --lengths 32768 --decode 8}
PYTHON=${PYTHON:-python3}
export PYTHON  # scripts/demo.sh runs the demo client with it
LOG_DIR=$BUILD_DIR/gpu-run
START=$SECONDS

section() { echo; echo "== $* ($((SECONDS - START)) s)"; }
# Under the device tool, whatever is in $OUT comes back: the logs do, however the run ends.
save_logs() {
  if [[ -n ${OUT:-} && -d ${LOG_DIR:-} ]]; then
    tar -czf "$OUT/gpu-run-logs.tgz" -C "$(dirname "$LOG_DIR")" "$(basename "$LOG_DIR")" || true
  fi
}
trap save_logs EXIT

gpu_list=
if command -v nvidia-smi > /dev/null 2>&1; then
  gpu_list=$(nvidia-smi -L 2>&1 || true)
  section "nvidia-smi -L"
  echo "$gpu_list"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
else
  section "nvidia-smi not found"
fi
if [[ -z ${REQUIRE_GPU:-} ]]; then
  REQUIRE_GPU=0
  if grep -q '^GPU ' <<< "$gpu_list"; then REQUIRE_GPU=1; fi
fi

BUNDLE=${BUNDLE-$ROOT/.gpu-bundle/qllm-gpu-bundle.tar.xz}
bundled=0
if [[ -n $BUNDLE && -f $BUNDLE ]]; then
  bundled=1
  BUILD_DIR=${BUNDLE_DIR:-$ROOT/build-gpu-bundle}
  LOG_DIR=$BUILD_DIR/gpu-run
  section "unpack $BUNDLE into $BUILD_DIR (prebuilt; no build here)"
  rm -rf "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  tar -C "$BUILD_DIR" -xJf "$BUNDLE"
  mkdir -p "$LOG_DIR"
  echo "bundle built from commit $(cat "$BUILD_DIR/COMMIT"); this tree is at" \
    "$(git -C "$ROOT" rev-parse HEAD 2> /dev/null || echo unknown)"
  # The CUDA libraries are this machine's: its toolkit's, then the Python wheels' (NCCL).
  cuda_libs=
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && cuda_libs+=":$d"
  done
  wheel_libs=$("$PYTHON" -c '
import importlib, os
dirs = []
for name in ("nvidia.nccl", "nvidia.cublas", "nvidia.cuda_runtime"):
    try:
        dirs += [os.path.join(p, "lib") for p in importlib.import_module(name).__path__]
    except Exception:
        pass
print(":".join(d for d in dirs if os.path.isdir(d)))' 2> /dev/null || true)
  export LD_LIBRARY_PATH="$BUILD_DIR/lib$cuda_libs${wheel_libs:+:$wheel_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  missing=$(ldd "$BUILD_DIR/worker/qllm-worker" "$BUILD_DIR/tests/gpu/ops_gpu_test" |
    grep 'not found' | sort -u || true)
  if [[ -n $missing ]]; then
    echo "run.sh: libraries the bundle's binaries need are missing here:" >&2
    echo "$missing" >&2
    exit 1
  fi
  RUN_BENCH=0  # The CPU benchmark is not in the bundle.
else
  section "configure $BUILD_DIR (CUDA archs $CUDA_ARCHS)"
  mkdir -p "$LOG_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQLLM_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" -DQLLM_BUILD_TESTS=ON -DQLLM_BUILD_BENCH=ON 2>&1 |
    tee "$LOG_DIR/configure.log"
  if ! grep -q 'QLLM: CUDA backend ON' "$LOG_DIR/configure.log"; then
    echo "run.sh: CMake did not enable the CUDA backend (nvcc missing?); see configure.log" >&2
    exit 1
  fi

  # qllm_gpu_tests (tests/gpu/CMakeLists.txt) builds every binary that ctest -L gpu runs.
  section "build qllm_gpu_tests qllm_cpu_bench qllm-worker qllm-coordinator (-j$JOBS)"
  cmake --build "$BUILD_DIR" --target qllm_gpu_tests qllm_cpu_bench qllm-worker \
    qllm-coordinator qllm_python_proto -j "$JOBS"
fi

# The bundle's GPU test binaries, each run whole (300 s each at most), reported in ctest's
# words for the summary below: "N - Suite.Test (Skipped)" lines and "P% tests passed, F tests
# failed out of T". A binary that exits non-zero without a failed test counts as one failure.
run_bundled_tests() {
  local total=0 failed=0 rc out t name
  while read -r t; do
    echo "== $t"
    out=$(cd "$BUILD_DIR" && timeout 300 "./$t" 2>&1)
    rc=$?
    echo "$out"
    local ok fail skip
    ok=$(grep -c '^\[       OK \] ' <<< "$out" || true)
    fail=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' <<< "$out" || true)
    skip=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' <<< "$out" || true)
    grep -E '^\[  SKIPPED \] .* \([0-9]+ ms\)$' <<< "$out" | while read -r _ _ _ name _; do
      echo "  - $name (Skipped)"
    done
    if [[ $rc -ne 0 && $fail -eq 0 ]]; then
      echo "$t exited with status $rc without a failed test"
      fail=1
    fi
    total=$((total + ok + fail + skip))
    failed=$((failed + fail))
  done < "$BUILD_DIR/gpu_tests.txt"
  echo "$(((total - failed) * 100 / (total > 0 ? total : 1)))% tests passed, $failed tests" \
    "failed out of $total"
  [[ $failed -eq 0 && $total -gt 0 ]]
}

set +e
if [[ $bundled -eq 1 ]]; then
  section "GPU tests (the bundle's binaries)"
  run_bundled_tests 2>&1 | tee "$LOG_DIR/ctest.log"
else
  section "ctest -L gpu"
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --no-tests=error --timeout 300) 2>&1 |
    tee "$LOG_DIR/ctest.log"
fi
ctest_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E 'tests passed' "$LOG_DIR/ctest.log" | tail -1 || true)
skipped=$(grep -c '(Skipped)' "$LOG_DIR/ctest.log" || true)
# The tests named *TwoGpus need two devices: with fewer listed, their skips are expected.
gpu_count=$(grep -c '^GPU ' <<< "$gpu_list" || true)
expected_skips=0
if [[ $gpu_count -lt 2 ]]; then
  expected_skips=$(grep '(Skipped)' "$LOG_DIR/ctest.log" | grep -c 'TwoGpus' || true)
fi
gpu_status=ok
if [[ $ctest_rc -ne 0 ]]; then
  gpu_status="FAILED (rc $ctest_rc)"
elif [[ $((skipped - expected_skips)) -gt 0 && $REQUIRE_GPU -eq 1 ]]; then
  gpu_status="FAILED: $((skipped - expected_skips)) tests skipped although a GPU is expected (REQUIRE_GPU=1)"
elif [[ $skipped -gt 0 && $REQUIRE_GPU -eq 1 ]]; then
  gpu_status="ok ($skipped two-GPU tests skipped: $gpu_count GPU listed)"
elif [[ $skipped -gt 0 ]]; then
  gpu_status="skipped (no usable CUDA device)"
fi
skip_reason=
if [[ $skipped -gt 0 ]]; then
  # ctest hides the output of skipped tests; the reason is the first line after "Skipped".
  skip_reason=$("$BUILD_DIR/tests/gpu/ops_gpu_test" --gtest_filter='OpsGpuTest.AddMatchesRef' 2>&1 |
    grep -A1 ': Skipped' | tail -1 || true)
fi

# Runs "$@" with a time limit of $2 seconds, its output shown and saved to $LOG_DIR/$1.log, and
# prints its status: "ok", "FAILED (...)" for a non-zero exit, or, when a marker line $3 is given
# and missing from the log, "skipped (<its last line>)" (the benchmarks exit 0 with a message
# when no device is usable).
run_step() {
  local name=$1 limit=$2 marker=$3 rc
  shift 3
  set +e
  timeout -k 15 "$limit" "$@" 2>&1 | tee "$LOG_DIR/$name.log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then
    echo "FAILED (rc $rc, see $LOG_DIR/$name.log)"
  elif [[ -n $marker ]] && ! grep -q "^$marker" "$LOG_DIR/$name.log"; then
    echo "skipped ($(tail -1 "$LOG_DIR/$name.log"))"
  else
    echo ok
  fi
}

# gpu_ops_bench (built by qllm_gpu_tests): GEMM / attention / top-k at Llama-3-8B shapes.
gpu_bench_status=skipped
if [[ $RUN_GPU_BENCH -eq 1 ]]; then
  section "GPU op micro-benchmarks (gpu_ops_bench)"
  gpu_bench_status=$(run_step gpu_bench 240 'GPU ops benchmark:' \
    "$BUILD_DIR/tests/gpu/gpu_ops_bench")
fi

# device_model_bench (built by qllm_gpu_tests): the whole model with the context memory on the
# device, blocks on the device, then (TIERED_BENCH_ARGS) in host memory.
model_bench_status=skipped
rm -f "$LOG_DIR/model_bench.log" "$LOG_DIR/model_bench_tiered.log" "$LOG_DIR/ref_bench.log"
if [[ $RUN_MODEL_BENCH -eq 1 ]]; then
  section "end-to-end device benchmark (device_model_bench $MODEL_BENCH_ARGS)"
  # shellcheck disable=SC2086  # the flags are meant to split
  model_bench_status=$(run_step model_bench 300 'Device model benchmark:' \
    "$BUILD_DIR/tests/gpu/device_model_bench" $MODEL_BENCH_ARGS)
  if [[ $model_bench_status == ok && -n $TIERED_BENCH_ARGS ]]; then
    section "end-to-end device benchmark, host tier (device_model_bench $TIERED_BENCH_ARGS)"
    # shellcheck disable=SC2086
    tiered_status=$(run_step model_bench_tiered 260 'Device model benchmark:' \
      "$BUILD_DIR/tests/gpu/device_model_bench" $TIERED_BENCH_ARGS)
    [[ $tiered_status == ok ]] || model_bench_status="ok; host-tier run $tiered_status"
  fi
fi

# The PyTorch reference (tools/reference/qllm_ref.py) at the same shapes and configuration.
ref_bench_status=skipped
if [[ $RUN_REF_BENCH -eq 1 ]]; then
  if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
      > /dev/null 2>&1; then
    section "PyTorch reference on the GPU (gpu_bench_ref.py $REF_BENCH_ARGS)"
    # shellcheck disable=SC2086
    ref_bench_status=$(run_step ref_bench 240 '' env PYTHONUNBUFFERED=1 "$PYTHON" \
      "$ROOT/tools/reference/gpu_bench_ref.py" --device cuda $REF_BENCH_ARGS)
  else
    ref_bench_status="skipped ($PYTHON has no PyTorch with CUDA)"
  fi
fi

# The service with its workers on the GPU (qllm-worker --backend=cuda), then on the CPU, asked
# for the same pass key: both must answer it (the demo exits non-zero on a wrong answer).
service_status=skipped
rm -f "$LOG_DIR/service_cuda.log" "$LOG_DIR/service_cpu.log"
if [[ $RUN_SERVICE -eq 1 ]]; then
  section "service with cuda workers (scripts/demo.sh $SERVICE_ARGS --backend=cuda)"
  # shellcheck disable=SC2086
  # --keep: the workers' and coordinator's logs stay in the demo's temporary directory (its
  # path is in the step's log) for a failure to be diagnosed.
  service_status=$(PYTHONUNBUFFERED=1 run_step service_cuda 240 '' "$ROOT/scripts/demo.sh" \
    "$BUILD_DIR" $SERVICE_ARGS --backend=cuda --keep)
  section "service with cpu workers (scripts/demo.sh $SERVICE_ARGS --backend=cpu)"
  # shellcheck disable=SC2086
  cpu_service=$(PYTHONUNBUFFERED=1 run_step service_cpu 240 '' "$ROOT/scripts/demo.sh" \
    "$BUILD_DIR" $SERVICE_ARGS --backend=cpu --keep)
  service_status="cuda $service_status, cpu $cpu_service"
fi

bench_status=skipped
if [[ $RUN_BENCH -eq 1 ]]; then
  section "CPU benchmark (short run)"
  bench_status=$(run_step bench 300 '' "$ROOT/bench/cpu/run_cpu_bench.sh" \
    --build-dir "$BUILD_DIR" --prompt-len 2048 --chunk 512 --decode 32 --repeats 2 \
    --torch-repeats 1 --out "$LOG_DIR")
fi

section "summary"
printf '  %-26s %s\n' "GPU" "$(grep -m1 '^GPU ' <<< "$gpu_list" || echo none listed)"
printf '  %-26s %s\n' "CUDA archs" "$CUDA_ARCHS"
printf '  %-26s %s\n' "GPU tests (ctest -L gpu)" \
  "$gpu_status; ${summary:-no summary}, $skipped skipped"
[[ -z $skip_reason ]] || printf '  %-26s %s\n' "skip reason" "$skip_reason"
printf '  %-26s %s\n' "GPU op benchmark" "$gpu_bench_status"
if [[ $gpu_bench_status == ok ]]; then
  sed -n '/^GPU ops benchmark:/,$p' "$LOG_DIR/gpu_bench.log" | sed 's/^/  /'
fi
printf '  %-26s %s\n' "device model benchmark" "$model_bench_status"
if [[ $model_bench_status == ok* ]]; then
  sed -n '/^Device model benchmark:/,$p' "$LOG_DIR/model_bench.log" | sed 's/^/  /'
  if [[ -f $LOG_DIR/model_bench_tiered.log ]]; then
    sed -n '/^Device model benchmark:/,$p' "$LOG_DIR/model_bench_tiered.log" | sed 's/^/  /'
  fi
fi
printf '  %-26s %s\n' "PyTorch reference" "$ref_bench_status"
if [[ $ref_bench_status == ok ]]; then
  grep -h '^PyTorch reference:' "$LOG_DIR/ref_bench.log" | sed 's/^/  /' || true
  # Prefill speed-up over the reference at the lengths both measured.
  for len in $(grep -o '"prefill_tokens": [0-9]*' "$LOG_DIR/ref_bench.log" | grep -o '[0-9]*$'); do
    ref=$(grep "\"prefill_tokens\": $len," "$LOG_DIR/ref_bench.log" |
      grep -o '"prefill_tokens_per_s": [0-9.]*' | grep -o '[0-9.]*$')
    dev=$(grep "^prefill $len tokens:" "$LOG_DIR/model_bench.log" 2> /dev/null |
      grep -o '[0-9]* tokens/s' | grep -o '^[0-9]*' || true)
    if [[ -n $ref && -n $dev ]]; then
      printf '  %-26s %s\n' "speed-up at $((len / 1024))K" \
        "$(awk -v d="$dev" -v r="$ref" 'BEGIN { printf "%.1fx (device %d vs reference %.0f tokens/s)", d / r, d, r }')"
    fi
  done
fi
printf '  %-26s %s\n' "service (demo)" "$service_status"
for backend in cuda cpu; do
  if [[ -f $LOG_DIR/service_$backend.log ]]; then
    printf '  %-26s %s\n' "  $backend workers" "$(grep -h -E '^\[|^expected' \
      "$LOG_DIR/service_$backend.log" | tr '\n' ' ')"
  fi
done
printf '  %-26s %s\n' "CPU benchmark" "$bench_status"
if [[ $bench_status == ok ]]; then
  # The benchmark's own table (its last lines).
  sed -n '/^CPU benchmark:/,$p' "$LOG_DIR/bench.log" | sed 's/^/  /'
fi
printf '  %-26s %s\n' "wall time" "$((SECONDS - START)) s; logs in $LOG_DIR"
[[ $gpu_status == ok* || $gpu_status == skipped* ]]
