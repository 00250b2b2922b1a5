#!/usr/bin/env bash
# The gateway under AddressSanitizer + UBSan: module and libraries built
# with -fsanitize=address,undefined (build-san/), nginx run as one process
# with libasan preloaded (NGINX.md's recipe), a short run of requests that
# walks every path (JSON, SSE, errors, a client killed mid-stream, RAG),
# then a graceful stop.  PASS when no sanitizer report appears.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-asan
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

export SAN=1
gw_setup
gw_micro_model
gw_sqlite_store asan 6
chmod -R a+rwX "$gw_dir"
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;
    sparsegate_test_hooks on;" '
        location = /v1/status { sparsegate_api status; }
        location = /v1/collections { sparsegate_api collections; }
        location ^~ /ui/ { sparsegate_api ui; }
        location = /tokenize { sparsegate_api tokenize; }
        location = /detokenize { sparsegate_api detokenize; }'

gw_san_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

codes=""
req() { codes="$codes $(curl -s -m 120 -o /dev/null -w '%{http_code}' "$@")"; }
req "$url/v1/completions" -d '{"prompt":"Hello","max_tokens":4,"ignore_eos":true}'
req -N "$url/v1/chat/completions" -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true},"stop":["zz"]}'
req "$url/v1/chat/completions" -d '{"messages": ['
req "$url/v1/chat/completions" -d '{"model":"x","messages":[{"role":"user","content":"hi"}]}'
req "$url/v1/completions" -d '{"prompt":[1,2,3],"max_tokens":3000}'
req "$url/secure/v1/models"
req "$url/v1/models"
req "$url/metrics"
req "$url/v1/rag" -d '{"question":"event loops","collection":"c","max_tokens":3}'
req -N "$url/v1/rag" -d '{"question":"timers","max_tokens":3,"stream":true}'
# over 16 KB: tokenized in the thread pool
python3 -c "import json; print(json.dumps({'prompt': '-' * 20000, 'max_tokens': 2}))" >"$gw_dir/long.json"
req "$url/v1/completions" --data-binary @"$gw_dir/long.json"
# a client that goes away mid-stream
curl -s -N -m 60 -o "$gw_dir/killed" "$url/v1/completions" \
    -d '{"prompt":"long","max_tokens":500,"ignore_eos":true,"stream":true}' &
cpid=$!
for _ in $(seq 1 100); do [ -s "$gw_dir/killed" ] && break; sleep 0.1; done
# the page's endpoints, /v1/status with a request running
req "$url/v1/status"
req "$url/v1/collections"
req "$url/ui/"
req "$url/ui/app.js"
req "$url/ui/nothing.js"
kill -9 "$cpid"; wait "$cpid" 2>/dev/null
sleep 1
req "$url/health"

want=" 200 200 400 404 400 401 200 200 200 200 200 200 200 200 200 404 200"
gw_check asan_requests "$([ "$codes" = "$want" ]; echo $?)" "statuses$codes, want$want"

# the openai client's walk (streams, stop strings, errors, prefix cache),
# and V3.2's API (reasoning, tool calls, grammars, logprobs, n, refusals)
if command -v node >/dev/null && [ -d node_modules/openai ]; then
    GW_URL=$url GW_MODEL=gw-tiny timeout 300 node tests/integration/gateway_client.mjs api \
        | sed 's/^\(PASS\|FAIL\) /\1 asan_/'
    GW_URL=$url GW_MODEL=gw-tiny GW_RAG=1 GW_COLLECTION=c timeout 900 \
        node tests/integration/gateway_api.mjs san \
        | sed 's/^\(PASS\|FAIL\) /\1 asan_/'
fi

gw_san_check "$prefix" asan
gw_check asan_no_open_socket "$(grep -q 'open socket' "$prefix/logs/error.log" && echo 1 || echo 0)" \
    "$(grep 'open socket' "$prefix/logs/error.log" | head -n 3)"

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
