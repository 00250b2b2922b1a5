#!/usr/bin/env bash
# How long one /v1/rag question of N distinct words holds up an nginx
# worker (N = 20,000, 60,000, 120,000; 9 bytes a word, so 120,000 is about
# 1 MB), over a SQLite store: the slowest /health answer while the
# question runs (tests/integration/gateway_freeze.py), the question's own
# time and status.  Writes its section of bench/RESULTS.md.
#
#   bench/rag_freeze.sh [REV]
#
# With REV (a git revision), REV's module and command line are measured
# too, before this checkout's, each with its own store (made by its own
# ingest): REV's tree is built in build/bench-freeze/REV (kept: a second
# run reuses it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rev=${1:-}
sizes=${FREEZE_WORDS:-"20000 60000 120000"}
gw_dir=$root/build/bench-freeze
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_build
gw_model
python3 - "$gw_dir/corpus.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i, t in {"epoll": "The epoll API monitors file descriptors.",
                 "eventfd": "eventfd makes a counter a wait/notify object.",
                 "nginx": "nginx workers run an event loop."}.items():
        f.write(json.dumps({"id": i, "title": i, "text": t}) + "\n")
PY

# measure LABEL SO CLI: one gateway, every size; rows into $gw_dir/rows
measure() {
    local label=$1 so=$2 cli=$3 run=$gw_dir/run-$1 n
    local store=$run/store.db
    rm -rf "$run"
    mkdir -p "$run"
    chmod 777 "$run"
    "$cli" ingest --store "sqlite:$store" --collection man \
        --jsonl "$gw_dir/corpus.jsonl" --quiet
    chmod a+rw "$store"*
    gw_so=$so
    port=$(gw_free_port)
    gw_conf "$run/nginx" "$port" "sparsegate_store sqlite:$store; sparsegate_store_timeout 600s;"
    chmod -R a+rX "$run"
    gw_start "$run/nginx" "$port" || exit 1
    for n in $sizes; do
        read -r busy took st bytes idle count \
            <<<"$(python3 tests/integration/gateway_freeze.py "$port" "$n")"
        printf '| %s | %d | %d | %d | %d | %d | %d |\n' "$label" "$n" \
            "$bytes" "$busy" "$idle" "$took" "$st" >>"$gw_dir/rows"
        echo "$label: $n words: /health waited up to $busy ms (idle $idle), the question took $took ms ($st)"
    done
    gw_stop
}

trap 'gw_stop' EXIT
: >"$gw_dir/rows"
load=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$rev" ]; then
    sha=$(git rev-parse --short "$rev^{commit}")
    src=$gw_dir/$sha
    if [ ! -x "$src/build/sparsegate" ] || [ ! -f "$src/build/nginx/ngx_http_sparsegate_module.so" ]; then
        rm -rf "$src"
        mkdir -p "$src"
        git archive "$sha" | tar -x -C "$src"
        (cd "$src" && nice make -s -j2 build/sparsegate && nice bash tools/build_module.sh) \
            >"$gw_dir/$sha-build.log" 2>&1 || { tail -n 20 "$gw_dir/$sha-build.log"; exit 1; }
    fi
    measure "$sha" "$src/build/nginx/ngx_http_sparsegate_module.so" "$src/build/sparsegate"
fi
measure "this" "$root/build/nginx/ngx_http_sparsegate_module.so" "$gw_cli"

body=$gw_dir/section.md
{
    echo "One /v1/rag question of N distinct words over a SQLite store; /health"
    echo "asked every 5 ms meanwhile (one worker).  The slowest /health is how long"
    echo "the worker could not answer anyone; idle: the same sampling with nothing"
    echo "else running.  A question past the context's size ends in a 400 (its"
    echo "prompt cannot fit): what matters here is what the worker did first."
    echo "Before, the worker split the question into terms by comparing each new one"
    echo "with all before it, then searched, all on the event loop; now the terms are"
    echo "found through a hash set, at most 512 are searched, and the SQLite search"
    echo "runs in nginx's thread pool.  What is left on the worker is reading and"
    echo "parsing the body (cJSON: about 1 ms per MB on an idle core), and the wait of"
    echo "every process on a machine this loaded."
    [ -n "$rev" ] && echo "Rows \`$sha\` (\`bash bench/rag_freeze.sh $rev\`): the module and ingest built from that revision; \`this\`: this checkout."
    echo "Load average before the run: $load (\`nice -n 10\`, a machine shared with other work)."
    echo
    echo "| build | words | question bytes | slowest /health ms | idle ms | question ms | status |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    cat "$gw_dir/rows"
} >"$body"
bash bench/section.sh rag_freeze "$body"
cat "$body"
