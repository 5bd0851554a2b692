#!/usr/bin/env python3
"""Throughput of the PyTorch reference of the Q-LLM memory (qllm_ref.py) at Llama-3-8B shapes
with random weights, for comparison with tests/gpu/device_model_bench on the same GPU.

  python3 tools/reference/gpu_bench_ref.py --device cuda --lengths 32768 --decode 8

Same model shapes, configuration ("2K": n_init 128, n_local 1024, block_size 128, topk 8,
repr_topk 4, exc_block_size 512, question_weight 4, question = tokens [1, 33)) and timing
(prefill of one document from the first token to the last chunk's logits, then decode steps
of one token) as the C++ benchmark; weights and activations in bf16. The reference keeps every
token's query, key and value of every layer, so a 128K document with 32 layers needs about
60 GB besides the weights: the default length is 32K. Prints one JSON line per measurement and
a last line starting "PyTorch reference:".

--tiny runs a 2-layer model with small shapes (a check of this script on a CPU).
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import qllm_ref  # noqa: E402


def config(layers, tiny):
    d = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
             num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
             rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    if tiny:
        d.update(hidden_size=256, intermediate_size=512, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=1000)
    return llama_ref.Config(d)


def random_model(cfg, dtype, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    h, f = cfg.hidden_size, cfg.intermediate_size
    qd = cfg.num_attention_heads * cfg.head_dim
    kvd = cfg.num_key_value_heads * cfg.head_dim

    def rand(*shape):
        return (torch.rand(*shape, generator=g, device=device, dtype=torch.float32)
                .mul_(0.04).sub_(0.02).to(dtype))

    w = {"model.embed_tokens.weight": rand(cfg.vocab_size, h),
         "lm_head.weight": rand(cfg.vocab_size, h),
         "model.norm.weight": torch.ones(h, dtype=dtype, device=device)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(h, dtype=dtype, device=device)
        w[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=dtype, device=device)
        w[p + "self_attn.q_proj.weight"] = rand(qd, h)
        w[p + "self_attn.k_proj.weight"] = rand(kvd, h)
        w[p + "self_attn.v_proj.weight"] = rand(kvd, h)
        w[p + "self_attn.o_proj.weight"] = rand(h, qd)
        w[p + "mlp.gate_proj.weight"] = rand(f, h)
        w[p + "mlp.up_proj.weight"] = rand(f, h)
        w[p + "mlp.down_proj.weight"] = rand(h, f)
    return llama_ref.Model(cfg, w, dtype)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--lengths", default="32768", help="comma-separated document lengths")
    ap.add_argument("--decode", type=int, default=8, help="decode steps after the longest")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--tiny", action="store_true", help="small shapes, 2 layers (CPU check)")
    args = ap.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    layers = 2 if args.tiny else args.layers
    dtype = getattr(torch, args.dtype)
    cfg = config(layers, args.tiny)
    # qllm_ref creates its tensors without naming a device.
    if hasattr(torch, "set_default_device"):
        torch.set_default_device(args.device)
    elif args.device != "cpu":
        sys.exit(f"torch {torch.__version__} cannot default to {args.device} (needs torch >= 2.0)")
    t0 = time.perf_counter()
    model = random_model(cfg, dtype, args.device, seed=1)
    print(json.dumps({"random_weights_s": round(time.perf_counter() - t0, 2), "layers": layers}),
          flush=True)
    longest = max(lengths)
    g = torch.Generator(device="cpu").manual_seed(2)
    # Drawn on the CPU (a CPU generator cannot draw on the default CUDA device), then moved.
    ids = torch.randint(0, cfg.vocab_size, (longest + args.decode,), generator=g,
                        device="cpu").to(args.device)
    small = dict(n_init=16, n_local=64, block_size=16, topk=4, exc_block_size=32) if args.tiny \
        else dict(n_init=128, n_local=1024, block_size=128, topk=8, exc_block_size=512)
    rows = []
    with torch.inference_mode():
        for length in lengths:
            ref = qllm_ref.QLLMReference(model, mode="qllm", repr_topk=4, question_weight=4.0,
                                         question_span=(1, 33), capacity=length + args.decode,
                                         **small)
            sync(args.device)
            t0 = time.perf_counter()
            # One execution chunk at a time; the logits of all but the last are dropped (the
            # C++ benchmark computes the last token's only).
            exc = ref.exc_block_size
            for s in range(0, length, exc):
                logits = ref._chunk(ids[s:min(s + exc, length)])
            sync(args.device)
            sec = time.perf_counter() - t0
            row = {"prefill_tokens": length, "seconds": round(sec, 3),
                   "prefill_tokens_per_s": round(length / sec, 1)}
            print(json.dumps(row), flush=True)
            rows.append(f"prefill {length // 1024}K: {length / sec:.0f} tokens/s")
            if length == longest and args.decode > 0:
                ms = []
                for i in range(args.decode):
                    t0 = time.perf_counter()
                    logits = ref.decode(int(ids[length + i]))
                    sync(args.device)
                    ms.append((time.perf_counter() - t0) * 1e3)
                mean = sum(ms) / len(ms)
                print(json.dumps({"decode_at": length, "ms_per_token": round(mean, 2)}), flush=True)
                rows.append(f"decode at {length // 1024}K: {mean:.2f} ms/token")
            del logits, ref
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"PyTorch reference: {name}, {layers} layers, {args.dtype}: " + "; ".join(rows))


if __name__ == "__main__":
    main()
