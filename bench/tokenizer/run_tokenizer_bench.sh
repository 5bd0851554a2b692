#!/usr/bin/env bash
# Times this project's tokenizer and the JavaScript reference (@lenml/tokenizers) on the same
# deterministic corpus, single thread each, and prints both throughputs and the ratio.
#
# Usage: bench/tokenizer/run_tokenizer_bench.sh [BUILD_DIR] [MB] [FAMILY]
#   BUILD_DIR  CMake build directory holding bench/tokenizer/tokenizer_bench (default: build)
#   MB         corpus size in MB (default: 4)
#   FAMILY     llama3 (byte-level BPE, default) or mistral (SentencePiece)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build}"
mb="${2:-4}"
family="${3:-llama3}"
cache="${QLLM_TOKENIZER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qllm/npm}"

"$root/tests/unit/tokenizer/fetch_tokenizers.sh" "$cache" >&2
bench="$build/bench/tokenizer/tokenizer_bench"
if [[ ! -x "$bench" ]]; then
  echo "ERROR: $bench not built (cmake --build $build --target tokenizer_bench)" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
corpus="$scratch/corpus.bin"
model_dir="$cache/$family"
if [[ "$family" == mistral ]]; then
  # LoadTokenizer picks tokenizer.model here: Mistral's tokenizer.json is not byte-level.
  model_dir="$scratch/mistral"
  mkdir -p "$model_dir"
  cp "$cache/mistral/tokenizer.model" "$model_dir/"
fi

ours="$("$bench" --model-dir "$model_dir" --mb "$mb" --corpus-out "$corpus")"
theirs="$(node "$root/tests/unit/tokenizer/reference_tokenize.mjs" --cache "$cache" \
  --model-dir "$cache/$family" --in "$corpus" --time)"

python3 - "$ours" "$theirs" "$family" <<'PY'
import json, sys
ours, theirs, family = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"family:            {family}")
print(f"corpus:            {ours['bytes'] / 1e6:.2f} MB, {ours['tokens']} tokens")
print(f"qllm (C++):        {ours['mb_per_s']:8.2f} MB/s  ({ours['seconds']:.3f} s)")
print(f"reference (JS):    {theirs['mb_per_s']:8.2f} MB/s  ({theirs['seconds']:.3f} s)")
print(f"ratio:             {ours['mb_per_s'] / theirs['mb_per_s']:8.2f}x")
print(f"one {ours['bytes'] / 1e6:.2f} MB document: {ours['one_doc_seconds']:.3f} s, "
      f"{ours['one_doc_tokens']} tokens")
if theirs["tokens"] != ours["tokens"]:
    print(f"WARNING: token counts differ: qllm {ours['tokens']} vs reference {theirs['tokens']}")
PY
