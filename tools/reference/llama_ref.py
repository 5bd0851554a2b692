#!/usr/bin/python3
"""Plain PyTorch reference of the Llama / Mistral decoder (Hugging Face semantics).

Written from the architecture (LlamaForCausalLM / MistralForCausalLM), independent of the
C++ engine. Everything is a module-level function over a `Model` holder:

  model = load_model(dir)                # float64 by default, dtype=torch.float32 optional
  logits = forward(model, tokens)        # [n, vocab], causal attention over the whole sequence

Conventions (as in Hugging Face transformers):
  * RMSNorm: x * rsqrt(mean(x^2) + eps) * w
  * RoPE "rotate_half": dimension i is paired with i + D/2; inv_freq[i] = theta^(-2i/D),
    optionally adjusted by the Llama-3.1 "llama3" rope_scaling.
  * attention: scale 1/sqrt(D), causal softmax; GQA: query head h uses kv head h // (H/Hkv).
  * MLP: down(silu(gate(x)) * up(x)).
  * tie_word_embeddings: the embedding matrix is also the output head.

`forward_cached` is a separate incremental (KV-cache) path, used by bench_ref.py and checked
against `forward` in test_reference.py; the fixtures use `forward` only.
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load_file  # noqa: E402


# ----------------------------------------------------------------------------- config

class Config:
    """The subset of config.json the reference needs, with HF defaults."""

    def __init__(self, d):
        self.raw = dict(d)
        self.hidden_size = int(d["hidden_size"])
        self.intermediate_size = int(d["intermediate_size"])
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_attention_heads = int(d["num_attention_heads"])
        kv = d.get("num_key_value_heads")
        self.num_key_value_heads = int(kv) if kv is not None else self.num_attention_heads
        hd = d.get("head_dim")
        self.head_dim = int(hd) if hd is not None else self.hidden_size // self.num_attention_heads
        self.vocab_size = int(d["vocab_size"])
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        theta = d.get("rope_theta")
        self.rope_theta = float(theta) if theta is not None else 10000.0
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
        self.rope_scaling = d.get("rope_scaling")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return Config(json.load(f))


# ----------------------------------------------------------------------------- weights

def load_state_dict(model_dir):
    """All tensors of a checkpoint (single file or sharded with an index), stored dtypes."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            names = [n for n, s in weight_map.items() if s == shard]
            tensors.update(load_file(os.path.join(model_dir, shard), names))
        missing = set(weight_map) - set(tensors)
        if missing:
            raise ValueError(f"tensors missing from shards: {sorted(missing)[:5]}")
        return tensors
    return load_file(os.path.join(model_dir, "model.safetensors"))


class Model:
    """Config + weights (upcast to `dtype`) + RoPE inverse frequencies."""

    def __init__(self, cfg, weights, dtype):
        self.cfg = cfg
        self.dtype = dtype
        self.w = weights
        self.inv_freq = rope_inv_freq(cfg)  # float64
        self.embed = weights["model.embed_tokens.weight"]
        if cfg.tie_word_embeddings:
            self.lm_head = self.embed
        else:
            self.lm_head = weights["lm_head.weight"]

    def layer(self, i, name):
        return self.w[f"model.layers.{i}.{name}.weight"]


def load_model(model_dir, dtype=torch.float64):
    cfg = load_config(model_dir)
    # Upcast exactly what is stored (bf16/f16 values are represented exactly in f32/f64).
    weights = {k: v.to(dtype) for k, v in load_state_dict(model_dir).items()}
    return Model(cfg, weights, dtype)


# ----------------------------------------------------------------------------- building blocks

def rope_inv_freq(cfg):
    """Per-pair inverse frequencies (length D/2), float64, with optional llama3 scaling."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg.rope_scaling
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind in (None, "default"):
            pass
        elif kind == "llama3":
            factor = float(rs["factor"])
            low = float(rs.get("low_freq_factor", 1.0))
            high = float(rs.get("high_freq_factor", 4.0))
            old_len = float(rs["original_max_position_embeddings"])
            low_wavelen = old_len / low
            high_wavelen = old_len / high
            wavelen = 2 * math.pi / inv_freq
            # Long wavelengths are divided by `factor`, short ones are kept, and the band in
            # between interpolates smoothly between the two.
            scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
            smooth = (old_len / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            inv_freq = torch.where(medium, smoothed, scaled)
        else:
            raise ValueError(f"unsupported rope_scaling type {kind!r}")
    return inv_freq


def rope_cos_sin(model, positions):
    """cos, sin of shape [n, D] for integer positions (computed in float64)."""
    pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    freqs = pos[:, None] * model.inv_freq[None, :]  # [n, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # pair (i, i + D/2) shares a frequency
    return emb.cos().to(model.dtype), emb.sin().to(model.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x [..., n, D] rotated by per-position cos/sin [n, D]."""
    return x * cos + rotate_half(x) * sin


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mlp(model, i, x):
    gate = x @ model.layer(i, "mlp.gate_proj").T
    up = x @ model.layer(i, "mlp.up_proj").T
    return (torch.nn.functional.silu(gate) * up) @ model.layer(i, "mlp.down_proj").T


def qkv(model, i, x):
    """Project normalized hidden states x [n, hidden] -> q [H, n, D], k, v [Hkv, n, D] (no RoPE)."""
    c = model.cfg
    n = x.shape[0]
    q = (x @ model.layer(i, "self_attn.q_proj").T).view(n, c.num_attention_heads, c.head_dim)
    k = (x @ model.layer(i, "self_attn.k_proj").T).view(n, c.num_key_value_heads, c.head_dim)
    v = (x @ model.layer(i, "self_attn.v_proj").T).view(n, c.num_key_value_heads, c.head_dim)
    return q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)


def expand_kv(x, groups):
    """[Hkv, n, D] -> [H, n, D] so that query head h sees kv head h // groups."""
    return x.repeat_interleave(groups, dim=0)


def attend(q, k, v, q_pos, k_pos):
    """Causal softmax attention. q [H, n, D], k/v [H, m, D] (already rotated / expanded),
    q_pos [n], k_pos [m] absolute positions: key j is visible to query i iff k_pos[j] <= q_pos[i]."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(1, 2)) * scale  # [H, n, m]
    mask = k_pos[None, :] > q_pos[:, None]
    s = s.masked_fill(mask[None], float("-inf"))
    return torch.softmax(s, dim=-1) @ v  # [H, n, D]


def output_proj(model, i, o):
    """o [H, n, D] -> [n, hidden]."""
    n = o.shape[1]
    return o.transpose(0, 1).reshape(n, -1) @ model.layer(i, "self_attn.o_proj").T


def final_logits(model, h):
    return rms_norm(h, model.w["model.norm.weight"], model.cfg.rms_norm_eps) @ model.lm_head.T


# ----------------------------------------------------------------------------- forward passes

def forward(model, tokens):
    """Logits [n, vocab] for every position of `tokens` (whole sequence, no cache)."""
    c = model.cfg
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    n = tokens.shape[0]
    groups = c.num_attention_heads // c.num_key_value_heads
    pos = torch.arange(n)
    cos, sin = rope_cos_sin(model, pos)
    h = model.embed[tokens]
    for i in range(c.num_hidden_layers):
        x = rms_norm(h, model.layer(i, "input_layernorm"), c.rms_norm_eps)
        q, k, v = qkv(model, i, x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attend(q, expand_kv(k, groups), expand_kv(v, groups), pos, pos)
        h = h + output_proj(model, i, o)
        x = rms_norm(h, model.layer(i, "post_attention_layernorm"), c.rms_norm_eps)
        h = h + mlp(model, i, x)
    return final_logits(model, h)


def grouped_attend(q, k, v, q_pos, k_pos):
    """Causal attention without materialising repeated kv heads: q [H, n, D] is viewed as
    [Hkv, G*n, D] (query head h = kv * G + g), k/v [Hkv, m, D]. Returns [H, n, D]."""
    hq, n, d = q.shape
    hkv = k.shape[0]
    qg = q.reshape(hkv, (hq // hkv) * n, d)
    s = (qg @ k.transpose(1, 2)) * (1.0 / math.sqrt(d))  # [Hkv, G*n, m]
    mask = (k_pos[None, :] > q_pos[:, None]).repeat(hq // hkv, 1)  # [G*n, m], row g*n + i
    s = s.masked_fill(mask[None], float("-inf"))
    return (torch.softmax(s, dim=-1) @ v).reshape(hq, n, d)


class KVCache:
    """Per-layer rotated keys and values [Hkv, capacity, D] for forward_cached."""

    def __init__(self, model, capacity):
        c = model.cfg
        shape = (c.num_key_value_heads, capacity, c.head_dim)
        self.k = [torch.zeros(shape, dtype=model.dtype) for _ in range(c.num_hidden_layers)]
        self.v = [torch.zeros(shape, dtype=model.dtype) for _ in range(c.num_hidden_layers)]
        self.length = 0


def forward_cached(model, tokens, cache):
    """Process `tokens` as the continuation of the sequence held in `cache`; returns logits
    [n, vocab] for the new positions and advances the cache."""
    c = model.cfg
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    n = tokens.shape[0]
    start, end = cache.length, cache.length + n
    if end > cache.k[0].shape[1]:
        raise ValueError("KV cache capacity exceeded")
    q_pos = torch.arange(start, end)
    k_pos = torch.arange(end)
    cos, sin = rope_cos_sin(model, q_pos)
    h = model.embed[tokens]
    for i in range(c.num_hidden_layers):
        x = rms_norm(h, model.layer(i, "input_layernorm"), c.rms_norm_eps)
        q, k, v = qkv(model, i, x)
        q = apply_rope(q, cos, sin)
        cache.k[i][:, start:end] = apply_rope(k, cos, sin)
        cache.v[i][:, start:end] = v
        o = grouped_attend(q, cache.k[i][:, :end], cache.v[i][:, :end], q_pos, k_pos)
        h = h + output_proj(model, i, o)
        x = rms_norm(h, model.layer(i, "post_attention_layernorm"), c.rms_norm_eps)
        h = h + mlp(model, i, x)
    cache.length = end
    return final_logits(model, h)


def greedy(model, prompt, steps):
    """Greedy continuation with the plain forward (recomputes the whole sequence each step).
    Returns (prompt_logits [n, V], generated [steps + 1], decode_logits [steps, V]):
    generated[0] = argmax(prompt_logits[-1]); decode_logits[j] are the logits at position
    len(prompt) + j, whose input token is generated[j]; generated[j+1] = argmax of them."""
    seq = [int(t) for t in prompt]
    prompt_logits = forward(model, seq)
    generated = [int(prompt_logits[-1].argmax())]
    decode = []
    for _ in range(steps):
        seq.append(generated[-1])
        logits = forward(model, seq)[-1]
        decode.append(logits)
        generated.append(int(logits.argmax()))
    dec = torch.stack(decode) if decode else prompt_logits[:0]
    return prompt_logits, torch.tensor(generated, dtype=torch.int32), dec


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description="Llama/Mistral PyTorch reference forward pass")
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--generate", type=int, default=0, help="greedy decode steps")
    ap.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    ap.add_argument("--top", type=int, default=5, help="top logits to print for the last position")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model, torch.float32 if args.float32 else torch.float64)
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    logits, generated, _ = greedy(model, tokens, args.generate)
    last = logits[-1]
    vals, idx = last.topk(min(args.top, last.shape[0]))
    print("last-position top logits:", ", ".join(f"{int(i)}:{float(v):.6f}" for v, i in zip(vals, idx)))
    print("greedy:", " ".join(str(int(t)) for t in generated))


if __name__ == "__main__":
    main()
