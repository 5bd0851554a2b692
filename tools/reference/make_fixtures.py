#!/usr/bin/python3
"""Write random checkpoints plus expected outputs computed by the float64 reference.

  /usr/bin/python3 tools/reference/make_fixtures.py --out DIR [--presets a,b,...] [--qllm]

For each preset (default: all except bench100m) writes OUT/<preset>/ (the checkpoint) and
OUT/<preset>/expected.safetensors with
  prompt_tokens  I32 [300]           random token ids (fixed seed)
  prompt_logits  F32 [300, vocab]    logits at every prompt position
  generated      I32 [21]            greedy tokens: generated[0] = argmax(prompt_logits[-1])
  decode_logits  F32 [20, vocab]     decode_logits[j] = logits at position 300 + j, whose
                                     input token is generated[j]; generated[j+1] = its argmax
The logits come from llama_ref.forward in float64 over the weights exactly as stored on disk
(bf16/f16 values upcast), rounded to F32 when written. Greedy decoding ignores eos.
The greedy tokens are found with the float64 KV-cache path, then all stored logits come from
one plain `forward` over prompt + generated[:20] (causal, so position 300 + j sees exactly
prompt + generated[:j+1]); the script checks both paths agree on every argmax.

The checkpoint seed is chosen by a deterministic search (see make_plain_fixture) and recorded
in the __metadata__ of expected.safetensors ("checkpoint_seed", "prompt_seed").

With --qllm, additionally writes OUT/qllm_<preset>_<mode>/ (expected.safetensors and
params.json; see README.md) for presets mha_untied and gqa2_tied (or --qllm-presets) and the
modes full, streaming, infllm, qllm, using the checkpoints in OUT/<preset>/ (written, with
their plain fixture, if the preset was not in --presets).
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
from make_checkpoint import PRESETS, write_checkpoint  # noqa: E402
from safetensors_io import save_file  # noqa: E402

PROMPT_LEN = 300
DECODE_STEPS = 20
# First seed tried per preset (where the robustness search of make_plain_fixture lands).
SEED_HINTS = {"mha_untied": 2, "gqa2_tied": 0, "gqa4_llama3": 1, "mistral_bf16": 6,
              "llama_f16_sharded": 3}
PROMPT_SEED = 1234
MIN_GAP = 0.05
MIN_DISTINCT = 8
MAX_SEED_TRIES = 20


def min_top_gap(logits):
    """Smallest gap between the two largest logits over the rows (argmax robustness)."""
    top2 = logits.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def greedy_fixture(model, prompt, steps):
    """(prompt_logits, generated, decode_logits) as documented above."""
    n = prompt.shape[0]
    cache = llama_ref.KVCache(model, n + steps)
    logits = llama_ref.forward_cached(model, prompt, cache)
    generated = [int(logits[-1].argmax())]
    for _ in range(steps):
        generated.append(int(llama_ref.forward_cached(model, [generated[-1]], cache)[-1].argmax()))
    seq = torch.cat([prompt, torch.tensor(generated[:steps], dtype=torch.long)])
    logits = llama_ref.forward(model, seq)  # the plain reference gives the stored values
    if logits[n - 1:].argmax(dim=-1).tolist() != generated:
        raise RuntimeError("cached and plain forward disagree on a greedy argmax")
    return logits[:n], torch.tensor(generated, dtype=torch.int32), logits[n:]


def make_plain_fixture(out_dir, preset):
    """Checkpoint + expected outputs for one preset.

    The seed is searched deterministically (SEED_HINTS[preset], then +1, +2, ...) for a
    model whose greedy run is a robust test: at least MIN_DISTINCT distinct generated tokens
    and every greedy argmax ahead of the runner-up by at least MIN_GAP (so float32/float16
    engines do not flip it). The hints are where that search ends today, to save time.
    """
    t0 = time.time()
    ckpt = os.path.join(out_dir, preset)
    first = SEED_HINTS.get(preset, 0)
    for seed in range(first, first + MAX_SEED_TRIES):
        write_checkpoint(ckpt, preset, seed=seed)
        model = llama_ref.load_model(ckpt, torch.float64)
        g = torch.Generator().manual_seed(PROMPT_SEED + seed)
        prompt = torch.randint(0, model.cfg.vocab_size, (PROMPT_LEN,), generator=g)
        prompt_logits, generated, decode_logits = greedy_fixture(model, prompt, DECODE_STEPS)
        gap = min(min_top_gap(prompt_logits[-1:]), min_top_gap(decode_logits))
        distinct = len(set(generated.tolist()))
        if gap >= MIN_GAP and distinct >= MIN_DISTINCT:
            break
    else:
        print(f"warning: {preset}: no seed met the robustness criteria; using the last one")
    save_file({
        "prompt_tokens": prompt.to(torch.int32),
        "prompt_logits": prompt_logits.to(torch.float32),
        "generated": generated.to(torch.int32),
        "decode_logits": decode_logits.to(torch.float32),
    }, os.path.join(ckpt, "expected.safetensors"),
        metadata={"format": "pt", "checkpoint_seed": str(seed), "prompt_seed": str(PROMPT_SEED + seed)})
    print(f"{preset}: seed {seed}, vocab {model.cfg.vocab_size}, logit range "
          f"[{float(prompt_logits.min()):.2f}, {float(prompt_logits.max()):.2f}], "
          f"{distinct} distinct of {len(generated)} generated, "
          f"min top1-top2 gap {gap:.4f}, {time.time() - t0:.2f}s", flush=True)
    return seed


def main(argv=None):
    ap = argparse.ArgumentParser(description="reference fixtures for the QLLM engine tests")
    ap.add_argument("--out", required=True)
    ap.add_argument("--presets", default=None,
                    help="comma-separated presets (default: all but bench100m)")
    ap.add_argument("--qllm", action="store_true", help="also write the Q-LLM context-memory fixtures")
    ap.add_argument("--qllm-presets", default="mha_untied,gqa2_tied")
    ap.add_argument("--qllm-modes", default="full,streaming,infllm,qllm")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    presets = args.presets.split(",") if args.presets else [p for p in PRESETS if p != "bench100m"]
    t0 = time.time()
    for p in presets:
        if p not in PRESETS:
            sys.exit(f"unknown preset {p}")
        make_plain_fixture(args.out, p)
    if args.qllm:
        import qllm_ref  # noqa: E402  (phase 2; imported lazily)
        for p in args.qllm_presets.split(","):
            if p not in presets:
                # The Q-LLM fixtures use the same checkpoint as the plain fixture of the preset.
                make_plain_fixture(args.out, p)
            qllm_ref.make_fixtures(args.out, p, args.qllm_modes.split(","))
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
