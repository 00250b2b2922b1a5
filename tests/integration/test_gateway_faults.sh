#!/usr/bin/env bash
# Fault injection through the gateway, as SQLite does it: the test build of
# the module (ASan + UBSan, the allocator countdown of sg_fault.h) fails the
# N-th allocation of the worker along one request, for every N until the
# request runs through: a chat request, a streamed one, a completion, and
# a /v1/rag request over the SQLite store.  Each failure must be answered
# (an OpenAI error or the stream's end), the worker must live on, the next
# request must give the same text, and at the end no sanitizer reports
# (leaks included).  The engine thread's allocations are failed one by one
# by tests/unit/test_fault.c; PostgreSQL and Redis queries run the same
# module paths over their own async clients (test_gateway_stores.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-faults
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
    for i in range(4):
        f.write(json.dumps({"id": "d%d" % i, "title": "doc %d" % i,
                            "text": "passage %d about sockets and event "
                                    "loops, readiness and timers" % i}) + "\n")
PY
"$gw_cli" ingest --store "sqlite:$gw_dir/store/p.db" --collection c \
    --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
    || { echo "FAIL faults_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
chmod -R a+rwX "$gw_dir"
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;"

libasan=$(gcc -print-file-name=libasan.so)
cat >"$gw_dir/lsan.supp" <<'SUPP'
leak:ngx_set_environment
leak:ngx_os_init
leak:ngx_init_setproctitle
leak:ngx_save_argv
leak:ngx_crc32_table_init
leak:ngx_single_process_cycle
leak:_dl_init
SUPP
GW_NGINX_G=" master_process off;" GW_LOG_LEVEL=notice
gw_start "$prefix" "$port" LD_PRELOAD="$libasan" \
    ASAN_OPTIONS="detect_odr_violation=0:detect_leaks=1:log_path=$gw_dir/asan" \
    LSAN_OPTIONS="suppressions=$gw_dir/lsan.supp" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$gw_dir/ubsan" || exit 1
trap 'gw_stop' EXIT

loop() {   # loop NAME PATH BODY
    timeout 900 python3 tests/integration/hardening_client.py "$port" \
        fault_loop "$1" "$2" "$3" "$prefix/logs/error.log"
}
loop faults_chat /v1/chat/completions \
    '{"messages":[{"role":"user","content":"hi there"}],"max_tokens":2,"temperature":0}'
loop faults_chat_stream /v1/chat/completions \
    '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0,"stream":true,"stop":["zz"]}'
loop faults_completion /v1/completions \
    '{"prompt":"Hello","max_tokens":2,"temperature":0}'
loop faults_rag_sqlite /v1/rag \
    '{"question":"event loops and timers","collection":"c","max_tokens":2,"temperature":0}'

# one process (master_process off): a crash would have ended the server
pid=$gw_pid
gw_check faults_server_lived "$(kill -0 "$pid" 2>/dev/null; echo $?)" "nginx $pid is gone"
gw_stop
reports=$(cat "$gw_dir"/asan.* "$gw_dir"/ubsan.* 2>/dev/null)
if ! grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' <<<"$reports" \
    && ! grep -q 'runtime error:' "$prefix/logs/stderr.log"; then
    gw_pass faults_sanitizers_clean
else
    gw_fail faults_sanitizers_clean "sanitizer report (nginx pid $pid):"
    printf '%s\n' "$reports" | head -n 60
fi

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
