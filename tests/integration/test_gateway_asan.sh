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
mkdir -p "$gw_dir/store"
python3 - "$gw_dir/corpus.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(6):
        f.write(json.dumps({"id": "d%d" % i, "title": "doc %d" % i,
                            "text": "passage %d about sockets and event "
                                    "loops, readiness and timers" % i}) + "\n")
PY
"$gw_cli" ingest --store "sqlite:$gw_dir/store/p.db" --collection c \
    --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
    || { echo "FAIL asan_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
chmod -R a+rwX "$gw_dir"
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;
    sparsegate_test_hooks on;" '
        location = /v1/status { sparsegate_api status; }
        location = /v1/collections { sparsegate_api collections; }
        location ^~ /ui/ { sparsegate_api ui; }
        location = /tokenize { sparsegate_api tokenize; }
        location = /detokenize { sparsegate_api detokenize; }'

libasan=$(gcc -print-file-name=libasan.so)
cat >"$gw_dir/lsan.supp" <<'EOF'
# nginx core keeps these for the process lifetime (connection and event
# arrays, environment); shared libraries' constructors (libstdc++'s
# exception pool, OpenBLAS, libgomp) allocate once when the module loads
leak:ngx_set_environment
leak:ngx_os_init
leak:ngx_init_setproctitle
leak:ngx_save_argv
leak:ngx_crc32_table_init
leak:ngx_single_process_cycle
leak:_dl_init
EOF
GW_NGINX_G=" master_process off;"
gw_start "$prefix" "$port" LD_PRELOAD="$libasan" \
    ASAN_OPTIONS="detect_odr_violation=0:fast_unwind_on_malloc=0:detect_leaks=1:log_path=$gw_dir/asan" \
    LSAN_OPTIONS="suppressions=$gw_dir/lsan.supp" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$gw_dir/ubsan" || exit 1
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

gw_stop
# (a log holding only LSan's "Suppressions used" table is clean)
reports=$(cat "$gw_dir"/asan.* "$gw_dir"/ubsan.* 2>/dev/null)
if ! grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' <<<"$reports" \
    && ! grep -q 'runtime error:' "$prefix/logs/stderr.log"; then
    gw_pass asan_clean
else
    gw_fail asan_clean "sanitizer report:"
    printf '%s\n' "$reports" | head -n 60
    grep -A5 'runtime error:' "$prefix/logs/stderr.log" | head -n 20
fi
gw_check asan_no_open_socket "$(grep -q 'open socket' "$prefix/logs/error.log" && echo 1 || echo 0)" \
    "$(grep 'open socket' "$prefix/logs/error.log" | head -n 3)"

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
