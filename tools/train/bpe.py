#!/usr/bin/python3
"""A small byte-level BPE (GPT-2 / Llama-3 style) trained on the generated corpus.

  tok = train_bpe(texts, vocab_size=1018)       # merges by pair frequency, deterministic
  tok.save("tokenizer.json")                     # Hugging Face tokenizers format
  tok = Tokenizer.load("tokenizer.json")
  ids = tok.encode(text, allow_special=True); text = tok.decode(ids)

tokenizer.json: model.type "BPE" (vocab, merges, ignore_merges false, no byte_fallback),
pre_tokenizer Sequence[Split(SPLIT_PATTERN, Isolated), ByteLevel(add_prefix_space false,
use_regex false)], decoder ByteLevel, no normalizer, added_tokens = the special tokens of
corpus.py (ids after the BPE vocabulary, as Llama-3 does).

SPLIT_PATTERN is Llama-3's split regex with `\\p{N}{1,3}` replaced by `\\p{N}`: every digit is
its own pre-token and hence its own token, so pass keys are learnable digit by digit.
Python's `re` has no `\\p{..}` classes (and the `regex` module is not installed), so this file
encodes with PY_SPLIT_PATTERN, the same pattern with \\p{L} written as [^\\W\\d_] and \\p{N}
as \\d. Both agree on ASCII text (everything the corpus contains); for other scripts they may
differ in corner cases (letters vs. combining marks), which does not matter for training.
"""

import json
import re
from collections import Counter

import corpus

SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_L = r"[^\W\d_]"
PY_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?" + _L + r"+|\d"
                    r"| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT = re.compile(PY_SPLIT_PATTERN)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


B2U = bytes_to_unicode()
U2B = {v: k for k, v in B2U.items()}


def pretokenize(text):
    return _SPLIT.findall(text)


def to_units(word):
    """A pre-token as its byte-level unicode string."""
    return "".join(B2U[b] for b in word.encode("utf-8"))


class Tokenizer:
    def __init__(self, vocab, merges, special_tokens):
        self.vocab = dict(vocab)                      # byte-level string -> id
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.special = {}
        base = len(self.vocab)
        for i, s in enumerate(special_tokens):
            self.special[s] = base + i
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        for s, i in self.special.items():
            self.id_to_token[i] = s
        self.vocab_size = base + len(special_tokens)
        self._cache = {}
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in
                                                     sorted(special_tokens, key=len, reverse=True)) + ")")

    # -- encoding
    def _bpe(self, units):
        if units in self._cache:
            return self._cache[units]
        parts = list(units)
        while len(parts) > 1:
            best, bi = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]
            # merge every further occurrence of the same pair, left to right (HF semantics)
            pair = self.merges[best]
            i = bi + 1
            while i < len(parts) - 1:
                if (parts[i], parts[i + 1]) == pair:
                    parts[i:i + 2] = [parts[i] + parts[i + 1]]
                i += 1
        ids = [self.vocab[p] for p in parts]
        self._cache[units] = ids
        return ids

    def encode(self, text, allow_special=False):
        out = []
        segs = self._special_re.split(text) if allow_special else [text]
        for seg in segs:
            if not seg:
                continue
            if allow_special and seg in self.special:
                out.append(self.special[seg])
                continue
            for w in pretokenize(seg):
                out.extend(self._bpe(to_units(w)))
        return out

    def decode(self, ids, skip_special=False):
        data = bytearray()
        for i in ids:
            t = self.id_to_token[int(i)]
            if int(i) >= len(self.vocab):
                if not skip_special:
                    data.extend(t.encode("utf-8"))
            else:
                data.extend(U2B[c] for c in t)
        return data.decode("utf-8", errors="replace")

    # -- files
    def to_json(self):
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for s, i in self.special.items()]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN},
                     "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                     "use_regex": False},
                ],
            },
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [[a, b] for a, b in self.merges],
            },
        }

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=None, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        m = d["model"]
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        specials = [a["content"] for a in sorted(d["added_tokens"], key=lambda a: a["id"])]
        tok = cls(m["vocab"], merges, specials)
        for a in d["added_tokens"]:
            if tok.special[a["content"]] != a["id"]:
                raise ValueError("added token ids must follow the BPE vocabulary")
        return tok


def train_bpe(texts, vocab_size, special_tokens=tuple(corpus.SPECIAL_TOKENS)):
    """Byte-level BPE: 256 byte tokens, then merges of the most frequent adjacent pair
    (ties: the lexicographically smallest pair) until the vocabulary has vocab_size entries
    (special tokens not counted). Deterministic."""
    words = Counter()
    for t in texts:
        for w in pretokenize(t):
            words[to_units(w)] += 1
    vocab = {B2U[b]: b for b in range(256)}
    seqs = {w: list(w) for w in words}
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for i in range(len(s) - 1):
                pairs[(s[i], s[i + 1])] += n
        if not pairs:
            break
        best_n = max(pairs.values())
        if best_n < 2:
            break
        pair = min(p for p, n in pairs.items() if n == best_n)
        merges.append(pair)
        new = pair[0] + pair[1]
        vocab[new] = len(vocab)
        for w in words:
            s = seqs[w]
            if len(s) < 2:
                continue
            i, out = 0, []
            while i < len(s):
                if i < len(s) - 1 and s[i] == pair[0] and s[i + 1] == pair[1]:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return Tokenizer(vocab, merges, list(special_tokens))


def build_tokenizer(path, vocab_size=1018, seed=1234):
    """Train on corpus.tokenizer_training_text(seed) and save to path."""
    tok = train_bpe(corpus.tokenizer_training_text(seed), vocab_size)
    tok.save(path)
    return tok


if __name__ == "__main__":
    import argparse
    import time
    ap = argparse.ArgumentParser(description="train the built-in model's byte-level BPE")
    ap.add_argument("--out", required=True, help="tokenizer.json to write")
    ap.add_argument("--vocab-size", type=int, default=1018, help="BPE vocabulary (without specials)")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    t0 = time.time()
    tok = build_tokenizer(a.out, a.vocab_size, a.seed)
    s = "What is the pass key?<|context|> The pass key is 48213. Remember it."
    ids = tok.encode(s, allow_special=True)
    assert tok.decode(ids) == s
    print(f"vocab {tok.vocab_size} ({len(tok.merges)} merges) in {time.time() - t0:.1f}s; "
          f"{s!r} -> {[tok.id_to_token[i] for i in ids]}")
