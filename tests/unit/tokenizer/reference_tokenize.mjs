// Reference tokenizer driver: encodes every document of a corpus file with the JavaScript
// reference implementation (@lenml/tokenizers, a fork of transformers.js' tokenizers) and writes
// the ids, or times the encoding.
//
// Usage:
//   node reference_tokenize.mjs --cache DIR --model-dir DIR --in corpus.bin [--out ids.bin]
//                               [--time]
// Corpus file: u32 count, then per document u32 length + UTF-8 bytes (little endian).
// Ids file:    u32 count, then per document u32 n + n x i32 ids.
// Encoding is Hugging Face `encode(text, add_special_tokens=False)`.
// With --time, prints one JSON line {"bytes", "seconds", "mb_per_s", "tokens"}.
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const args = {};
for (let i = 2; i < process.argv.length; ++i) {
  const a = process.argv[i];
  if (a === "--time") args.time = true;
  else args[a.replace(/^--/, "")] = process.argv[++i];
}
for (const required of ["cache", "model-dir", "in"]) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const require = createRequire(path.join(path.resolve(args.cache), "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const dir = args["model-dir"];
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
});

const buf = fs.readFileSync(args.in);
const decoder = new TextDecoder("utf-8", { fatal: true });
let off = 0;
const count = buf.readUInt32LE(off);
off += 4;
const docs = [];
let totalBytes = 0;
for (let i = 0; i < count; ++i) {
  const len = buf.readUInt32LE(off);
  off += 4;
  docs.push(decoder.decode(buf.subarray(off, off + len)));
  off += len;
  totalBytes += len;
}

const encode = (text) => tokenizer.encode(text, { add_special_tokens: false });
if (args.time) {
  encode(docs[0]);  // Warm-up: JIT and lazy tables.
  const start = process.hrtime.bigint();
  let tokens = 0;
  for (const d of docs) tokens += encode(d).length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ bytes: totalBytes, seconds, mb_per_s: totalBytes / 1e6 / seconds, tokens }));
}
if (args.out) {
  const parts = [];
  const header = Buffer.alloc(4);
  header.writeUInt32LE(count);
  parts.push(header);
  for (const d of docs) {
    const ids = encode(d);
    const chunk = Buffer.alloc(4 + 4 * ids.length);
    chunk.writeUInt32LE(ids.length, 0);
    ids.forEach((id, k) => chunk.writeInt32LE(id, 4 + 4 * k));
    parts.push(chunk);
  }
  fs.writeFileSync(args.out, Buffer.concat(parts));
}
