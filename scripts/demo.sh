#!/usr/bin/env bash
# The main job, for now: a small random Llama checkpoint in the real on-disk format, checked
# and inspected by qllmctl, then text generation with full attention and with the Q-LLM
# context memory. (The built-in trained model and the long-document demo replace the random
# checkpoint once they land.)
set -euo pipefail
build_dir=${1:-build}
model_dir="$build_dir/demo-model"
if [ ! -f "$model_dir/config.json" ]; then
  /usr/bin/python3 tools/reference/make_checkpoint.py --out "$model_dir" --preset gqa4_llama3
fi
"$build_dir/cli/qllmctl" inspect "$model_dir" | head -12
prompt=$(seq -s, 5 4 300)
echo
echo "== full attention, greedy"
"$build_dir/cli/qllmctl" generate --model="$model_dir" --prompt_ids="$prompt" --max_new_tokens=24
echo
echo "== qllm context memory (n_init 8, n_local 32, blocks of 8, top-4), question = first 10 tokens"
"$build_dir/cli/qllmctl" generate --model="$model_dir" --prompt_ids="$prompt" \
  --max_new_tokens=24 --mode=qllm --n_init=8 --n_local=32 --block_size=8 --topk=4 \
  --exc_block_size=16 --question_begin=0 --question_end=10
echo
echo "== seeded sampling (temperature 0.8, top-k 40, top-p 0.95)"
"$build_dir/cli/qllmctl" generate --model="$model_dir" --prompt_ids="$prompt" \
  --max_new_tokens=24 --temperature=0.8 --top_k=40 --top_p=0.95 --seed=7
