#!/usr/bin/python3
"""Prompts exactly as the built-in model was trained on them, for qllm_tiny_template_test.

  /usr/bin/python3 tests/model/training_prompts.py --model models/qllm-tiny --out prompts.json

Builds documents with tools/train/corpus.py (every task, lengths 10-300 tokens, needles at
random depths; the same calls corpus.make_example makes), renders them with corpus.TEMPLATE
and encodes them with tools/train/bpe.py and the model's tokenizer.json, as training did.
Writes a JSON list of {question, context, ids, question_span}: the C++ chat template
"qllm-tiny" must produce the same ids and span from (question, context).
"""

import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "train"))
import bpe  # noqa: E402
import corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (its tokenizer.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    tok = bpe.Tokenizer.load(os.path.join(args.model, "tokenizer.json"))
    rng = random.Random(args.seed)
    out = []
    for i in range(args.n):
        task = sorted(corpus.TASKS)[i % len(corpus.TASKS)]
        needles, question, answer = corpus.TASKS[task](rng)
        doc, _ = corpus.make_document(rng, needles, rng.randint(10, 300), tok)
        ids = tok.encode(corpus.render_prompt(question, doc), allow_special=True)
        out.append({"task": task, "question": question, "context": doc, "answer": answer,
                    "ids": ids, "question_span": list(corpus.question_span(ids, tok))})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(f"wrote {len(out)} training-format prompts to {args.out}")


if __name__ == "__main__":
    main()
