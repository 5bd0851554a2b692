#!/usr/bin/python3
"""Average the weights of several checkpoints of one run into one checkpoint file.

  /usr/bin/python3 tools/train/average.py --out /tmp/avg.pt CKPT [CKPT ...]

The result is the last checkpoint with its model weights replaced by the element-wise mean of
all of them, and "averaged_from" listing their steps; export.py accepts it and says so in the
model card. Late in training at a small, constant learning rate the weights wander around a
good point; their mean is usually better than any one of them (the built-in model's pass-key
accuracy measured per checkpoint and averaged: tools/train/README.md).
"""

import argparse

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("ckpts", nargs="+")
    args = ap.parse_args()
    sts = [torch.load(p, map_location="cpu") for p in args.ckpts]
    keys = sts[-1]["model"].keys()
    for p, st in zip(args.ckpts, sts):
        if st["model"].keys() != keys or st["model_config"] != sts[-1]["model_config"]:
            raise SystemExit(f"{p}: not the same model as {args.ckpts[-1]}")
    out = dict(sts[-1])
    out["model"] = {k: sum(st["model"][k].double() for st in sts).div(len(sts)).to(
        sts[-1]["model"][k].dtype) for k in keys}
    out["averaged_from"] = [st["step"] for st in sts]
    out.pop("optimizer", None)
    torch.save(out, args.out)
    print(f"{args.out}: mean of steps {out['averaged_from']}")


if __name__ == "__main__":
    main()
