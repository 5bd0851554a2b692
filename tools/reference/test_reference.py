#!/usr/bin/python3
"""Self-checks of the reference tools.

  /usr/bin/python3 -m unittest discover -s tools/reference -p 'test_*.py'
  (or: /usr/bin/python3 tools/reference/test_reference.py)
"""

import json
import math
import os
import struct
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
from make_checkpoint import write_checkpoint  # noqa: E402
from safetensors_io import load_file, read_header, save_file  # noqa: E402

torch.set_num_threads(1)


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_each_dtype(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, generator=g)
        tensors = {
            "f32": x,
            "f16": x.to(torch.float16),
            "bf16": x.to(torch.bfloat16),
            "i32": torch.arange(-6, 6, dtype=torch.int32).reshape(2, 6),
            "i64": torch.tensor([2 ** 40, -1, 7], dtype=torch.int64),
            "scalar": torch.tensor(1.5),
            "empty": torch.zeros(0, 4),
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            save_file(tensors, path)
            back = load_file(path)
            header, meta, start = read_header(path)
            self.assertEqual(meta, {"format": "pt"})
            self.assertEqual(start % 8, 0)
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
            self.assertEqual(n % 8, 0)
            for k, v in tensors.items():
                self.assertEqual(back[k].dtype, v.dtype, k)
                self.assertEqual(tuple(back[k].shape), tuple(v.shape), k)
                self.assertTrue(torch.equal(back[k], v), k)
            self.assertEqual({k: h["dtype"] for k, h in header.items()},
                             {"f32": "F32", "f16": "F16", "bf16": "BF16", "i32": "I32",
                              "i64": "I64", "scalar": "F32", "empty": "F32"})

    def test_conversion_rounds_to_nearest_even(self):
        # 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even -> 1.
        x = torch.tensor([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8], dtype=torch.float32)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            save_file({"x": x}, path, dtypes={"x": "BF16"})
            back = load_file(path)["x"].to(torch.float32)
        self.assertEqual(back.tolist(), [1.0, 1.0 + 2 ** -6])


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dirs = {}
        for preset in ("mha_untied", "gqa2_tied", "gqa4_llama3", "mistral_bf16"):
            d = os.path.join(cls.tmp.name, preset)
            write_checkpoint(d, preset, seed=3)
            cls.dirs[preset] = d

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_cached_forward_equals_plain(self):
        g = torch.Generator().manual_seed(5)
        for preset, d in self.dirs.items():
            model = llama_ref.load_model(d, torch.float64)
            tokens = torch.randint(0, model.cfg.vocab_size, (90,), generator=g)
            full = llama_ref.forward(model, tokens)
            cache = llama_ref.KVCache(model, 90)
            parts = [llama_ref.forward_cached(model, tokens[a:b], cache)
                     for a, b in ((0, 37), (37, 38), (38, 80), (80, 81), (81, 90))]
            err = (torch.cat(parts) - full).abs().max().item()
            self.assertLess(err, 1e-10, preset)

    def test_sharded_equals_unsharded(self):
        with tempfile.TemporaryDirectory() as d:
            one, three = os.path.join(d, "one"), os.path.join(d, "three")
            write_checkpoint(one, "llama_f16_sharded", seed=1, shards=1)
            write_checkpoint(three, "llama_f16_sharded", seed=1, shards=3)
            self.assertTrue(os.path.exists(os.path.join(three, "model-00003-of-00003.safetensors")))
            with open(os.path.join(three, "model.safetensors.index.json")) as f:
                index = json.load(f)
            self.assertEqual(len(set(index["weight_map"].values())), 3)
            a = llama_ref.load_state_dict(one)
            b = llama_ref.load_state_dict(three)
            self.assertEqual(set(a), set(b))
            self.assertEqual(index["metadata"]["total_size"],
                             sum(t.numel() * t.element_size() for t in a.values()))
            for k in a:
                self.assertEqual(a[k].dtype, torch.float16)
                self.assertTrue(torch.equal(a[k], b[k]), k)
            tokens = list(range(0, 200, 7))
            la = llama_ref.forward(llama_ref.load_model(one), tokens)
            lb = llama_ref.forward(llama_ref.load_model(three), tokens)
            self.assertTrue(torch.equal(la, lb))

    def test_tied_has_no_lm_head(self):
        sd = llama_ref.load_state_dict(self.dirs["gqa2_tied"])
        self.assertNotIn("lm_head.weight", sd)
        self.assertIn("lm_head.weight", llama_ref.load_state_dict(self.dirs["mha_untied"]))

    def test_bf16_weights_are_exactly_representable(self):
        model = llama_ref.load_model(self.dirs["mistral_bf16"])
        w = model.layer(0, "self_attn.q_proj")
        self.assertTrue(torch.equal(w, w.to(torch.bfloat16).to(torch.float64)))
        self.assertEqual(model.cfg.head_dim, 16)

    def test_llama3_rope_scaling(self):
        cfg = llama_ref.load_config(self.dirs["gqa4_llama3"])
        inv = llama_ref.rope_inv_freq(cfg)
        exponents = torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim
        base = 1.0 / (cfg.rope_theta ** exponents)
        wavelen = 2 * math.pi / base
        # Short wavelengths (< 64 / 4) unchanged, long ones (> 64 / 1) divided by 8,
        # the rest strictly in between.
        for i in range(len(inv)):
            if wavelen[i] < 16:
                self.assertAlmostEqual(inv[i].item(), base[i].item(), places=15)
            elif wavelen[i] > 64:
                self.assertAlmostEqual(inv[i].item(), base[i].item() / 8, places=15)
            else:
                self.assertTrue(base[i] / 8 < inv[i] < base[i])

    def test_rope_preserves_relative_scores(self):
        # rope(q, p) . rope(k, p') depends only on p - p'.
        model = llama_ref.load_model(self.dirs["mha_untied"])
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 1, 16, generator=g, dtype=torch.float64)
        k = torch.randn(1, 1, 16, generator=g, dtype=torch.float64)

        def dot(p, pk):
            cq, sq = llama_ref.rope_cos_sin(model, [p])
            ck, sk = llama_ref.rope_cos_sin(model, [pk])
            return (llama_ref.apply_rope(q, cq, sq) * llama_ref.apply_rope(k, ck, sk)).sum().item()

        self.assertAlmostEqual(dot(10, 3), dot(107, 100), places=10)


# ---------------------------------------------------------------------- Q-LLM reference

def slow_qllm(model, calls, decode_steps, mode, n_init, n_local, block_size, topk, repr_topk,
              exc_block_size, w, span):
    """A deliberately naive, loop-per-query/per-head/per-key rendering of the specification
    (docs/qllm-algorithm.md), used only to cross-check the vectorised qllm_ref."""
    c = model.cfg
    H, Hkv, D = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    G = H // Hkv
    scale = 1.0 / math.sqrt(D)
    full = mode == "full"
    if full:
        n_init, n_local, topk = 0, 10 ** 9, 0
    if mode == "streaming":
        topk = 0
    if mode != "qllm":
        w = 0.0

    tables = {}

    def rot(x, p):  # x [D] rotated to position p
        if p not in tables:
            tables[p] = llama_ref.rope_cos_sin(model, [p])
        cs, sn = tables[p]
        return (x * cs[0]) + llama_ref.rotate_half(x) * sn[0]

    layers = [dict(K={}, V={}, Qv={}, s={}, init=[], blocks=[], pending=[], Q=None, ran=False)
              for _ in range(c.num_hidden_layers)]
    sels = [[] for _ in layers]

    def chunk(tokens, a):
        h = model.embed[torch.tensor(tokens)]
        n = len(tokens)
        for li, L in enumerate(layers):
            x = llama_ref.rms_norm(h, model.layer(li, "input_layernorm"), c.rms_norm_eps)
            q, k, v = llama_ref.qkv(model, li, x)
            for t in range(n):
                pos = a + t
                L["K"][pos], L["V"][pos], L["Qv"][pos] = k[:, t], v[:, t], q[:, t]
                L.setdefault("Kr", {})[pos] = [rot(k[kv, t], pos) for kv in range(Hkv)]
                L["s"][pos] = [0.0] * H
                L["pending"].append(pos)
            chosen = []
            if topk > 0 and L["blocks"]:
                qbar = torch.stack([torch.cat([rot(q[hh, t], n_local - 1) for hh in range(H)])
                                    for t in range(n)]).mean(0)
                sc = []
                for b, (toks, R) in enumerate(L["blocks"]):
                    val = float(R @ qbar)
                    if L["Q"] is not None and w != 0:
                        val += w * float(R @ L["Q"])
                    sc.append((-val, b))
                sc.sort()
                chosen = [(b, -nv) for nv, b in sc[:topk]]
            sels[li].append(chosen)
            out = torch.zeros(H, n, D, dtype=model.dtype)
            for t in range(n):
                i = a + t
                for hh in range(H):
                    kv = hh // G
                    q_loc, q_glob = rot(q[hh, t], i), rot(q[hh, t], n_local - 1)
                    entries = []  # (score, pos, is_local)
                    glob = list(L["init"])
                    for b, _ in chosen:
                        glob += L["blocks"][b][0]
                    for j in L["pending"]:
                        if i - n_local < j <= i:
                            entries.append((float(q_loc @ L["Kr"][j][kv]) * scale, j, True))
                        elif i - j >= n_local and mode != "streaming":
                            glob.append(j)
                    for j in glob:
                        entries.append((float(q_glob @ L["K"][j][kv]) * scale, j, False))
                    m = max(e[0] for e in entries)
                    z = sum(math.exp(e[0] - m) for e in entries)
                    acc = torch.zeros(D, dtype=model.dtype)
                    for sv, j, is_local in entries:
                        p = math.exp(sv - m) / z
                        acc += p * L["V"][j][kv]
                        if is_local:
                            L["s"][j][hh] += p
                    out[hh, t] = acc
            h = h + llama_ref.output_proj(model, li, out)
            # commit
            e = a + n
            while len(L["init"]) < n_init and len(L["pending"]) > n_local:
                L["init"].append(L["pending"].pop(0))
                if not L["ran"] and span is not None:
                    qs, qe = span
                    rows = []
                    for hh in range(H):
                        best = sorted(range(qs, qe), key=lambda t: (-L["s"][t][hh], t))
                        best = best[:min(repr_topk, qe - qs)]
                        rows.append(torch.stack([rot(L["Qv"][t][hh], n_local - 1) for t in best]).mean(0))
                    L["Q"] = torch.cat(rows)
                L["ran"] = True
            while len(L["pending"]) - block_size >= n_local:
                toks = L["pending"][:block_size]
                del L["pending"][:block_size]
                rows = []
                for hh in range(H):
                    best = sorted(toks, key=lambda t: (-L["s"][t][hh], t))[:repr_topk]
                    rows.append(torch.stack([L["K"][t][hh // G] for t in best]).mean(0))
                L["blocks"].append((toks, torch.cat(rows)))
            assert e == a + n
            x = llama_ref.rms_norm(h, model.layer(li, "post_attention_layernorm"), c.rms_norm_eps)
            h = h + llama_ref.mlp(model, li, x)
        return llama_ref.final_logits(model, h)

    logits, pos = [], 0
    for call in calls:
        for s in range(0, len(call), exc_block_size):
            part = call[s:s + exc_block_size]
            logits.append(chunk(part, pos))
            pos += len(part)
    prompt_logits = torch.cat(logits)
    gen = [int(prompt_logits[-1].argmax())]
    dec = []
    for _ in range(decode_steps):
        lg = chunk([gen[-1]], pos)[0]
        pos += 1
        dec.append(lg)
        gen.append(int(lg.argmax()))
    return prompt_logits, gen, torch.stack(dec), sels


class QLLMTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import qllm_ref
        cls.qllm_ref = qllm_ref
        cls.tmp = tempfile.TemporaryDirectory()
        cls.models = {}
        for preset in ("mha_untied", "gqa2_tied"):
            d = os.path.join(cls.tmp.name, preset)
            write_checkpoint(d, preset, seed=1)
            cls.models[preset] = llama_ref.load_model(d)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_ref(self, model, tokens, sizes, steps, mode, **kw):
        ref = self.qllm_ref.QLLMReference(model, mode=mode, **kw)
        calls, s = [], 0
        for n in sizes:
            calls.append(tokens[s:s + n])
            s += n
        return ref, ref.run(calls, steps)

    def test_matches_naive_implementation(self):
        params = dict(n_init=4, n_local=16, block_size=4, topk=2, repr_topk=2, exc_block_size=8)
        g = torch.Generator().manual_seed(7)
        for preset, model in self.models.items():
            tokens = torch.randint(0, model.cfg.vocab_size, (110,), generator=g)
            sizes = [37, 30, 43]
            for mode in self.qllm_ref.MODES:
                ref, (pl, gen, dl) = self.run_ref(model, tokens, sizes, 3, mode, question_weight=3.0,
                                                  question_span=(1, 6), **params)
                calls = [tokens[:37].tolist(), tokens[37:67].tolist(), tokens[67:].tolist()]
                spl, sgen, sdl, ssel = slow_qllm(model, calls, 3, mode, w=3.0, span=(1, 6), **params)
                self.assertLess((pl - spl).abs().max().item(), 1e-9, (preset, mode))
                self.assertLess((dl - sdl).abs().max().item(), 1e-9, (preset, mode))
                self.assertEqual(gen.tolist(), sgen, (preset, mode))
                for li in range(model.cfg.num_hidden_layers):
                    ids = [s[0] for s in ref.selections[li]]
                    self.assertEqual(ids, [[b for b, _ in ch] for ch in ssel[li]], (preset, mode, li))
                    for (_, sc), ch in zip(ref.selections[li], ssel[li]):
                        for x, (_, y) in zip(sc, ch):
                            self.assertAlmostEqual(x, y, places=9)
                if mode in ("infllm", "qllm"):
                    self.assertTrue(any(s[0] for s in ref.selections[0]), "nothing retrieved")

    def test_full_mode_equals_plain_forward(self):
        model = self.models["gqa2_tied"]
        g = torch.Generator().manual_seed(8)
        tokens = torch.randint(0, model.cfg.vocab_size, (300,), generator=g)
        _, (pl, gen, dl) = self.run_ref(model, tokens, [100, 200], 3, "full", n_local=64,
                                        exc_block_size=32)
        seq = torch.cat([tokens, torch.tensor(gen[:3].tolist())])
        plain = llama_ref.forward(model, seq)
        self.assertLess((torch.cat([pl, dl]) - plain).abs().max().item(), 1e-10)

    def test_invariants(self):
        model = self.models["mha_untied"]
        g = torch.Generator().manual_seed(9)
        tokens = torch.randint(0, model.cfg.vocab_size, (400,), generator=g)
        base = dict(n_init=8, n_local=32, block_size=8, topk=3, repr_topk=2, exc_block_size=16,
                    question_span=(2, 12))
        # Window covering the whole sequence: every mode equals full attention.
        big = dict(base, n_local=512)
        _, (full, _, _) = self.run_ref(model, tokens, [400], 0, "full", **big)
        for mode in ("streaming", "infllm", "qllm"):
            _, (pl, _, _) = self.run_ref(model, tokens, [400], 0, mode, question_weight=2.0, **big)
            self.assertLess((pl - full).abs().max().item(), 1e-10, mode)
        # The question term changes the selections; infllm ignores the weight.
        r_inf, (a, _, _) = self.run_ref(model, tokens, [150, 250], 0, "infllm", question_weight=5.0, **base)
        r_inf0, (b, _, _) = self.run_ref(model, tokens, [150, 250], 0, "infllm", question_weight=0.0, **base)
        self.assertTrue(torch.equal(a, b))
        r_q, _ = self.run_ref(model, tokens, [150, 250], 0, "qllm", question_weight=5.0, **base)
        self.assertNotEqual([s[0] for s in r_q.selections[0]], [s[0] for s in r_inf.selections[0]])
        # Selections are sorted by score, descending.
        for ids, scores in r_q.selections[1]:
            self.assertEqual(scores, sorted(scores, reverse=True))


if __name__ == "__main__":
    unittest.main()
