// Rebuilds a SentencePiece tokenizer.model (ModelProto, BPE) from a Hugging Face
// LlamaTokenizerFast tokenizer.json (Prepend/Replace normalizer, byte_fallback BPE).
//
// Usage: node make_sp_model.mjs tokenizer.json tokenizer.model
//
// Piece scores: SentencePiece BPE merges the adjacent pair whose concatenation has the highest
// score; Hugging Face merges the pair with the lowest rank. The HF converter emits merges in
// descending score order, so score(piece) = -(rank of the first merge producing it) gives the
// same merge order. Pieces no merge produces (single characters) get score 0 and never compete.
import fs from "fs";

const [, , inPath, outPath] = process.argv;
const tj = JSON.parse(fs.readFileSync(inPath, "utf8"));
const vocab = tj.model.vocab;
const merges = tj.model.merges.map((m) => (Array.isArray(m) ? m : m.split(" ")));
const n = Object.keys(vocab).length;
const pieces = new Array(n);
for (const [p, id] of Object.entries(vocab)) pieces[id] = p;
const score = new Float64Array(n).fill(0);
const seen = new Uint8Array(n);
merges.forEach(([a, b], rank) => {
  const id = vocab[a + b];
  if (id !== undefined && !seen[id]) {
    seen[id] = 1;
    score[id] = -rank;
  }
});
const special = new Map(tj.added_tokens.map((t) => [t.id, t.content]));

const bytes = [];
const varint = (v) => {
  let x = BigInt.asUintN(64, BigInt(v));
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x) b |= 0x80;
    bytes.push(b);
  } while (x);
};
const key = (field, wire) => varint((field << 3) | wire);
const lenDelimited = (field, writeBody) => {
  const saved = bytes.splice(0);
  writeBody();
  const body = bytes.splice(0);
  bytes.push(...saved);
  key(field, 2);
  varint(body.length);
  for (const b of body) bytes.push(b);
};
const str = (field, s) => lenDelimited(field, () => bytes.push(...Buffer.from(s, "utf8")));
const f32 = (field, v) => {
  key(field, 5);
  const buf = Buffer.alloc(4);
  buf.writeFloatLE(v);
  bytes.push(...buf);
};
const int = (field, v) => {
  key(field, 0);
  varint(v);
};

// Writing piece by piece keeps the splice-based helper cheap: each piece is small.
const out = [];
for (let id = 0; id < n; ++id) {
  const p = pieces[id];
  // Types: NORMAL=1 UNKNOWN=2 CONTROL=3 BYTE=6.
  let type = 1;
  if (p === tj.model.unk_token) type = 2;
  else if (special.has(id)) type = 3;
  else if (/^<0x[0-9A-F]{2}>$/.test(p)) type = 6;
  lenDelimited(1, () => {
    str(1, p);
    f32(2, type === 1 ? score[id] : 0);
    int(3, type);
  });
  out.push(Buffer.from(bytes.splice(0)));
}
lenDelimited(2, () => {  // TrainerSpec
  int(3, 2);              // model_type = BPE
  int(4, n);              // vocab_size
  int(35, 1);             // byte_fallback
  int(40, vocab[tj.model.unk_token] ?? 0);  // unk_id
  int(41, vocab["<s>"] ?? -1);              // bos_id
  int(42, vocab["</s>"] ?? -1);             // eos_id
  int(43, -1);                              // pad_id
});
lenDelimited(3, () => {  // NormalizerSpec
  str(1, "identity");
  int(3, 1);  // add_dummy_prefix
  int(4, 0);  // remove_extra_whitespaces
  int(5, 1);  // escape_whitespaces
});
out.push(Buffer.from(bytes.splice(0)));
fs.writeFileSync(outPath, Buffer.concat(out));
console.log(`wrote ${outPath}: ${n} pieces, ${merges.length} merges`);
