#!/usr/bin/python3
"""Deterministic generator of the built-in model's training / evaluation data.

Everything is generated from a small built-in word list and grammar (no downloads), driven by a
`random.Random` the caller seeds, so the same seed gives the same examples on every machine.

The inference prompt template is defined here, once (TEMPLATE / SPECIAL_TOKENS), and written to
chat_template.json by `write_chat_template`:

    <|begin_of_text|><|question|>{question}<|context|>{document}<|question|>{question}<|answer|>{answer}<|eot|>

The question comes before the document (so that Q-LLM's question vector can be computed from
the first prefill call) and again after it. `question_span(ids)` returns the token span of the
first question occurrence (the tokens between the first <|question|> and <|context|>).

Tasks (the needle is placed at a random depth of the filler document):
  passkey  "The pass key is 48213. Remember it. 48213 is the pass key."  -> "48213"
  magic    2-4 needles "The special magic number for falcon is 7305214."  -> one of them
  kv       3-8 pairs "The value of key silver-river is 6241."         -> one of them
  magic1 / magic2   magic with exactly 1 / 2 needles (a curriculum towards magic)
Answers are digit strings (every digit is its own token in the tokenizer) followed by <|eot|>.
"""

import json
import random

# ----------------------------------------------------------------------------- template

BOS = "<|begin_of_text|>"
EOT = "<|eot|>"
QUESTION = "<|question|>"
CONTEXT = "<|context|>"
ANSWER = "<|answer|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, EOT, QUESTION, CONTEXT, ANSWER, PAD]

# The one place the prompt layout is defined. {question} appears twice; the first occurrence is
# the Q-LLM question span.
TEMPLATE = BOS + QUESTION + "{question}" + CONTEXT + "{context}" + QUESTION + "{question}" + ANSWER
STOP = EOT


def render_prompt(question, context):
    """The prompt text (everything the model is given before it generates the answer)."""
    return TEMPLATE.format(question=question, context=context)


def write_chat_template(path, memory_params=None):
    """chat_template.json: the template, its special tokens and how to find the question span."""
    d = {
        "format": "qllm-builtin-v1",
        "template": TEMPLATE,
        "special_tokens": {
            "bos": BOS, "eos": EOT, "question": QUESTION, "context": CONTEXT,
            "answer": ANSWER, "pad": PAD,
        },
        "stop": [EOT],
        "question_span": "the tokens of {question} in its first occurrence: after the first "
                         "<|question|> token, up to (not including) <|context|>",
        "notes": "The answer is generated after <|answer|> and ends with <|eot|>. The question "
                 "is repeated after the context. Text fields must not contain special tokens.",
        # A jinja rendering for tools that expect one (messages: [{role: user, question, context}]).
        "chat_template": "{{ bos_token }}<|question|>{{ question }}<|context|>{{ context }}"
                         "<|question|>{{ question }}<|answer|>",
    }
    if memory_params:
        d["qllm_parameters"] = memory_params
    with open(path, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- word lists

NAMES = ("Anna Ben Clara David Emma Felix Grace Henry Iris Jack Kate Leo Mia Noah Olga Paul "
         "Rosa Sam Tara Victor Wendy Yuri Zoe Omar Lina Hugo Nora Ivan Eva Tom").split()
NOUNS = ("cat dog bird horse fish tree river mountain city village house garden road bridge "
         "ship train book letter song story teacher farmer doctor child friend king queen "
         "lamp door window table chair field forest lake ocean island market school castle "
         "tower storm wind rain snow cloud stone flower apple bread coin key map clock "
         "boat wall hill valley desert moon star sun sky grass leaf basket candle").split()
ADJS = ("red blue green yellow small large old young quiet loud bright dark warm cold "
        "happy sad quick slow tall short soft hard clean busy calm wild gentle strange "
        "golden silver empty heavy light brave tired").split()
VERBS_PAST = ("saw found watched followed carried painted visited crossed opened closed "
              "built cleaned moved lifted reached passed touched heard remembered forgot "
              "liked helped called pushed pulled").split()
VERBS_INTR = ("walked ran slept waited smiled sang laughed rested danced worked stayed "
              "arrived left returned listened wandered").split()
ADVS = ("slowly quickly quietly happily sadly carefully loudly gently often early late "
        "again soon").split()
PREPS = ("near behind under above beside across inside around past toward").split()
TIMES = ("In the morning", "At night", "Later that day", "Every spring", "Once",
         "After the rain", "Before dawn", "In the evening", "Long ago", "One day")
CLASSIC = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
           "There and back again.")
NEEDLE_KEYS = ("falcon tiger river maple comet harbor violet canyon ember glacier meadow "
               "orchid pepper quartz raven saffron thistle walnut willow zephyr lantern "
               "cobalt marble nectar onyx pebble").split()


def _a(rng, words):
    return words[rng.randrange(len(words))]


def _np(rng):
    """A noun phrase."""
    r = rng.random()
    if r < 0.35:
        return "the " + _a(rng, NOUNS)
    if r < 0.75:
        return "the " + _a(rng, ADJS) + " " + _a(rng, NOUNS)
    return _a(rng, NAMES)


def _cap(s):
    return s[0].upper() + s[1:]


def sentence(rng):
    """One English-like filler sentence (ends with a period, no leading space)."""
    r = rng.random()
    if r < 0.12:
        return _a(rng, CLASSIC)
    if r < 0.30:
        return _cap(_np(rng)) + " " + _a(rng, VERBS_PAST) + " " + _np(rng) + "."
    if r < 0.45:
        return _cap(_np(rng)) + " " + _a(rng, VERBS_INTR) + " " + _a(rng, ADVS) + "."
    if r < 0.60:
        return (_cap(_np(rng)) + " " + _a(rng, VERBS_INTR) + " " + _a(rng, PREPS) + " "
                + _np(rng) + ".")
    if r < 0.72:
        return "The " + _a(rng, NOUNS) + " was " + _a(rng, ADJS) + " and " + _a(rng, ADJS) + "."
    if r < 0.84:
        return (_a(rng, TIMES) + ", " + _np(rng) + " " + _a(rng, VERBS_PAST) + " "
                + _np(rng) + " " + _a(rng, PREPS) + " " + _np(rng) + ".")
    return (_cap(_np(rng)) + " " + _a(rng, VERBS_PAST) + " " + _np(rng) + " and "
            + _a(rng, VERBS_INTR) + " " + _a(rng, ADVS) + ".")


def _number(rng, lo_digits, hi_digits):
    nd = rng.randint(lo_digits, hi_digits)
    return str(rng.randrange(10 ** (nd - 1), 10 ** nd))


# ----------------------------------------------------------------------------- tasks

def task_passkey(rng):
    key = _number(rng, 5, 5)
    needles = [f"The pass key is {key}. Remember it. {key} is the pass key."]
    return needles, "What is the pass key?", key


def task_magic(rng, lo=2, hi=4):
    n = rng.randint(lo, hi)
    keys = rng.sample(NEEDLE_KEYS, n)
    vals = [_number(rng, 5, 7) for _ in keys]
    needles = [f"The special magic number for {k} is {v}." for k, v in zip(keys, vals)]
    i = rng.randrange(n)
    return needles, f"What is the special magic number for {keys[i]}?", vals[i]


def task_kv(rng):
    n = rng.randint(3, 8)
    keys = set()
    while len(keys) < n:
        keys.add(_a(rng, ADJS) + "-" + _a(rng, NOUNS))
    keys = sorted(keys)
    rng.shuffle(keys)
    vals = [_number(rng, 4, 4) for _ in keys]
    needles = [f"The value of key {k} is {v}." for k, v in zip(keys, vals)]
    i = rng.randrange(n)
    return needles, f"What is the value of key {keys[i]}?", vals[i]


TASKS = {"passkey": task_passkey, "magic": task_magic, "kv": task_kv,
         # Curriculum steps towards "magic": one needle (copy the number after the key
         # phrase), then exactly two (pick the needle whose key the question names).
         "magic1": lambda rng: task_magic(rng, 1, 1),
         "magic2": lambda rng: task_magic(rng, 2, 2)}
DEFAULT_MIX = (("passkey", 0.4), ("magic", 0.3), ("kv", 0.3))


def pick_task(rng, mix=DEFAULT_MIX):
    r = rng.random()
    acc = 0.0
    for name, p in mix:
        acc += p
        if r < acc:
            return name
    return mix[-1][0]


# ----------------------------------------------------------------------------- examples

def _ntok(tok, text):
    return len(tok.encode(text)) if tok is not None else max(1, int(len(text.split()) * 1.25))


def make_document(rng, needles, doc_tokens, tok=None, depth=None):
    """Filler sentences totalling ~doc_tokens tokens with the needles inserted. The needles
    are kept together (in order) at `depth` in [0, 1] (random if None) for passkey; several
    needles are scattered at independent random depths. Returns (text, depths)."""
    pieces, total = [], 0
    needle_cost = sum(_ntok(tok, " " + s) for s in needles)
    while total + needle_cost < doc_tokens or not pieces:
        s = " " + sentence(rng)  # leading space: token counts are additive under the split regex
        pieces.append(s)
        total += _ntok(tok, s)
    depths = []
    if len(needles) == 1:
        d = rng.random() if depth is None else depth
        pos = int(round(d * len(pieces)))
        pieces.insert(pos, " " + needles[0])
        depths.append(d)
    else:
        for nd in needles:
            d = rng.random() if depth is None else depth
            pos = int(round(d * len(pieces)))
            pieces.insert(pos, " " + nd)
            depths.append(d)
    return "".join(pieces), depths


def parse_mix(text):
    """"passkey=1" or "passkey=0.4,magic=0.3,kv=0.3" -> (("passkey", 0.4), ...), normalised."""
    items = []
    for part in text.split(","):
        name, _, w = part.strip().partition("=")
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r} in mix {text!r}")
        items.append((name, float(w) if w else 1.0))
    tot = sum(w for _, w in items)
    return tuple((n, w / tot) for n, w in items if w > 0)


def make_example(rng, tok, doc_tokens, task=None, depth=None, mix=DEFAULT_MIX):
    """One example in the inference template (task drawn from `mix` when None).
    tok: a bpe.Tokenizer. Returns a dict:
    ids (prompt + answer + <|eot|>), prompt_len, answer (text), answer_ids (incl. <|eot|>),
    question_span (start, end) of the first question, task, question, doc_tokens."""
    task = task or pick_task(rng, mix)
    needles, question, answer = TASKS[task](rng)
    doc, depths = make_document(rng, needles, doc_tokens, tok, depth)
    prompt_ids = tok.encode(render_prompt(question, doc), allow_special=True)
    answer_ids = tok.encode(answer) + [tok.special[EOT]]
    return {
        "ids": prompt_ids + answer_ids,
        "prompt_len": len(prompt_ids),
        "answer": answer,
        "answer_ids": answer_ids,
        "question_span": question_span(prompt_ids, tok),
        "task": task,
        "question": question,
        "depths": depths,
    }


def question_span(ids, tok):
    """[start, end) token span of the first question occurrence: after the first <|question|>
    token, up to the following <|context|> token."""
    q, c = tok.special[QUESTION], tok.special[CONTEXT]
    s = ids.index(q) + 1
    e = ids.index(c, s)
    return (s, e)


def tokenizer_training_text(seed=1234, n_docs=400):
    """Text the BPE is trained on: documents, needles, questions and answers of every task."""
    rng = random.Random(seed)
    parts = []
    for _ in range(n_docs):
        task = pick_task(rng)
        needles, question, answer = TASKS[task](rng)
        doc, _ = make_document(rng, needles, rng.randint(50, 400), None)
        parts.append(question)
        parts.append(doc)
        parts.append(answer)
    return parts


if __name__ == "__main__":
    import sys
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    for _ in range(3):
        print(sentence(rng))
    for t in TASKS:
        n, q, a = TASKS[t](rng)
        print(t, n, q, a)
