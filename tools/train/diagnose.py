#!/usr/bin/python3
"""Where a checkpoint's long-context pass-key answers go wrong: reading or finding the needle.

  /usr/bin/python3 tools/train/diagnose.py --ckpt build/train3/ckpt/step_0005000.pt \
      --tokenizer build/train3/tokenizer.json [--n 24] [--doc 450] [--seed 99]

Pass-key examples with the needle at depth 0-50% (far outside the 128-token window), teacher
forced, qllm mode with the built-in memory parameters. Prints per answer position (digits,
then <|eot|>) the fraction of argmax hits and the exact-match rate, three ways:
  oracle     the needle's blocks given to every chunk (train.oracle_selections, hit 1.0)
  exact      the algorithm's own retrieval (train.qllm_attention, the chunk loop)
  no needle  random blocks only (what the model answers without the needle)
and how often the algorithm's selection in the answer's chunk holds all the needle's blocks
(per layer and example).
"""

import argparse
import os
import random
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import corpus  # noqa: E402
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--doc", type=int, default=450, help="document tokens")
    ap.add_argument("--seed", type=int, default=99)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = train.load_model_from_ckpt(args.ckpt)
    model.eval()
    tok = bpe.Tokenizer.load(args.tokenizer)
    mp = dict(train.DEFAULT_MEMORY)
    rng = random.Random(args.seed)
    exs = [corpus.make_example(rng, tok, args.doc, task="passkey", depth=rng.uniform(0.0, 0.5))
           for _ in range(args.n)]
    ids, tgt, _ans, qbar, qspans = train.collate(exs, 0, "cpu")
    n = ids.shape[1]

    def report(name, logits):
        ok = logits.argmax(-1) == tgt
        rows = [[bool(ok[b, p]) for p in range(x["prompt_len"] - 1, len(x["ids"]) - 1)]
                for b, x in enumerate(exs)]
        pp = torch.tensor(rows, dtype=torch.float)
        pos = " ".join(f"{v:.2f}" for v in pp.mean(0).tolist())
        print(f"{name:10s} per position {pos}   exact {float(pp.all(1).float().mean()):.2f}")

    with torch.no_grad():
        for name, hit in (("oracle", 1.0), ("no needle", 0.0)):
            sel = train.oracle_selections(exs, n, mp, random.Random(1), hit)
            report(name, model(ids, memory=mp, qspans=qspans, qbar_mask=qbar,
                               vis=train.visibility(n, mp, sel)))
        log = {}
        report("exact", model(ids, memory=mp, qspans=qspans, qbar_mask=qbar, sel_log=log))
    sched = train.chunk_schedule(n, mp)
    hits = tot = 0
    for b, x in enumerate(exs):
        sp = train.needle_span(x)
        c = (x["prompt_len"] - 1) // mp["exc_block_size"]
        need = [i for i, s in enumerate(sched[c][4])
                if s < sp[1] and s + mp["block_size"] > sp[0]][:mp["topk"]]
        for li in sorted(log):
            if log[li][c] is not None:
                tot += 1
                hits += all(i in set(log[li][c][b].tolist()) for i in need)
    print(f"the algorithm's selection in the answer's chunk holds all needle blocks: {hits}/{tot}")


if __name__ == "__main__":
    main()
