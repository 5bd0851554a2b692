#!/usr/bin/python3
"""Exact-match accuracy of a training checkpoint per retrieval task, ordinary attention.

    /usr/bin/python3 tools/train/eval_tasks.py CKPT [--tokenizer T] [--examples N] [--tokens L]

Generates N examples of each task (passkey, magic1, magic2, magic, kv) of ~L-token documents
from a fixed seed (the same examples for every checkpoint) and prints one line:
`CKPT passkey=... magic1=... ...`. Used for the curriculum tables in README.md.
"""
import argparse
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import train  # noqa: E402

TASKS = ["passkey", "magic1", "magic2", "magic", "kv"]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json (default: the one next to the checkpoint's run)")
    p.add_argument("--examples", type=int, default=48)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tok_path = args.tokenizer or os.path.join(os.path.dirname(os.path.dirname(args.ckpt)),
                                              "tokenizer.json")
    tok = bpe.Tokenizer.load(tok_path)
    model, _ = train.load_model_from_ckpt(args.ckpt)
    model.eval()
    rng = random.Random(args.seed)
    out = []
    for task in TASKS:
        exs = [corpus.make_example(rng, tok, args.tokens, task=task) for _ in range(args.examples)]
        with torch.no_grad():
            acc = train.exact_match(model, exs, None, torch.device("cpu"))
        out.append("%s=%.3f" % (task, acc))
    print(args.ckpt, " ".join(out))


if __name__ == "__main__":
    main()
