#!/usr/bin/python3
"""CPU throughput of the PyTorch reference (float32, KV cache), for comparison with the engine.

  /usr/bin/python3 tools/reference/bench_ref.py --model DIR --prompt-len 512 --chunk 512 \
      --decode 32 --threads 2

Prefills a random prompt of --prompt-len tokens in chunks of --chunk tokens, then decodes
--decode tokens greedily one at a time, and prints one JSON line:
  {"prefill_tokens_per_s": ..., "decode_tokens_per_s": ..., "threads": ..., ...}
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="reference CPU benchmark")
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = llama_ref.load_model(args.model, torch.float32)
    g = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, model.cfg.vocab_size, (args.prompt_len,), generator=g)
    with torch.inference_mode():
        cache = llama_ref.KVCache(model, args.prompt_len + args.decode)
        t0 = time.perf_counter()
        for s in range(0, args.prompt_len, args.chunk):
            logits = llama_ref.forward_cached(model, prompt[s:s + args.chunk], cache)
        t1 = time.perf_counter()
        token = int(logits[-1].argmax())
        for _ in range(args.decode):
            token = int(llama_ref.forward_cached(model, [token], cache)[-1].argmax())
        t2 = time.perf_counter()
    print(json.dumps({
        "prefill_tokens_per_s": round(args.prompt_len / (t1 - t0), 2),
        "decode_tokens_per_s": round(args.decode / (t2 - t1), 2) if args.decode else None,
        "threads": args.threads,
        "prompt_len": args.prompt_len,
        "chunk": args.chunk,
        "decode": args.decode,
        "implementation": "pytorch-reference-f32",
    }))


if __name__ == "__main__":
    main()
