#!/usr/bin/env bash
# The gateway end to end: a real nginx with the built module on a free
# loopback port and a tiny random-weight model with DeepSeek's vocabulary.
#   - curl: raw SSE bytes, error statuses and shapes (400/401/404/413/429),
#     a body spooled to a temp file, greedy output = the CLI's greedy output
#   - the official openai npm client (gateway_client.mjs): chat, streaming,
#     completions, models, errors, stop strings, prefix cache, and 32
#     simultaneous streams matching their solo runs
#   - a client killed mid-stream frees its sequence (seen in /metrics)
#   - reload and quit while requests run lose nothing, leave no socket
#   - /v1/rag over a SQLite store: answer + citations
#   - error_log debug traces one /v1/rag request from accept to last byte
# Prints PASS/FAIL lines; SKIP when the engine pieces are not built yet.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
mkdir -p "$gw_dir/store"
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/passages.db;"

# A small corpus in the store, for /v1/rag.
python3 - "$gw_dir/corpus.jsonl" <<'PY'
import json, sys
docs = [
    ("epoll", "epoll", "The epoll API monitors many file descriptors to see "
     "whether I/O is possible on any of them. Edge-triggered and "
     "level-triggered modes differ in when readiness is reported."),
    ("eventfd", "eventfd", "eventfd creates an object that can be used as "
     "an event wait/notify mechanism by user-space applications: a "
     "64-bit counter that becomes readable when nonzero."),
    ("nginx", "nginx", "nginx is an HTTP and reverse proxy server. Worker "
     "processes run an event loop and never block on a client."),
]
with open(sys.argv[1], "w") as f:
    for i, t, text in docs:
        f.write(json.dumps({"id": i, "title": t, "text": text}) + "\n")
PY
"$gw_cli" ingest --store "sqlite:$gw_dir/store/passages.db" --collection man \
    --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
    || { echo "FAIL gateway_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
# workers run as nobody: SQLite in WAL mode writes beside the database
chmod -R a+rX "$gw_dir"
chmod -R a+rwX "$gw_dir/store"

gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

# -------------------------------------------------------------- curl
out=$gw_dir/out
j() { python3 -c "import json,sys; d=json.load(open('$out')); print($1)" 2>/dev/null; }
status() {   # status METHOD PATH [curl args...] -> HTTP status, body in $out
    local m=$1 p=$2; shift 2
    curl -s -m 60 -o "$out" -w '%{http_code}' -X "$m" "$url$p" "$@"
}

s=$(status GET /health)
gw_check health "$([ "$s" = 200 ] && grep -q '"ok"' "$out"; echo $?)" "status $s"

s=$(status POST /v1/completions -d '{"prompt":"Hello","max_tokens":3,"temperature":0,"ignore_eos":true}')
gw_check completions_json "$([ "$s" = 200 ] && [ "$(j "d['usage']['completion_tokens']")" = 3 ]; echo $?)" "status $s: $(head -c 300 "$out")"

# Raw SSE bytes: data: events separated by blank lines, [DONE] last.
hdr=$gw_dir/sse.hdr
curl -s -N -m 60 -D "$hdr" -o "$gw_dir/sse.txt" "$url/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
python3 - "$gw_dir/sse.txt" "$hdr" <<'PY'
import json, sys
raw = open(sys.argv[1], "rb").read().decode()
hdr = open(sys.argv[2]).read().lower()
ok = "content-type: text/event-stream" in hdr and raw.endswith("data: [DONE]\n\n")
events = raw.split("\n\n")[:-1]
ok = ok and all(e.startswith("data: ") and "\n" not in e for e in events)
chunks = [json.loads(e[6:]) for e in events[:-1]]
content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
fin = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
usage = chunks[-1].get("usage")
ok = ok and len(content) >= 1 and fin[-1] == "length" and usage \
    and usage["completion_tokens"] == 4 and chunks[-1]["choices"] == [] \
    and "cached_tokens" in usage["prompt_tokens_details"]
print("PASS sse_raw_bytes" if ok else "FAIL sse_raw_bytes: " + repr(raw[:400]))
PY

# Greedy through the gateway = greedy through the CLI on the same ids.
ids="15 200 3000 77 4242"
cli_ids=$("$gw_cli" run --model "$gw_model_dir" --prompt "$ids" --steps 7 --threads 1 2>/dev/null \
          | sed -n 's/^tokens: //p')
cli_text=$("$gw_cli" tokenize --decode --text --tokenizer "$gw_model_dir/tokenizer.json" $cli_ids 2>/dev/null)
s=$(status POST /v1/completions -d "{\"prompt\":[${ids// /,}],\"max_tokens\":8,\"temperature\":0,\"ignore_eos\":true}")
gw_text=$(j "d['choices'][0]['text']")
gw_check greedy_matches_cli "$([ "$s" = 200 ] && [ -n "$cli_ids" ] && [ "$gw_text" = "$cli_text" ]; echo $?)" \
    "gateway '$gw_text' vs cli '$cli_text' (ids $cli_ids)"

# A stop string and a first token that decodes to no bytes (seed 259: the
# tiny model samples a lone UTF-8 lead byte first): the stop check must not
# read the still-empty text (it crashed the worker with SIGSEGV).
s=$(status POST /v1/chat/completions -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"ignore_eos":true,"seed":259}')
first_len=$(j "len(d['choices'][0]['message']['content'])")
s=$(status POST /v1/chat/completions -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"ignore_eos":true,"seed":259,"stop":["zz"]}')
gw_check stop_after_empty_first_token "$([ "$first_len" = 0 ] && [ "$s" = 200 ]; echo $?)" \
    "first token's text length '$first_len' (0 is the case covered), status $s"

# Error statuses and OpenAI's error shape.
err_ok() {   # err_ok NAME WANT_STATUS GOT_STATUS [code]
    local code
    code=$(j "d['error']['code']")
    if [ "$3" = "$2" ] && [ -n "$(j "d['error']['message']")" ] \
        && [ -n "$(j "d['error']['type']")" ] && { [ -z "${4:-}" ] || [ "$code" = "$4" ]; }; then
        gw_pass "$1"
    else
        gw_fail "$1" "status $3 (want $2): $(head -c 300 "$out")"
    fi
}
s=$(status POST /v1/chat/completions -d '{"messages": [')
err_ok error_malformed_json 400 "$s"
s=$(status POST /v1/chat/completions -d '{"messages":"hi"}')
err_ok error_bad_field 400 "$s"
s=$(status POST /v1/chat/completions -d '{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}')
err_ok error_unknown_model 404 "$s" model_not_found
# a model name longer than the error message's buffer, cut inside a
# two-byte character: the answer stays UTF-8 (the cut byte is dropped)
python3 -c "import json; print(json.dumps({'model': 'x' + '\u00e9' * 400, 'messages': [{'role': 'user', 'content': 'x'}]}, ensure_ascii=False))" >"$gw_dir/longname.json"
s=$(status POST /v1/chat/completions --data-binary @"$gw_dir/longname.json")
err_ok error_unknown_model_long_name 404 "$s" model_not_found
gw_check error_message_utf8 "$(python3 -c 'import sys; open(sys.argv[1], "rb").read().decode("utf-8")' "$out" 2>/dev/null; echo $?)" \
    "$(head -c 300 "$out" | od -c | head -3)"
python3 -c "import json; print(json.dumps({'prompt': ' '.join('w%d' % i for i in range(1200)), 'max_tokens': 1000}))" >"$gw_dir/long.json"
s=$(status POST /v1/completions --data-binary @"$gw_dir/long.json")
err_ok error_context_length 400 "$s" context_length_exceeded
gw_check error_context_numbers "$(grep -q 'maximum context length is 2048 tokens' "$out" \
    && grep -q 'in the messages, 1000 in the completion' "$out"; echo $?)" "$(head -c 300 "$out")"
s=$(status GET /secure/v1/models)
err_ok error_auth_missing 401 "$s" invalid_api_key
s=$(status GET /secure/v1/models -H 'Authorization: Bearer sk-wrong')
err_ok error_auth_wrong 401 "$s" invalid_api_key
s=$(status GET /secure/v1/models -H 'Authorization: Bearer sk-test-1')
gw_check auth_ok "$([ "$s" = 200 ]; echo $?)" "status $s"
head -c 9000000 /dev/zero | tr '\0' 'a' >"$gw_dir/big.txt"
s=$(status POST /v1/completions -H 'Content-Type: application/json' --data-binary @"$gw_dir/big.txt")
err_ok error_body_too_large 413 "$s" request_too_large
s=$(status GET /v1/nothing)
err_ok error_unknown_endpoint 404 "$s"

# A 3 MB body, spooled by nginx to a temp file, is read from there (the
# bulk: a JSON schema's description, which constrains nothing).
python3 -c "
import json; print(json.dumps({'prompt': 'Hello there', 'max_tokens': 2,
  'temperature': 0, 'response_format': {'type': 'json_schema',
  'json_schema': {'name': 'x', 'description': 'x' * 3000000,
                  'schema': {'type': 'object'}}}}))" >"$gw_dir/spool.json"
s=$(status POST /v1/completions --data-binary @"$gw_dir/spool.json")
gw_check large_body_temp_file "$([ "$s" = 200 ] && [ "$(j "d['usage']['prompt_tokens']")" -gt 0 ]; echo $?)" \
    "status $s: $(head -c 200 "$out")"

# A prompt over 16 KB is tokenized in nginx's thread pool (64 dashes are
# one token: ~313 tokens from 20 KB), through chat and completions.
python3 -c "import json; print(json.dumps({'prompt': '-' * 20000 + ' end', 'max_tokens': 2, 'temperature': 0}))" >"$gw_dir/long1.json"
s=$(status POST /v1/completions --data-binary @"$gw_dir/long1.json")
gw_check long_prompt_in_thread "$([ "$s" = 200 ] && [ "$(j "d['usage']['prompt_tokens']")" -gt 300 ]; echo $?)" \
    "status $s: $(head -c 300 "$out")"
python3 -c "import json; print(json.dumps({'messages': [{'role': 'user', 'content': '-' * 20000}], 'max_tokens': 2}))" >"$gw_dir/long2.json"
s=$(status POST /v1/chat/completions --data-binary @"$gw_dir/long2.json")
gw_check long_chat_in_thread "$([ "$s" = 200 ] && [ "$(j "d['usage']['prompt_tokens']")" -gt 300 ]; echo $?)" \
    "status $s: $(head -c 300 "$out")"

# --------------------------------------------------------- openai client
if command -v node >/dev/null && [ -d node_modules/openai ]; then
    GW_URL=$url GW_MODEL=gw-tiny timeout 300 node tests/integration/gateway_client.mjs api
    GW_URL=$url GW_MODEL=gw-tiny timeout 300 node tests/integration/gateway_client.mjs concurrency
else
    echo "SKIP openai_client: node or node_modules/openai missing"
fi

# ---------------------------------------------------------------- rag
s=$(status POST /v1/rag -d '{"question":"How does epoll report readiness?","collection":"man","max_tokens":4,"temperature":0}')
gw_check rag_answer "$([ "$s" = 200 ] && [ "$(j "len(d['citations'])")" -ge 1 ] \
    && [ "$(j "'epoll' in [c['doc_id'] for c in d['citations']]")" = True ] \
    && [ "$(j "d['usage']['completion_tokens']")" = 4 ]; echo $?)" "status $s: $(head -c 400 "$out")"
s=$(status POST /v1/rag -d '{"question":"What is an eventfd counter?","collection":"man","max_tokens":4,"temperature":0}')
gw_check rag_prefix_reuse "$([ "$s" = 200 ] && [ "$(j "d['usage']['prompt_tokens_details']['cached_tokens']")" -ge 64 ]; echo $?)" \
    "second question over the same collection: $(head -c 400 "$out")"
curl -s -N -m 60 -o "$gw_dir/rag.sse" "$url/v1/rag" \
    -d '{"question":"nginx workers","collection":"man","max_tokens":3,"stream":true}'
gw_check rag_stream "$([[ "$(head -n 1 "$gw_dir/rag.sse")" == *'"citations":[{"id"'* ]] \
    && [[ "$(tail -c 14 "$gw_dir/rag.sse")" == *'data: [DONE]'* ]]; echo $?)" "$(head -c 300 "$gw_dir/rag.sse")"
s=$(status POST /v1/rag -d '{"collection":"man"}')
err_ok rag_error_no_question 400 "$s"

# ------------------------------------------- client killed mid-stream
metric() { curl -s -m 5 "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
cancelled0=$(metric sparsegate_engine_requests_cancelled)
closed0=$(metric 'sparsegate_errors_total{kind="client_closed"}')
curl -s -N -m 60 "$url/v1/completions" -o "$gw_dir/killed.txt" \
    -d '{"prompt":"a long one","max_tokens":1000,"ignore_eos":true,"stream":true}' &
cpid=$!
for i in $(seq 1 100); do
    [ "$(metric sparsegate_running_sequences)" = 1 ] && [ -s "$gw_dir/killed.txt" ] && break
    sleep 0.1
done
running_before=$(metric sparsegate_running_sequences)
kv_before=$(metric sparsegate_kv_blocks_used)
kill -9 "$cpid"; wait "$cpid" 2>/dev/null
freed=1
for i in $(seq 1 100); do
    if [ "$(metric sparsegate_running_sequences)" = 0 ] \
        && [ "$(metric sparsegate_active_requests)" = 0 ] \
        && [ "$(metric sparsegate_engine_requests_cancelled)" -gt "$cancelled0" ]; then
        freed=0; break
    fi
    sleep 0.1
done
gw_check killed_client_frees_sequence "$freed" \
    "running $running_before -> $(metric sparsegate_running_sequences), active $(metric sparsegate_active_requests), kv $kv_before -> $(metric sparsegate_kv_blocks_used)"
gw_check killed_client_counted "$([ "$(metric 'sparsegate_errors_total{kind="client_closed"}')" -gt "$closed0" ]; echo $?)" \
    "client_closed stayed $closed0"
curl -s -m 5 -o "$gw_dir/metrics.txt" "$url/metrics"
gw_check metrics_histograms "$(grep -q '^sparsegate_time_to_first_token_seconds_count [1-9]' "$gw_dir/metrics.txt" \
    && grep -q '^sparsegate_inter_token_latency_seconds_bucket{le="+Inf"} [1-9]' "$gw_dir/metrics.txt"; echo $?)" \
    "$(grep -E '_count|Inf' "$gw_dir/metrics.txt")"

# ---------------------------------- reload and quit while requests run
# Four streams of 60 tokens each run across a reload, then across a quit:
# every one must end with its 60 tokens and [DONE].
run_streams() {   # run_streams TAG: starts 4 streams, pids in spids
    spids=()
    for k in 1 2 3 4; do
        curl -s -N -m 120 -o "$gw_dir/$1.$k" "$url/v1/completions" \
            -d "{\"prompt\":\"stream $k\",\"max_tokens\":60,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" &
        spids+=($!)
    done
    for i in $(seq 1 100); do
        [ "$(cat "$gw_dir/$1".* 2>/dev/null | grep -c '^data: ')" -ge 8 ] && break
        sleep 0.05
    done
}
streams_complete() {   # streams_complete TAG -> 0 when all 4 are whole
    local k
    for k in 1 2 3 4; do
        grep -q '"completion_tokens":60' "$gw_dir/$1.$k" || return 1
        [[ "$(tail -c 14 "$gw_dir/$1.$k")" == *'data: [DONE]'* ]] || return 1
    done
}
run_streams reload
kill -HUP "$gw_pid"
wait "${spids[@]}"
gw_check reload_loses_nothing "$(streams_complete reload; echo $?)" "$(tail -c 200 "$gw_dir/reload.1")"
sleep 0.5
s=$(status GET /health)
gw_check reload_serves "$([ "$s" = 200 ]; echo $?)" "status $s"

run_streams quit
kill -QUIT "$gw_pid"
wait "${spids[@]}"
gw_check quit_loses_nothing "$(streams_complete quit; echo $?)" "$(tail -c 200 "$gw_dir/quit.1")"
for i in $(seq 1 100); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
gw_check quit_exits "$(kill -0 "$gw_pid" 2>/dev/null && echo 1 || echo 0)" "master still running"
wait "$gw_pid" 2>/dev/null; gw_pid=
gw_check no_open_socket_left "$(grep -q 'open socket' "$prefix/logs/error.log" && echo 1 || echo 0)" \
    "$(grep 'open socket' "$prefix/logs/error.log" | head -n 3)"
gw_check no_alerts "$(grep -Eq '\[(alert|emerg|crit)\]' "$prefix/logs/error.log" && echo 1 || echo 0)" \
    "$(grep -E '\[(alert|emerg|crit)\]' "$prefix/logs/error.log" | head -n 3)"

# -------------------------------------------------------- debug trace
# With "error_log ... debug" one /v1/rag request can be followed from
# accept to its last byte: every step logs under the connection's number.
GW_LOG_LEVEL=debug gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/passages.db;"
gw_start "$prefix" "$port" || exit 1
s=$(status POST /v1/rag -d '{"question":"How does epoll report readiness?","collection":"man","max_tokens":2,"temperature":0}')
gw_stop
python3 - "$prefix/logs/error.log" "$s" <<'PY'
import re, sys
log, status = open(sys.argv[1], errors="replace").read().splitlines(), sys.argv[2]
conn = None
for line in log:
    m = re.search(r'\*(\d+) sparsegate: POST "/v1/rag": endpoint rag', line)
    if m:
        conn = m.group(1)
mine = [l for l in log if conn and re.search(r'\*%s ' % conn, l)]
steps = ["accept: 127.0.0.1", "sparsegate: POST \"/v1/rag\": endpoint rag",
         "sparsegate params: body of", "sparsegate rag: phase 0 \"shared block\"",
         "sparsegate rag: phase 1 \"search\"", "sparsegate rag: query done",
         "sparsegate rag: phase 4 \"context build\"", "sparsegate rag: context of",
         "sparsegate rag: phase 7 \"generate\"", "sparsegate job rag-",
         "prompt tokens, max_tokens 2", "sparsegate job rag-.*: token",
         "sparsegate job rag-.*: done, finish", "sparsegate response: rag-.* ends",
         "sparsegate send: 200", "http finalize request: 0",
         "sparsegate job rag-.*: request gone", "close http connection"]
at, missing = 0, []
for s in steps:
    for i in range(at, len(mine)):
        if re.search(s, mine[i]):
            at = i + 1
            break
    else:
        missing.append(s)
ok = status == "200" and conn and not missing
print("PASS debug_trace_one_request" if ok else
      "FAIL debug_trace_one_request: status %s, connection %s, not in order: %s"
      % (status, conn, missing))
PY

# ------------------------------------------------------- queue full
# One running sequence and a queue of one: a burst is refused with 429.
gw_conf "$prefix" "$port" "sparsegate_max_running 1; sparsegate_max_queue 1;"
gw_start "$prefix" "$port" || exit 1
qpids=()
for k in $(seq 1 6); do
    curl -s -m 60 -o "$gw_dir/q.$k" -D "$gw_dir/q.$k.h" -w '%{http_code}' "$url/v1/completions" \
        -d '{"prompt":"queue","max_tokens":40,"ignore_eos":true}' >"$gw_dir/q.$k.s" &
    qpids+=($!)
done
wait "${qpids[@]}" 2>/dev/null
n429=$(cat "$gw_dir"/q.*.s | grep -o 429 | wc -l)
n200=$(cat "$gw_dir"/q.*.s | grep -o 200 | wc -l)
retry=$(cat "$gw_dir"/q.*.h | grep -ci '^retry-after: ')
gw_check queue_full_429 "$([ "$n429" -ge 1 ] && [ "$n200" -ge 1 ] && [ "$retry" -ge 1 ] \
    && grep -lq rate_limit_exceeded "$gw_dir"/q.[1-6]; echo $?)" "200s: $n200, 429s: $n429, Retry-After: $retry"
gw_stop

# ------------------------- CUDA asked for on a machine without a GPU
# The worker stays up without an engine and answers 503 with the reason
# (the CUDA backend is a library opened at run time: engine/model/cuda_loader.c).
if nvidia-smi -L >/dev/null 2>&1; then
    echo "SKIP gateway_cuda_unavailable: this machine has a GPU"
else
    gw_conf "$prefix" "$port" "sparsegate_backend cuda;"
    gw_start "$prefix" "$port" || exit 1
    s=$(status POST /v1/completions -d '{"prompt":"hi","max_tokens":2}')
    gw_check cuda_unavailable_503 "$([ "$s" = 503 ] && grep -q 'CUDA' "$out"; echo $?)" \
        "status $s: $(head -c 300 "$out")"
    gw_check cuda_unavailable_logged \
        "$(grep -q 'did not start.*CUDA' "$prefix/logs/error.log"; echo $?)" \
        "$(tail -n 3 "$prefix/logs/error.log")"
    gw_stop
fi

# ------------------------------------------- nginx -t names file:line
bad_conf() {   # bad_conf NAME EXTRA_HTTP WANT_REGEX
    gw_conf "$gw_dir/bad" "$port" "$2"
    nginx -t -p "$gw_dir/bad" -c "$gw_dir/bad/conf/nginx.conf" >"$gw_dir/bad.out" 2>&1
    local rc=$?
    gw_check "$1" "$([ $rc -ne 0 ] && grep -Eq "$3" "$gw_dir/bad.out"; echo $?)" "$(cat "$gw_dir/bad.out")"
}
bad_conf conf_error_backend "sparsegate_backend tpu;" 'invalid value "tpu".*nginx.conf:[0-9]+'
bad_conf conf_error_time "sparsegate_store_timeout forever;" 'sparsegate_store_timeout.*invalid value.*nginx.conf:[0-9]+'
bad_conf conf_error_number "sparsegate_max_queue 0;" 'greater than 1 in .*nginx.conf:[0-9]+'
bad_conf conf_error_store "sparsegate_store mysql:x;" 'sparsegate_store.*nginx.conf:[0-9]+'
# a mistyped SQLite path, or a file that is not a store: named, nothing made
bad_conf conf_error_store_missing "sparsegate_store sqlite:$gw_dir/store/pasages.db;" \
    "sparsegate_store .*store/pasages.db: No such file.*nginx.conf:[0-9]+"
gw_check conf_store_missing_not_created "$([ ! -e "$gw_dir/store/pasages.db" ]; echo $?)" "file created"
printf 'not a database, long enough to be taken for a header of one......................................\n' >"$gw_dir/store/text.db"
bad_conf conf_error_store_not_a_store "sparsegate_store sqlite:$gw_dir/store/text.db;" \
    "sparsegate_store .*store/text.db.*not a SparseGate store.*nginx.conf:[0-9]+"
bad_conf conf_error_index_share "sparsegate_index_share two;" 'sparsegate_index_share.*invalid.*nginx.conf:[0-9]+'
gw_conf "$gw_dir/bad" "$port" "sparsegate_index_share 2;"
nginx -t -p "$gw_dir/bad" -c "$gw_dir/bad/conf/nginx.conf" >"$gw_dir/bad.out" 2>&1
gw_check conf_index_share_ok "$?" "$(cat "$gw_dir/bad.out")"
sed -i "s#sparsegate_model $gw_model_dir;#sparsegate_model $gw_dir/no-such-model;#" "$gw_dir/bad/conf/nginx.conf"
nginx -t -p "$gw_dir/bad" -c "$gw_dir/bad/conf/nginx.conf" >"$gw_dir/bad.out" 2>&1
gw_check conf_error_model "$(grep -Eq 'no-such-model.*config.json.*nginx.conf:[0-9]+' "$gw_dir/bad.out"; echo $?)" "$(cat "$gw_dir/bad.out")"

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
