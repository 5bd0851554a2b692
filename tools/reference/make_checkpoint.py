#!/usr/bin/python3
"""Generate random Llama / Mistral checkpoints in the real Hugging Face on-disk format.

  /usr/bin/python3 tools/reference/make_checkpoint.py --out DIR --preset mha_untied \
      [--seed 0] [--dtype f32|f16|bf16] [--shards N]

Writes DIR/config.json and DIR/model.safetensors, or, with --shards N > 1,
DIR/model-0000i-of-0000N.safetensors plus DIR/model.safetensors.index.json
({"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}).

Weights are random (fixed seed) but scaled so that a random model behaves "alive": each
linear layer has std gain/sqrt(fan_in) so activations stay O(1), attention logits have a
spread of a couple of units (non-uniform attention), and the output logits span several
units, so greedy decoding does not collapse onto a single repeated token.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_file, tensor_bytes  # noqa: E402

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
_MISTRAL = {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}

# name -> (architecture, size/config overrides, default dtype, default shards)
PRESETS = {
    "mha_untied": dict(
        arch=_LLAMA, dtype="f32", shards=1,
        cfg=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                 num_hidden_layers=2, intermediate_size=172, vocab_size=256,
                 rope_theta=10000.0, tie_word_embeddings=False,
                 max_position_embeddings=4096, rms_norm_eps=1e-5)),
    "gqa2_tied": dict(
        arch=_LLAMA, dtype="f32", shards=1,
        cfg=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, intermediate_size=128, vocab_size=320,
                 rope_theta=500000.0, tie_word_embeddings=True,
                 max_position_embeddings=8192, rms_norm_eps=1e-5)),
    "gqa4_llama3": dict(
        arch=_LLAMA, dtype="f32", shards=1,
        cfg=dict(hidden_size=128, num_attention_heads=8, num_key_value_heads=2,
                 num_hidden_layers=3, intermediate_size=256, vocab_size=384,
                 rope_theta=500000.0, tie_word_embeddings=False,
                 max_position_embeddings=512, rms_norm_eps=1e-5,
                 # Llama-3.1 style: a list of eos ids, as the real configs have.
                 eos_token_id=[2, 3],
                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 64})),
    "mistral_bf16": dict(
        arch=_MISTRAL, dtype="bf16", shards=1,
        cfg=dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                 num_hidden_layers=2, intermediate_size=192, vocab_size=300,
                 rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None,
                 max_position_embeddings=32768, rms_norm_eps=1e-5)),
    "llama_f16_sharded": dict(
        arch=_LLAMA, dtype="f16", shards=3,
        cfg=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=3, intermediate_size=160, vocab_size=256,
                 rope_theta=10000.0, tie_word_embeddings=False,
                 max_position_embeddings=4096, rms_norm_eps=1e-5)),
    "bench100m": dict(
        arch=_LLAMA, dtype="f32", shards=1,
        cfg=dict(hidden_size=768, num_attention_heads=12, num_key_value_heads=4,
                 num_hidden_layers=12, intermediate_size=2048, vocab_size=32000,
                 rope_theta=500000.0, tie_word_embeddings=False,
                 max_position_embeddings=8192, rms_norm_eps=1e-5)),
}

_TORCH_DTYPE_NAME = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
_ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}

# Scale knobs (std = gain / sqrt(fan_in) for projections).
EMBED_STD = 0.5     # embedding rows; the residual stream starts at rms ~0.5
QK_GAIN = 1.4       # q/k: attention logits with std ~2 -> clearly non-uniform attention
V_GAIN = 1.0
O_GAIN = 0.8
MLP_GAIN = 1.0
HEAD_STD_TIED = 0.35  # tied head = embedding, logits std ~0.35 * sqrt(hidden)
HEAD_GAIN = 2.5     # untied head: logits std ~2.5
NORM_NOISE = 0.1    # norm weights 1 + N(0, 0.1)
# With tied embeddings the head is the embedding, so a residual stream dominated by the
# current token's own embedding makes that token the argmax and greedy decoding repeats it.
# Tied presets therefore scale the layer outputs (o_proj, down_proj) up by this factor.
TIED_RESIDUAL_GAIN = 3.0


def build_config(preset, dtype):
    p = PRESETS[preset]
    cfg = {
        **p["arch"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "rope_scaling": None,
        "torch_dtype": _TORCH_DTYPE_NAME[dtype],
        "transformers_version": "4.44.0",
        "use_cache": True,
    }
    if p["arch"] is _MISTRAL:
        for k in ("mlp_bias", "pretraining_tp"):
            cfg.pop(k)
    cfg.update(p["cfg"])
    return dict(sorted(cfg.items()))


def random_weights(cfg, seed):
    """Float32 weights with HF names, in model order."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    def norm_w(n):
        return 1.0 + normal((n,), NORM_NOISE)

    hid = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or hid // heads
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    tied = cfg.get("tie_word_embeddings", False)
    out_gain = TIED_RESIDUAL_GAIN if tied else 1.0
    w = {}
    w["model.embed_tokens.weight"] = normal((vocab, hid), HEAD_STD_TIED if tied else EMBED_STD)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_w(hid)
        w[p + "self_attn.q_proj.weight"] = normal((heads * hd, hid), QK_GAIN / hid ** 0.5)
        w[p + "self_attn.k_proj.weight"] = normal((kv * hd, hid), QK_GAIN / hid ** 0.5)
        w[p + "self_attn.v_proj.weight"] = normal((kv * hd, hid), V_GAIN / hid ** 0.5)
        w[p + "self_attn.o_proj.weight"] = normal((hid, heads * hd), out_gain * O_GAIN / (heads * hd) ** 0.5)
        w[p + "post_attention_layernorm.weight"] = norm_w(hid)
        w[p + "mlp.gate_proj.weight"] = normal((inter, hid), MLP_GAIN / hid ** 0.5)
        w[p + "mlp.up_proj.weight"] = normal((inter, hid), MLP_GAIN / hid ** 0.5)
        w[p + "mlp.down_proj.weight"] = normal((hid, inter), out_gain * MLP_GAIN / inter ** 0.5)
    w["model.norm.weight"] = norm_w(hid)
    if not tied:
        w["lm_head.weight"] = normal((vocab, hid), HEAD_GAIN / hid ** 0.5)
    return w


def write_checkpoint(out, preset, seed=0, dtype=None, shards=None):
    """Write a random checkpoint of `preset` to directory `out`; returns (config, n_params)."""
    p = PRESETS[preset]
    dtype = dtype or p["dtype"]
    shards = shards or p["shards"]
    os.makedirs(out, exist_ok=True)
    cfg = build_config(preset, dtype)
    weights = random_weights(cfg, seed)
    st = _ST_DTYPE[dtype]
    torch_dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[st]
    weights = {k: v.to(torch_dt) for k, v in weights.items()}
    n_params = sum(v.numel() for v in weights.values())
    # Remove files a previous run with a different layout may have left.
    for f in os.listdir(out):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(os.path.join(out, f))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    if shards <= 1:
        save_file(weights, os.path.join(out, "model.safetensors"))
        return cfg, n_params
    # Split the tensors, in model order, into `shards` groups of roughly equal byte size.
    sizes = {k: len(tensor_bytes(v)) for k, v in weights.items()}
    total = sum(sizes.values())
    groups = [[] for _ in range(shards)]
    acc = 0
    for name in weights:
        idx = min(shards - 1, acc * shards // total)
        groups[idx].append(name)
        acc += sizes[name]
    weight_map = {}
    for s, names in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: weights[n] for n in names}, os.path.join(out, fname))
        for n in names:
            weight_map[n] = fname
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return cfg, n_params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default=None,
                    help="weight dtype (default: the preset's)")
    ap.add_argument("--shards", type=int, default=None, help="number of shards (default: the preset's)")
    args = ap.parse_args(argv)
    _, n_params = write_checkpoint(args.out, args.preset, args.seed, args.dtype, args.shards)
    print(f"wrote {args.preset} to {args.out} ({n_params} parameters)")


if __name__ == "__main__":
    main()
