#!/usr/bin/env bash
# Fault injection through the gateway over the network stores: the test
# build (ASan + UBSan, the allocator countdown of sg_fault.h) fails the
# N-th allocation of the worker along one /v1/rag request, for every N
# until the request runs through, with its passages from Redis and then
# from PostgreSQL (private servers on loopback, tests/retrieval/servers.sh;
# their queries run on the nginx event loop over their async clients).
# Each failure must be answered (an OpenAI error), the worker must live
# on, the next request must give the same text, and at the end no
# sanitizer reports (leaks included).  SQLite's turn is in
# test_gateway_faults.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-faults-stores
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh
. tests/retrieval/servers.sh

gw_servers_needed gateway_faults_stores
export SAN=1
gw_setup
gw_micro_model

gw_servers_start faults_stores

# the corpus of test_gateway_faults.sh: the same request over each store
gw_passages "$gw_dir/corpus.jsonl" 4

declare -A URI=([postgres]="postgres:$SG_PG" [redis]="redis:$SG_REDIS")
for kind in redis postgres; do
    "$gw_cli" ingest --store "${URI[$kind]}" --collection c \
        --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.$kind.log" 2>&1 \
        || { gw_fail "faults_${kind}_ingest" "$(tail -n 3 "$gw_dir/ingest.$kind.log")"; continue; }
    prefix=$gw_dir/nginx-$kind
    port=$(gw_free_port)
    rm -f "$gw_dir"/asan.* "$gw_dir"/ubsan.*
    gw_conf "$prefix" "$port" "sparsegate_store \"${URI[$kind]}\"; sparsegate_store_timeout 10s;"
    chmod -R a+rwX "$gw_dir"
    gw_san_start "$prefix" "$port" || { gw_fail "faults_${kind}_start" "nginx did not start"; continue; }
    gw_fault_loop "$port" "faults_rag_$kind" /v1/rag \
        '{"question":"event loops and timers","collection":"c","max_tokens":2,"temperature":0}' \
        "$prefix/logs/error.log"
    gw_san_check "$prefix" "faults_$kind"
done

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
