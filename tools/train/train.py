#!/usr/bin/python3
"""Train the project's built-in small Llama-architecture model, with the Q-LLM memory in the loop.

  nohup nice -n 19 /usr/bin/python3 tools/train/train.py --threads 1 --out build/train \
      > build/train/log.txt 2>&1 &

Resumes automatically from the latest checkpoint in OUT/ckpt/ (step_XXXXXXX.pt). Uses CUDA when
torch.cuda.is_available(). Everything is seeded: the batch of step s is generated from
random.Random(seed, s), so a resumed run sees the same data as an uninterrupted one.

Model: Llama (RMSNorm, RoPE rotate-half, GQA, SwiGLU, tied embeddings), float32, AdamW.

Curriculum:
  phase 1: ordinary causal attention on short examples (documents of 24-200 tokens,
          <= ~260 tokens in all), until the first eval after --phase1-min-steps (1000) with
          pk_short >= --switch-pk (0.9) and all_short >= --switch-all (0.6), or until
          --phase1-steps (4000) at the latest. The phase is stored in the checkpoints.
  phase 2: "memory in the loop": documents of 300-950 tokens (20% short ones), attention
          computed the way the Q-LLM algorithm (docs/qllm-algorithm.md, qllm mode) shows the past
          at inference. Per layer:
            1. Exact selection, no gradient: the layer's q/k/v (computed from the previous
               layers' outputs, which are themselves the Q-LLM outputs) are run through the
               algorithm chunk by chunk (exc_block_size): retrieval with the representative
               vectors and the question vector, joint softmax, local scores, init / question
               vector / block commit. This yields, per chunk, which keys each query sees as
               global keys (init, the selected blocks, pending tokens at distance >= n_local).
            2. Differentiable attention, in parallel over all queries: local keys
               (0 <= i-j < n_local) scored rope(q_i,i).rope(K_j,j), the chunk's global keys
               scored rope(q_i, n_local-1).K_j (unrotated keys at the fixed distance), one
               joint softmax, everything else masked.
          The forward value equals qllm_ref's prefill of the whole sequence (checked by
          --selftest), except that the answer tokens are not in the prompt: their queries are
          left out of the chunk's mean query used for retrieval (qbar), and they share the
          retrieval of the chunk they fall in instead of getting one each as in decoding.
          Gradients do not flow through the block selection, the representative vectors or the
          question vector (they are discrete choices / statistics), only through the attention
          over what was selected.
          --phase2-attention oracle (third session): the same attention as one masked
          softmax over the whole sequence (masked_qllm_attention; equal to the chunk loop when
          given the loop's own selections, checked by --selftest), with the blocks of each chunk
          chosen by an oracle: with probability --oracle-hit the committed blocks overlapping
          the needle (the answer's digits and the 12 tokens before them), the rest of the top-k
          at random. It teaches reading retrieved blocks several times faster on CPU; finding
          them is left to the algorithm's retrieval, which the pk_long_qllm eval measures.

Phase 1 task curriculum ("stage A"): pass-key examples only (--stage-a-mix) until an eval with
pk_short >= --stage-a-until-pk (0.9) or global step --stage-a-max-steps (1500), then the task
mix --mix (passkey 0.4, magic 0.3, kv 0.3; also phase 2's). The stage is stored in checkpoints.

Loss: --lm-weight (0.2) * mean cross entropy over all tokens + --ans-weight (1) * mean cross
entropy over the answer tokens.
Logs: stdout (one line per --log-every steps), OUT/metrics.csv (loss, lr, speed, eval).
Quick eval (every --eval-every steps, fixed examples): exact-match of the answer under
teacher forcing (== greedy decoding succeeds) for pass keys at ~200 tokens (ordinary attention)
and at ~600 tokens in qllm mode, and for all tasks at ~200 tokens.
"""

import argparse
import csv
import glob
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import corpus  # noqa: E402

DEFAULT_MODEL = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                     num_attention_heads=6, num_key_value_heads=2, rope_theta=10000.0,
                     rms_norm_eps=1e-5, max_position_embeddings=1024)
# The inference parameters of the built-in model (qllm mode). Chosen small so that documents
# of 300-1000 tokens exercise every part of the algorithm: 16 sinks, a 128-token window, blocks
# of 16 tokens of which 4 are retrieved per 64-token execution chunk.
DEFAULT_MEMORY = dict(n_init=16, n_local=128, block_size=16, topk=4, repr_topk=4,
                      exc_block_size=64, question_weight=4.0)


# ----------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hkv, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.q_proj = nn.Linear(c["hidden_size"], h * d, bias=False)
        self.k_proj = nn.Linear(c["hidden_size"], hkv * d, bias=False)
        self.v_proj = nn.Linear(c["hidden_size"], hkv * d, bias=False)
        self.o_proj = nn.Linear(h * d, c["hidden_size"], bias=False)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class LlamaLM(nn.Module):
    """State dict names are Hugging Face's (model.layers.0.self_attn.q_proj.weight, ...);
    tied embeddings (no lm_head.weight)."""

    def __init__(self, c):
        super().__init__()
        c = dict(c)
        c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
        self.c = c
        self.model = Inner(c)
        d = c["head_dim"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._init()

    def _init(self):
        g = torch.Generator().manual_seed(0)
        nl = self.c["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                    std = 0.02 / math.sqrt(2 * nl)
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def rope(self, positions):
        pos = torch.as_tensor(positions, dtype=torch.float64, device=self.inv_freq.device)
        f = pos.reshape(-1)[:, None] * self.inv_freq[None, :]
        emb = torch.cat([f, f], -1)
        dt = self.model.embed_tokens.weight.dtype
        return emb.cos().to(dt), emb.sin().to(dt)

    def forward(self, ids, memory=None, qspans=None, qbar_mask=None, sel_log=None, vis=None,
                ret=None):
        """ids [B, n] -> logits [B, n, V]. memory=None: ordinary causal attention; else a dict
        of Q-LLM parameters (qllm mode) with qspans [(s, e)] per row and qbar_mask [B, n]
        (True for queries that count in the retrieval mean: the prompt). vis (with memory):
        the keys each query sees, [B, n, n] bool for every layer or a list with one per layer
        (see visibility()); the selection is then given instead of computed (oracle training).
        ret (with vis): a dict from retrieval_targets(); each layer appends its retrieval loss
        to ret["losses"] (see retrieval_loss())."""
        c = self.c
        B, n = ids.shape
        H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        cos, sin = self.rope(torch.arange(n))
        h = self.model.embed_tokens(ids)
        for li, layer in enumerate(self.model.layers):
            x = layer.input_layernorm(h)
            a = layer.self_attn
            q = a.q_proj(x).view(B, n, H, D).transpose(1, 2)
            k = a.k_proj(x).view(B, n, Hkv, D).transpose(1, 2)
            v = a.v_proj(x).view(B, n, Hkv, D).transpose(1, 2)
            if memory is None:
                o = causal_attention(q, k, v, cos, sin)
            elif vis is not None:
                o = masked_qllm_attention(self, q, k, v, cos, sin, memory,
                                          vis[li] if isinstance(vis, list) else vis, ret)
            else:
                o = qllm_attention(self, q, k, v, cos, sin, memory, qspans, qbar_mask,
                                   None if sel_log is None else sel_log.setdefault(li, []))
            h = h + a.o_proj(o.transpose(1, 2).reshape(B, n, H * D))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        h = self.model.norm(h)
        return h @ self.model.embed_tokens.weight.T


def causal_attention(q, k, v, cos, sin):
    B, H, n, D = q.shape
    G = H // k.shape[1]
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def _top_stable(x, k, dim):
    """Indices of the k largest along dim, largest first, ties to the lower index."""
    return torch.sort(-x, dim=dim, stable=True).indices.narrow(dim, 0, k)


def qllm_attention(model, q, k, v, cos, sin, mp, qspans, qbar_mask, sel_log=None):
    """Q-LLM (qllm mode) attention for one layer over a whole sequence; see the module doc.
    q [B,H,n,D], k/v [B,Hkv,n,D] pre-RoPE. Returns o [B,H,n,D].

    Runs chunk by chunk (exc_block_size) like the algorithm. Per chunk, each row gathers the
    keys its queries may see: init, the row's selected blocks, and the pending tokens
    [p0, e) (local when 0 <= i-j < n_local, global when i-j >= n_local, invisible when j > i);
    the attention over them is differentiable; retrieval, local scores and the commit step use
    detached values."""
    B, H, n, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    dev = q.device
    nl, ni, bs = mp["n_local"], mp["n_init"], mp["block_size"]
    topk, rk, exc, w = mp["topk"], mp["repr_topk"], mp["exc_block_size"], mp["question_weight"]
    scale = 1.0 / math.sqrt(D)
    cg, sg = model.rope([nl - 1])
    q_loc = q * cos + rotate_half(q) * sin
    q_glob = q * cg + rotate_half(q) * sg
    kr = k * cos + rotate_half(k) * sin
    qgd = q_glob.detach()
    kd = k.detach().repeat_interleave(G, 1)                                # [B, H, n, D]
    score = torch.zeros(B, n, H, device=dev)
    R, block_start = [], []
    Q = None
    init_count, p0, init_ran = 0, 0, False
    qm = qbar_mask.float() if qbar_mask is not None else torch.ones(B, n, device=dev)
    outs = []
    for a in range(0, n, exc):
        e = min(a + exc, n)
        m = e - a
        # 2. retrieval (blocks committed by earlier chunks only), no gradient
        kpos = [torch.arange(init_count, device=dev).expand(B, -1)]
        if topk > 0 and R:
            with torch.no_grad():
                Rm = torch.stack(R, 1)                                   # [B, nb, H*D]
                wts = qm[:, a:e]
                wts = torch.where(wts.sum(1, keepdim=True) > 0, wts, torch.ones_like(wts))
                qbar = (qgd[:, :, a:e] * wts[:, None, :, None]).sum(2) / wts.sum(1)[:, None, None]
                sc = Rm @ qbar.reshape(B, H * D, 1)
                if Q is not None and w != 0:
                    sc = sc + w * (Rm @ Q[:, :, None])
                sc = sc.squeeze(-1)                                      # [B, nb]
                sel = _top_stable(sc, min(topk, len(R)), 1)              # [B, kk]
                if sel_log is not None:
                    sel_log.append(sel.cpu())
                starts = torch.tensor(block_start, device=dev)[sel]      # [B, kk]
                kpos.append((starts[..., None] + torch.arange(bs, device=dev)).reshape(B, -1))
        elif sel_log is not None:
            sel_log.append(None)
        off = sum(t.shape[1] for t in kpos)
        kpos.append(torch.arange(p0, e, device=dev).expand(B, -1))
        kpos = torch.cat(kpos, 1)                                        # [B, K]
        K = kpos.shape[1]
        # 3. joint softmax over the gathered keys (differentiable)
        gi = kpos[:, None, :, None].expand(B, Hkv, K, D)
        kg, krg, vg = k.gather(2, gi), kr.gather(2, gi), v.gather(2, gi)
        ql = q_loc[:, :, a:e].reshape(B, Hkv, G * m, D)
        qg = q_glob[:, :, a:e].reshape(B, Hkv, G * m, D)
        rel = torch.arange(a, e, device=dev)[None, :, None] - kpos[:, None, :]   # [B, m, K]
        local = ((rel >= 0) & (rel < nl)).repeat(1, G, 1)[:, None]           # [B,1,G*m,K]
        vis = local | (rel >= nl).repeat(1, G, 1)[:, None]
        s = torch.where(local, (ql @ krg.transpose(-1, -2)) * scale,
                        (qg @ kg.transpose(-1, -2)) * scale)
        p = torch.softmax(s.masked_fill(~vis, float("-inf")), -1)
        outs.append((p @ vg).reshape(B, H, m, D))
        with torch.no_grad():
            # 4. local scores (local keys are all pending: columns off..K)
            mass = (p.detach() * local)[..., off:].reshape(B, Hkv, G, m, K - off).sum(3)
            score[:, p0:e] += mass.reshape(B, H, K - off).transpose(1, 2)
            # 5. commit
            move = min(ni - init_count, (e - p0) - nl)
            if move > 0:
                init_count += move
                p0 += move
                if not init_ran and qspans is not None:
                    Q = _question_vector(qgd, score, qspans, rk, e)
                init_ran = True
            while (e - p0) - bs >= nl:
                bsc = score[:, p0:p0 + bs]                                   # [B, bs, H]
                top = _top_stable(bsc, min(rk, bs), 1).transpose(1, 2)       # [B, H, rk]
                kb = kd[:, :, p0:p0 + bs]                                    # [B, H, bs, D]
                R.append(kb.gather(2, top[..., None].expand(-1, -1, -1, D)).mean(2).reshape(B, H * D))
                block_start.append(p0)
                p0 += bs
    return torch.cat(outs, 2)


def chunk_schedule(n, mp):
    """The algorithm's bookkeeping for n tokens, which does not depend on the data: per
    execution chunk (a, e, init_count, p0, starts of the blocks committed before it)."""
    nl, ni, bs, exc = mp["n_local"], mp["n_init"], mp["block_size"], mp["exc_block_size"]
    out, init_count, p0, starts = [], 0, 0, []
    for a in range(0, n, exc):
        e = min(a + exc, n)
        out.append((a, e, init_count, p0, list(starts)))
        move = min(ni - init_count, (e - p0) - nl)
        if move > 0:
            init_count += move
            p0 += move
        while (e - p0) - bs >= nl:
            starts.append(p0)
            p0 += bs
    return out


def visibility(n, mp, selections, device="cpu"):
    """[B, n, n] bool: key j is visible to query i when j <= i and j is an init token, in one
    of the blocks selected for i's chunk, or pending (j >= p0 of the chunk).
    selections[c][b]: indices (into the chunk's committed blocks) selected for chunk c, row b."""
    bs = mp["block_size"]
    sched = chunk_schedule(n, mp)
    B = len(selections[0])
    vis = torch.zeros(B, n, n, dtype=torch.bool)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for c, (a, e, init_count, p0, starts) in enumerate(sched):
        for b in range(B):
            row = torch.zeros(n, dtype=torch.bool)
            row[:init_count] = True
            row[p0:] = True
            for i in selections[c][b]:
                row[starts[i]:starts[i] + bs] = True
            vis[b, a:e] = row[None, :] & causal[a:e]
    return vis.to(device)


def masked_qllm_attention(model, q, k, v, cos, sin, mp, vis, ret=None):
    """Q-LLM attention with the selection given as a mask (vis [B, n, n], see visibility()):
    visible keys at distance < n_local scored with relative RoPE, farther ones with
    rope(q, n_local - 1) . K (unrotated keys at the fixed distance); one softmax per query.
    Equal to qllm_attention when vis holds qllm_attention's own selections (--selftest)."""
    B, H, n, D = q.shape
    G = H // k.shape[1]
    nl = mp["n_local"]
    cg, sg = model.rope([nl - 1])
    ql = q * cos + rotate_half(q) * sin
    qg = q * cg + rotate_half(q) * sg
    kr = (k * cos + rotate_half(k) * sin).repeat_interleave(G, 1)
    kk = k.repeat_interleave(G, 1)
    vv = v.repeat_interleave(G, 1)
    idx = torch.arange(n, device=q.device)
    rel = idx[:, None] - idx[None, :]
    local = (rel >= 0) & (rel < nl)
    scale = 1.0 / math.sqrt(D)
    s = torch.where(local, ql @ kr.transpose(-1, -2), qg @ kk.transpose(-1, -2)) * scale
    s = s.masked_fill(~vis[:, None], float("-inf"))
    p = torch.softmax(s, -1)
    if ret is not None:
        with torch.no_grad():
            local_score = (p.detach() * local).sum(-2)                      # [B, H, n]
        ret["losses"].append(retrieval_loss(qg, kk, local_score, mp, ret, qbar_mask=ret["qbar"]))
    return p @ vv


def retrieval_targets(exs, n, mp, qbar_mask, qspans):
    """What retrieval_loss needs per row: the chunk the answer starts in, the blocks committed
    before it and which of them hold the needle (rows without a needle block are left out)."""
    sched = chunk_schedule(n, mp)
    bs, exc = mp["block_size"], mp["exc_block_size"]
    rows = []
    for b, x in enumerate(exs):
        sp = needle_span(x)
        c = (x["prompt_len"] - 1) // exc
        a, e, _ic, _p0, starts = sched[c]
        if sp is None or len(starts) <= mp["topk"]:
            continue
        need = [i for i, st in enumerate(starts) if st < sp[1] and st + bs > sp[0]]
        if need:
            rows.append((b, a, e, starts, need))
    return {"rows": rows, "qbar": qbar_mask, "qspans": qspans, "losses": []}


def retrieval_loss(qg, kk, local_score, mp, ret, qbar_mask):
    """Cross entropy of the needle's blocks among the blocks the answer's chunk retrieves from,
    with the algorithm's block scores R_b . (qbar + w * Q): R_b the mean unrotated key of each
    head's repr_topk most attended tokens of the block, qbar the chunk's mean prompt query and Q
    the question vector (the question tokens' mean query, repr_topk per head), queries rotated
    at n_local - 1. Token choices are detached; keys and queries carry the gradient, which
    teaches the layer to make the question find its needle."""
    rows = ret["rows"]
    if not rows:
        return qg.new_zeros(())
    B, H, n, D = qg.shape
    bs, rk, w = mp["block_size"], mp["repr_topk"], mp["question_weight"]
    out = []
    for b, a, e, starts, need in rows:
        st = torch.tensor(starts)
        idx = st[:, None] + torch.arange(bs)                                 # [nb, bs]
        ls = local_score[b][:, idx]                                          # [H, nb, bs]
        top = _top_stable(ls, min(rk, bs), 2)                                # [H, nb, rk]
        tok = idx[None].expand(H, -1, -1).gather(2, top)                     # [H, nb, rk]
        kb = kk[b].gather(1, tok.reshape(H, -1, 1).expand(-1, -1, D))        # [H, nb*rk, D]
        R = kb.view(H, len(starts), -1, D).mean(2).transpose(0, 1).reshape(len(starts), H * D)
        wts = qbar_mask[b, a:e].float()
        if wts.sum() == 0:
            wts = torch.ones_like(wts)
        qbar = (qg[b, :, a:e] * wts[None, :, None]).sum(1) / wts.sum()       # [H, D]
        s0, s1 = ret["qspans"][b]
        qt = _top_stable(local_score[b][:, s0:s1], min(rk, s1 - s0), 1) + s0  # [H, rk]
        Q = qg[b].gather(1, qt[..., None].expand(-1, -1, D)).mean(1)         # [H, D]
        sc = R @ (qbar + w * Q).reshape(H * D) / math.sqrt(D)                # [nb]
        ret.setdefault("scores", []).append(sc.detach())
        out.append(torch.logsumexp(sc, 0) - torch.logsumexp(sc[need], 0))
    return torch.stack(out).mean()


def needle_span(ex):
    """[start, end) of the document tokens that hold the answer: from a few tokens before the
    first occurrence of the answer's digits in the prompt to the end of the last one (the
    needle sentence names the key before its number), or None when the digits do not occur."""
    ids, P, want = ex["ids"], ex["prompt_len"], ex["answer_ids"][:-1]
    m = len(want)
    hits = [i for i in range(P - m + 1) if ids[i:i + m] == want]
    if not hits:
        return None
    return (max(0, hits[0] - 12), hits[-1] + m)


def oracle_selections(exs, n, mp, rng, p_hit):
    """Per chunk and row, the blocks an oracle retrieval selects: with probability p_hit the
    committed blocks that overlap the row's needle span (in order, at most topk), the rest of
    the topk drawn at random from the other committed blocks."""
    bs, topk = mp["block_size"], mp["topk"]
    spans = [needle_span(x) for x in exs]
    out = []
    for (_a, _e, _ic, _p0, starts) in chunk_schedule(n, mp):
        per_row = []
        for b in range(len(exs)):
            kk = min(topk, len(starts))
            chosen = []
            sp = spans[b]
            if sp is not None and rng.random() < p_hit:
                chosen = [i for i, st in enumerate(starts) if st < sp[1] and st + bs > sp[0]][:kk]
            rest = [i for i in range(len(starts)) if i not in chosen]
            chosen += rng.sample(rest, kk - len(chosen))
            per_row.append(sorted(chosen))
        out.append(per_row)
    return out


def _question_vector(qg, score, qspans, rk, e):
    B, H, n, D = qg.shape
    out = []
    for b, (s, t) in enumerate(qspans):
        if not (0 <= s < t <= e):
            raise ValueError(f"question span [{s}, {t}) not processed when init first fills ({e})")
        kk = min(rk, t - s)
        top = _top_stable(score[b, s:t], kk, 0).T + s                     # [H, kk]
        out.append(qg[b].gather(1, top[..., None].expand(-1, -1, D)).mean(1).reshape(H * D))
    return torch.stack(out)


# ----------------------------------------------------------------------------- data

def make_batch(tok, rng, n, doc_lo, doc_hi, task=None, depth=None, mix=corpus.DEFAULT_MIX,
               edge_frac=0.0):
    """n examples with document lengths near one length L ~ U(doc_lo, doc_hi) (less padding).
    edge_frac: share of the pass-key examples whose needle is put at depth 0 or 1 (the first or
    last sentence; a uniform depth lands there in ~3% of examples, the needle benchmark asks
    for depth 0 and 100% in 40% of its cells)."""
    L = rng.randint(doc_lo, doc_hi)
    lo = max(doc_lo, int(L * 0.8))
    out = []
    for _ in range(n):
        t, d = task, depth
        if edge_frac > 0 and t is None and d is None:
            t = corpus.pick_task(rng, mix)
            if t == "passkey" and rng.random() < edge_frac:
                d = float(rng.random() < 0.5)
        out.append(corpus.make_example(rng, tok, rng.randint(lo, L), task=t, depth=d, mix=mix))
    return out


def collate(exs, pad_id, device):
    n = max(len(x["ids"]) for x in exs)
    B = len(exs)
    ids = torch.full((B, n), pad_id, dtype=torch.long)
    tgt = torch.full((B, n), -100, dtype=torch.long)
    ans = torch.zeros(B, n, dtype=torch.bool)
    qbar = torch.zeros(B, n, dtype=torch.bool)
    for b, x in enumerate(exs):
        L = len(x["ids"])
        ids[b, :L] = torch.tensor(x["ids"])
        tgt[b, :L - 1] = torch.tensor(x["ids"][1:])
        P = x["prompt_len"]
        ans[b, P - 1:L - 1] = True        # positions whose target is an answer token
        qbar[b, :P] = True
    return (ids.to(device), tgt.to(device), ans.to(device), qbar.to(device),
            [x["question_span"] for x in exs])


def phase_batch(tok, step, args, phase, stage_a=False):
    """The batch of a step. Phase 1 draws its tasks from args.stage_a_mix while stage_a (the
    pass-key-first curriculum), else from args.mix; phase 2 from args.mix."""
    rng = random.Random(args.seed * 1_000_003 + step)
    if phase == 1:
        mix = corpus.parse_mix(args.stage_a_mix if stage_a else args.mix)
        return make_batch(tok, rng, args.batch, 24, 200, mix=mix), None
    mix = corpus.parse_mix(args.mix)
    if rng.random() < 0.2:
        return make_batch(tok, rng, args.batch2, 32, 256, mix=mix,
                          edge_frac=args.edge_frac), args.memory
    return make_batch(tok, rng, args.batch2, args.doc2_min, args.doc2_max, mix=mix,
                      edge_frac=args.edge_frac), args.memory


def compute_loss(model, batch, memory, lm_weight=1.0, ans_weight=1.0, vis=None, ret=None):
    """lm_weight * (mean CE over all tokens) + ans_weight * (mean CE over the answer tokens);
    also returns the two means (detached)."""
    ids, tgt, ans, qbar, qspans = batch
    logits = model(ids, memory=memory, qspans=qspans, qbar_mask=qbar, vis=vis, ret=ret)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                         ignore_index=-100, reduction="none").view(tgt.shape)
    valid = tgt != -100
    lm = ce[valid].mean()
    la = ce[ans].mean()
    loss = lm_weight * lm + ans_weight * la
    if ret is not None and ret["losses"]:
        rl = torch.stack(ret["losses"]).mean()
        ret["value"] = float(rl)
        loss = loss + ret["weight"] * rl
    return loss, lm.detach(), la.detach()


@torch.no_grad()
def exact_match(model, exs, memory, device, bsz=8):
    """Fraction of examples whose whole answer (incl. <|eot|>) is the argmax at every position
    under teacher forcing, i.e. greedy decoding would produce it."""
    ok = 0
    for i in range(0, len(exs), bsz):
        part = exs[i:i + bsz]
        ids, tgt, ans, qbar, qspans = collate(part, 0, device)
        logits = model(ids, memory=memory, qspans=qspans, qbar_mask=qbar)
        pred = logits.argmax(-1)
        good = ((pred == tgt) | ~ans).all(1)
        ok += int(good.sum())
    return ok / len(exs)


def eval_sets(tok, seed=777):
    rng = random.Random(seed)
    return {
        "pk_short": [corpus.make_example(rng, tok, 200, task="passkey") for _ in range(24)],
        "all_short": [corpus.make_example(rng, tok, 200) for _ in range(24)],
        "pk_long_qllm": [corpus.make_example(rng, tok, 600, task="passkey") for _ in range(16)],
    }


def run_eval(model, sets, args, device):
    model.eval()
    r = {
        "pk_short": exact_match(model, sets["pk_short"], None, device),
        "all_short": exact_match(model, sets["all_short"], None, device),
        "pk_long_qllm": exact_match(model, sets["pk_long_qllm"], args.memory, device, bsz=4),
    }
    model.train()
    return r


# ----------------------------------------------------------------------------- checkpoints

def list_ckpts(out):
    return sorted(glob.glob(os.path.join(out, "ckpt", "step_*.pt")))


def save_ckpt(out, state, keep=3, milestone=1000):
    d = os.path.join(out, "ckpt")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"step_{state['step']:07d}.pt")
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    old = list_ckpts(out)[:-keep]
    for p in old:
        s = int(os.path.basename(p)[5:12])
        if s % milestone != 0:
            os.remove(p)
    return path


def load_model_from_ckpt(path, device="cpu"):
    st = torch.load(path, map_location=device)
    model = LlamaLM(st["model_config"]).to(device)
    model.load_state_dict(st["model"])
    return model, st


# ----------------------------------------------------------------------------- main

def lr_at(step, phase_start, args, phase):
    base = args.lr if phase == 1 else args.lr2
    warm = args.warmup
    t = step - phase_start + 1
    return base * min(1.0, t / warm)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("build", "train"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop at this global step")
    ap.add_argument("--phase", type=int, choices=(1, 2), default=None,
                    help="force a phase (default: 1 until --phase1-steps, then 2)")
    ap.add_argument("--phase1-steps", type=int, default=4000,
                    help="phase 2 starts at this step at the latest")
    ap.add_argument("--phase1-min-steps", type=int, default=1000)
    ap.add_argument("--switch-pk", type=float, default=0.9,
                    help="phase 2 starts earlier, after an eval with pk_short >= this ...")
    ap.add_argument("--switch-all", type=float, default=0.6, help="... and all_short >= this")
    ap.add_argument("--resume", default="auto", help="auto (latest in OUT/ckpt), never, or a path")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=32, help="phase 1 sequences per step")
    ap.add_argument("--batch2", type=int, default=8, help="phase 2 sequences per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr2", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--lm-weight", type=float, default=0.2,
                    help="weight of the mean LM cross entropy over all tokens in the loss")
    ap.add_argument("--ans-weight", type=float, default=1.0,
                    help="weight of the mean cross entropy over the answer tokens")
    ap.add_argument("--mix", default="passkey=0.4,magic=0.3,kv=0.3",
                    help="task mix of phase 1 after stage A, and of phase 2")
    ap.add_argument("--stage-a-mix", default="passkey=1",
                    help="task mix of phase 1's first stage (curriculum)")
    ap.add_argument("--stage-a-until-pk", type=float, default=0.9,
                    help="stage A ends after an eval with pk_short >= this (>1: never) ...")
    ap.add_argument("--stage-a-max-steps", type=int, default=1500,
                    help="... or at this global step at the latest (0: no stage A)")
    ap.add_argument("--phase2-attention", choices=("exact", "oracle"), default="exact",
                    help="phase 2 block selection: the algorithm's own retrieval, chunk by "
                         "chunk (exact), or an oracle that selects the needle's blocks with "
                         "probability --oracle-hit and random others (one masked attention, "
                         "about 10x faster)")
    ap.add_argument("--oracle-hit", type=float, default=0.9)
    ap.add_argument("--ret-weight", type=float, default=0.0,
                    help="weight of the retrieval loss (oracle phase 2): cross entropy of the "
                         "needle's blocks under the algorithm's block scores in the answer's "
                         "chunk, every layer (0: off)")
    ap.add_argument("--doc2-min", type=int, default=300,
                    help="phase 2 document tokens (80%% of batches; the rest 32-256): from ...")
    ap.add_argument("--doc2-max", type=int, default=950, help="... to")
    ap.add_argument("--edge-frac", type=float, default=0.0,
                    help="phase 2: share of pass-key needles put at depth 0 or 1 (else uniform)")
    ap.add_argument("--hidden", type=int, default=DEFAULT_MODEL["hidden_size"])
    ap.add_argument("--inter", type=int, default=DEFAULT_MODEL["intermediate_size"])
    ap.add_argument("--layers", type=int, default=DEFAULT_MODEL["num_hidden_layers"])
    ap.add_argument("--heads", type=int, default=DEFAULT_MODEL["num_attention_heads"])
    ap.add_argument("--kv-heads", type=int, default=DEFAULT_MODEL["num_key_value_heads"])
    ap.add_argument("--vocab", type=int, default=1018, help="BPE vocabulary without specials")
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0: never)")
    ap.add_argument("--selftest", action="store_true",
                    help="check qllm_attention against tools/reference/qllm_ref.py and exit")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(args.out, exist_ok=True)
    args.memory = dict(DEFAULT_MEMORY)

    if args.selftest:
        return selftest(args)

    tok_path = os.path.join(args.out, "tokenizer.json")
    if os.path.exists(tok_path):
        tok = bpe.Tokenizer.load(tok_path)
    else:
        tok = bpe.build_tokenizer(tok_path, args.vocab, seed=args.seed)
    pad_id = tok.special[corpus.PAD]

    mc = dict(DEFAULT_MODEL, hidden_size=args.hidden, intermediate_size=args.inter,
              num_hidden_layers=args.layers, num_attention_heads=args.heads,
              num_key_value_heads=args.kv_heads, vocab_size=tok.vocab_size,
              bos_token_id=tok.special[corpus.BOS], eos_token_id=tok.special[corpus.EOT],
              pad_token_id=pad_id)
    start_step, phase_start, train_seconds, prev_phase = 0, 0, 0.0, None
    ck = None
    if args.resume != "never":
        path = args.resume if args.resume != "auto" else (list_ckpts(args.out) or [None])[-1]
        if path:
            ck = torch.load(path, map_location=device)
            mc = ck["model_config"]
            print(f"resuming from {path} (step {ck['step']})", flush=True)
    model = LlamaLM(mc).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_step, phase_start = ck["step"], ck["phase_start"]
        train_seconds, prev_phase = ck["train_seconds"], ck["phase"]
    nparams = sum(p.numel() for p in model.parameters())
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items()}, "model_config": mc,
                   "parameters": nparams, "device": str(device)}, f, indent=2)
    print(f"model {nparams} parameters ({nparams / 1e6:.2f}M), config {mc}, memory {args.memory}, "
          f"device {device}, threads {args.threads}", flush=True)

    metrics_path = os.path.join(args.out, "metrics.csv")
    fields = ["step", "phase", "loss", "lm_loss", "ans_loss", "lr", "sec_per_step", "train_hours",
              "tokens", "pk_short", "all_short", "pk_long_qllm"]
    new_file = not os.path.exists(metrics_path)
    mf = open(metrics_path, "a", newline="")
    mw = csv.DictWriter(mf, fieldnames=fields)
    if new_file:
        mw.writeheader()
    sets = eval_sets(tok)

    def checkpoint(step, phase):
        save_ckpt(args.out, {"step": step, "phase": phase, "phase_start": phase_start,
                             "train_seconds": train_seconds, "model_config": mc,
                             "memory": args.memory, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "seed": args.seed,
                             "switch": switch, "stage_a": stage_a})

    model.train()
    t_run = time.time()
    acc = {"loss": 0.0, "lm": 0.0, "ans": 0.0, "n": 0, "tok": 0, "t": 0.0}
    step = start_step
    switch = bool(ck.get("switch", False)) if ck is not None else False
    stage_a = bool(ck.get("stage_a", True)) if ck is not None else True
    while step < args.steps:
        if args.max_seconds and time.time() - t_run > args.max_seconds:
            break
        if args.phase:
            phase = args.phase
        elif prev_phase == 2 or step >= args.phase1_steps or switch:
            phase = 2
        else:
            phase = 1
        if phase != prev_phase:
            if prev_phase is not None:
                print(f"step {step}: phase {prev_phase} -> {phase}", flush=True)
                phase_start = step
            prev_phase = phase
        if stage_a and (phase != 1 or step >= args.stage_a_max_steps):
            print(f"step {step}: stage A (mix {args.stage_a_mix}) -> mix {args.mix}", flush=True)
            stage_a = False
        t0 = time.time()
        exs, memory = phase_batch(tok, step, args, phase, stage_a)
        batch = collate(exs, pad_id, device)
        lr = lr_at(step, phase_start, args, phase)
        for g in opt.param_groups:
            g["lr"] = lr
        vis, ret = None, None
        if memory is not None and args.phase2_attention == "oracle":
            orng = random.Random(args.seed * 7_000_003 + step)
            n = batch[0].shape[1]
            vis = visibility(n, memory, oracle_selections(exs, n, memory, orng, args.oracle_hit),
                             device)
            if args.ret_weight > 0:
                ret = retrieval_targets(exs, n, memory, batch[3], batch[4])
                ret["weight"] = args.ret_weight
        loss, lm, la = compute_loss(model, batch, memory, args.lm_weight, args.ans_weight, vis,
                                    ret)
        if ret is not None and "value" in ret:
            acc["ret"] = acc.get("ret", 0.0) + ret["value"]
            acc["ret_n"] = acc.get("ret_n", 0) + 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.time() - t0
        train_seconds += dt
        step += 1
        acc["loss"] += float(loss)
        acc["lm"] += float(lm)
        acc["ans"] += float(la)
        acc["n"] += 1
        acc["tok"] += int(batch[0].numel())
        acc["t"] += dt
        do_eval = step % args.eval_every == 0
        if step % args.log_every == 0 or do_eval:
            n = max(acc["n"], 1)
            row = {"step": step, "phase": phase, "loss": f"{acc['loss'] / n:.4f}",
                   "lm_loss": f"{acc['lm'] / n:.4f}", "ans_loss": f"{acc['ans'] / n:.4f}",
                   "lr": f"{lr:.2e}", "sec_per_step": f"{acc['t'] / n:.3f}",
                   "train_hours": f"{train_seconds / 3600:.3f}", "tokens": acc["tok"]}
            if acc.get("ret_n"):
                row["ret_loss"] = f"{acc['ret'] / acc['ret_n']:.4f}"
            if do_eval:
                te = time.time()
                ev = run_eval(model, sets, args, device)
                row.update({k: f"{v:.3f}" for k, v in ev.items()})
                if (phase == 1 and step >= args.phase1_min_steps and ev["pk_short"] >= args.switch_pk
                        and ev["all_short"] >= args.switch_all):
                    switch = True
                if stage_a and ev["pk_short"] >= args.stage_a_until_pk:
                    print(f"step {step}: stage A (mix {args.stage_a_mix}) -> mix {args.mix} "
                          f"(pk_short {ev['pk_short']:.3f})", flush=True)
                    stage_a = False
                row["eval_s"] = round(time.time() - te, 1)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            row.pop("eval_s", None)
            row.pop("ret_loss", None)
            mw.writerow(row)
            mf.flush()
            acc = {"loss": 0.0, "lm": 0.0, "ans": 0.0, "n": 0, "tok": 0, "t": 0.0}
        if step % args.ckpt_every == 0:
            checkpoint(step, phase)
    checkpoint(step, prev_phase or 1)
    print(f"stopped at step {step}", flush=True)


# ----------------------------------------------------------------------------- self-test

def selftest(args):
    """qllm_attention (float64, B=2) == tools/reference/qllm_ref.py prefill, and the selections
    agree, on a random model and random tokens with the built-in memory parameters."""
    sys.path.insert(0, os.path.join(HERE, "..", "reference"))
    import llama_ref
    import qllm_ref
    torch.manual_seed(0)
    mc = dict(DEFAULT_MODEL, vocab_size=300)
    model = LlamaLM(mc).double()
    with torch.no_grad():
        for n, p in model.named_parameters():  # larger weights: peaky attention, real choices
            if p.dim() == 2:
                p.mul_(10.0 if "proj" in n else 25.0)
    sd = {"model." + k if not k.startswith("model.") else k: v for k, v in model.state_dict().items()}
    cfg = llama_ref.Config(dict(mc, tie_word_embeddings=True))
    ref_model = llama_ref.Model(cfg, {k: v.double() for k, v in sd.items()}, torch.float64)
    n = 700
    toks = torch.randint(0, 300, (2, n))
    spans = [(1, 9), (2, 12)]
    mp = args.memory
    logs = {}
    with torch.no_grad():
        out = model(toks, memory=mp, qspans=spans, qbar_mask=None, sel_log=logs)
    worst = 0.0
    for b in range(2):
        ref = qllm_ref.QLLMReference(ref_model, mode="qllm", question_span=spans[b],
                                     capacity=n + 8, **{k: mp[k] for k in mp})
        rl = ref.prefill(toks[b])
        err = float((rl - out[b]).abs().max())
        worst = max(worst, err)
        for li in range(cfg.num_hidden_layers):
            mine = [None if s is None else s[b].tolist() for s in logs[li]]
            theirs = [sel if sel else None for sel, _ in ref.selections[li]]
            if mine != theirs:
                print(f"selection mismatch row {b} layer {li}:\n{mine}\n{theirs}")
                return 1
        print(f"row {b}: max |logit diff| {err:.3e}, {ref.n_blocks[-1]} blocks, selections equal")
    vis = []
    for li in range(cfg.num_hidden_layers):
        sels = [[[] if s is None else s[b].tolist() for b in range(2)] for s in logs[li]]
        vis.append(visibility(n, mp, sels))
    with torch.no_grad():
        masked = model(toks, memory=mp, qspans=spans, qbar_mask=None, vis=vis)
    merr = float((masked - out).abs().max())
    print(f"masked attention with the same selections: max |logit diff| {merr:.3e}")
    # The retrieval loss scores the blocks as the algorithm does: its top-k in the last chunk
    # is the chunk loop's selection, at every layer.
    sched = chunk_schedule(n, mp)
    c = len(sched) - 1
    a, e, _ic, _p0, starts = sched[c]
    for b in range(2):
        for li in range(cfg.num_hidden_layers):
            ret = {"rows": [(b, a, e, starts, [0])], "losses": [],
                   "qbar": torch.ones(2, n, dtype=torch.bool), "qspans": spans}
            with torch.no_grad():
                model(toks, memory=mp, qspans=spans, qbar_mask=None, vis=vis, ret=ret)
            mine = _top_stable(ret["scores"][li], mp["topk"], 0).tolist()
            if mine != logs[li][c][b].tolist():
                print(f"retrieval score mismatch row {b} layer {li}: {mine} vs "
                      f"{logs[li][c][b].tolist()}")
                return 1
    print("retrieval loss scores: top-k == the chunk loop's selection (last chunk, every layer)")
    worst = max(worst, merr)
    full = model(toks)
    ref_full = llama_ref.forward(ref_model, toks[0])
    print(f"full attention: max |logit diff| {float((full[0] - ref_full).abs().max()):.3e}")
    ok = worst < 1e-8
    print("selftest", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
