#!/usr/bin/env bash
# Fault injection through the gateway, as SQLite does it: the test build of
# the module (ASan + UBSan, the allocator countdown of sg_fault.h) fails the
# N-th allocation of the worker along one request, for every N until the
# request runs through: a chat request, a streamed one, a completion, and
# a /v1/rag request over the SQLite store.  Each failure must be answered
# (an OpenAI error or the stream's end), the worker must live on, the next
# request must give the same text, and at the end no sanitizer reports
# (leaks included).  The engine thread's allocations are failed one by one
# by tests/unit/test_fault.c; /v1/rag over PostgreSQL and Redis by
# test_gateway_faults_stores.sh.
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
gw_sqlite_store faults 4
chmod -R a+rwX "$gw_dir"
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;"

gw_san_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

loop() {   # loop NAME PATH BODY
    gw_fault_loop "$port" "$1" "$2" "$3" "$prefix/logs/error.log"
}
loop faults_chat /v1/chat/completions \
    '{"messages":[{"role":"user","content":"hi there"}],"max_tokens":2,"temperature":0}'
loop faults_chat_stream /v1/chat/completions \
    '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,"temperature":0,"stream":true,"stop":["zz"]}'
loop faults_completion /v1/completions \
    '{"prompt":"Hello","max_tokens":2,"temperature":0}'
loop faults_rag_sqlite /v1/rag \
    '{"question":"event loops and timers","collection":"c","max_tokens":2,"temperature":0}'

gw_san_check "$prefix" faults

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
