#!/usr/bin/python3
"""Pass-key (and other task) accuracy of a checkpoint under the reference Q-LLM algorithm.

  /usr/bin/python3 tools/train/eval.py --ckpt build/train/ckpt/step_0001000.pt \
      --lengths 200,400,800 --n 10 [--mode qllm] [--task passkey] [--float32]
  /usr/bin/python3 tools/train/eval.py --model DIR ...     # an exported model directory

Each example is built with corpus.make_example (fixed --seed, needle at a random depth; the
length is the document's length in tokens, the prompt adds ~20). The prompt is prefilled in
one call by tools/reference/qllm_ref.py's QLLMReference (float64 by default) with the built-in
memory parameters (train.DEFAULT_MEMORY, or those stored in the checkpoint / chat_template.json)
and the first question as the question span; then greedy decoding, one chunk per token as in
the engine, until <|eot|> or len(answer)+1 tokens. Correct = the decoded text equals the answer.
This is the number that matters: the C++ engine implements exactly qllm_ref's algorithm.
"""

import argparse
import json
import os
import random
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import bpe  # noqa: E402
import corpus  # noqa: E402
import llama_ref  # noqa: E402
import qllm_ref  # noqa: E402
import train  # noqa: E402


def load(args):
    """(llama_ref.Model, tokenizer, memory params) from --ckpt or --model."""
    dtype = torch.float32 if args.float32 else torch.float64
    if args.ckpt:
        st = torch.load(args.ckpt, map_location="cpu")
        mc = dict(st["model_config"])
        mc.setdefault("head_dim", mc["hidden_size"] // mc["num_attention_heads"])
        cfg = llama_ref.Config(dict(mc, tie_word_embeddings=True))
        model = llama_ref.Model(cfg, {k: v.to(dtype) for k, v in st["model"].items()}, dtype)
        tok_path = args.tokenizer or os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(args.ckpt))), "tokenizer.json")
        memory = st.get("memory", train.DEFAULT_MEMORY)
    else:
        model = llama_ref.load_model(args.model, dtype)
        tok_path = args.tokenizer or os.path.join(args.model, "tokenizer.json")
        memory = dict(train.DEFAULT_MEMORY)
        ct = os.path.join(args.model, "chat_template.json")
        if os.path.exists(ct):
            with open(ct) as f:
                memory.update(json.load(f).get("qllm_parameters", {}))
    return model, bpe.Tokenizer.load(tok_path), memory


def run_one(model, tok, ex, mode, memory, max_new):
    prompt = ex["ids"][:ex["prompt_len"]]
    ref = qllm_ref.QLLMReference(
        model, mode=mode, question_span=ex["question_span"],
        capacity=len(prompt) + max_new + 2,
        **{k: memory[k] for k in ("n_init", "n_local", "block_size", "topk", "repr_topk",
                                  "exc_block_size")},
        question_weight=memory["question_weight"] if mode == "qllm" else 0.0)
    logits = ref.prefill(prompt)[-1]
    eot = tok.special[corpus.EOT]
    out = []
    for _ in range(max_new):
        t = int(logits.argmax())
        if t == eot:
            break
        out.append(t)
        logits = ref.decode(t)
    return tok.decode(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--ckpt", help="a training checkpoint (.pt)")
    g.add_argument("--model", help="an exported model directory (config.json, model.safetensors)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: next to the model / run dir)")
    ap.add_argument("--lengths", default="200,400,800", help="document lengths in tokens")
    ap.add_argument("--n", type=int, default=10, help="examples per length")
    ap.add_argument("--task", default="passkey", choices=sorted(corpus.TASKS) + ["mix"])
    ap.add_argument("--mode", default="qllm", choices=qllm_ref.MODES)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok, memory = load(args)
    results = {}
    for L in [int(x) for x in args.lengths.split(",")]:
        rng = random.Random(args.seed * 7919 + L)
        ok, t0 = 0, time.time()
        for i in range(args.n):
            ex = corpus.make_example(rng, tok, L, task=None if args.task == "mix" else args.task)
            got = run_one(model, tok, ex, args.mode, memory, len(ex["answer_ids"]) + 1)
            ok += got == ex["answer"]
            if args.verbose:
                print(f"  len {len(ex['ids'])} depth {ex['depths'][0]:.2f} {ex['task']}: "
                      f"want {ex['answer']} got {got!r}", flush=True)
        results[L] = ok / args.n
        print(f"{args.mode} {args.task} doc {L} tokens: {ok}/{args.n} = {ok / args.n:.2f} "
              f"({(time.time() - t0) / args.n:.1f} s/example)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "task": args.task, "n": args.n, "memory": memory,
                       "source": args.ckpt or args.model, "accuracy": results}, f, indent=2)


if __name__ == "__main__":
    main()
