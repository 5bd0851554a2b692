#!/usr/bin/python3
"""Check bpe.py's encoder against the JavaScript Hugging Face reference the engine's tokenizer
tests use (tests/unit/tokenizer/reference_tokenize.mjs, @lenml/tokenizers from the npm cache).

  /usr/bin/python3 tools/train/check_tokenizer.py --model-dir DIR [--cache ~/.cache/qllm/npm] [--n 200]

DIR needs tokenizer.json and tokenizer_config.json (export.py writes both). Encodes generated
prompts (special tokens included as text, which both sides parse as added tokens) and some
edge-case strings; prints the number of documents whose ids differ (exit 1 if any).
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import corpus  # noqa: E402

EXTRA = ["", " ", "  hello  world \n\n x", "It's 12345 o'clock, isn't it?", "a\tb\r\nc",
         "Ünïcödé 日本語 €5 ١٢٣", "key-value: silver-river=6241;", "x" * 70, "...!!!???",
         "The pass key is 007. 3.14159 1,000,000"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/qllm/npm"))
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args()
    tok = bpe.Tokenizer.load(os.path.join(a.model_dir, "tokenizer.json"))
    rng = random.Random(5)
    docs = EXTRA + [tok.decode(corpus.make_example(rng, tok, rng.randint(20, 600))["ids"])
                    for _ in range(a.n)]
    with tempfile.TemporaryDirectory() as d:
        cin, cout = os.path.join(d, "c.bin"), os.path.join(d, "ids.bin")
        with open(cin, "wb") as f:
            f.write(struct.pack("<I", len(docs)))
            for s in docs:
                b = s.encode("utf-8")
                f.write(struct.pack("<I", len(b)) + b)
        mjs = os.path.join(HERE, "..", "..", "tests", "unit", "tokenizer", "reference_tokenize.mjs")
        subprocess.run(["node", mjs, "--cache", a.cache, "--model-dir", a.model_dir, "--in", cin,
                        "--out", cout], check=True)
        with open(cout, "rb") as f:
            buf = f.read()
    off = 4
    bad = 0
    for i, s in enumerate(docs):
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        ref = list(struct.unpack_from(f"<{n}i", buf, off))
        off += 4 * n
        mine = tok.encode(s, allow_special=True)
        if mine != ref:
            bad += 1
            if bad <= 5:
                k = next((j for j in range(min(len(mine), len(ref))) if mine[j] != ref[j]),
                         min(len(mine), len(ref)))
                print(f"doc {i} differs at {k}: {s[:60]!r}\n  mine {mine[k:k + 8]}\n  ref  {ref[k:k + 8]}")
    print(f"{len(docs) - bad}/{len(docs)} documents identical")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
