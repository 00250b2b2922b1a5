#!/usr/bin/env bash
# The soak, short: 64 concurrent streams (chat, completions, /v1/rag over
# SQLite) against nginx with 2 workers, a quarter of the clients leaving
# mid-stream at random points; then the same load while one worker is
# killed (SIGKILL) mid-stream and nginx reloaded.  After each phase and an
# idle settle: the workers' open fds as before, VmRSS steady, no KV block
# in use beyond the prefix cache, the gauges 0; every stream not left by
# its client ended with [DONE] or an error event (only streams of the
# killed worker cut); nothing at [alert]/[emerg] in error.log, no crash
# other than the kill.  The driver is soak_client.py; bench/soak.sh runs
# it longer.
#
#   SOAK_STREAMS, SOAK_SECONDS (a phase), SOAK_SEED, SOAK_LEAVE,
#   SOAK_RSS_MB (the steady-state VmRSS bound), SOAK_RSS_TOTAL_MB,
#   SOAK_OUT (its JSON), SOAK_DIR (its scratch directory)
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=${SOAK_DIR:-$root/build/test-gw-soak}
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
# the smaller model: the soak is about the gateway, not the model
gw_micro_model
mkdir -p "$gw_dir/store"
gw_corpus "$gw_dir/corpus.jsonl"
"$gw_cli" ingest --store "sqlite:$gw_dir/store/p.db" --collection man \
    --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
    || { echo "FAIL soak_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
chmod -R a+rwX "$gw_dir"
# 64 streams fit the queue (no 429s: every stream is served); a small KV
# cache, so the RSS it may take as it is first touched is small too
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;
    sparsegate_max_queue 128; sparsegate_max_running 16;"
sed -i -e 's/^worker_processes 1;/worker_processes 2;/' \
    -e 's/sparsegate_kv_cache_size 256m;/sparsegate_kv_cache_size 64m;/' "$prefix/conf/nginx.conf"
GW_LOG_LEVEL=notice
gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

out=${SOAK_OUT:-$gw_dir/soak.json}
# the store's pool: 4 connections (SG_STORE_POOL_SIZE), each the file and its -wal
export SOAK_POOLED="$gw_dir/store/p.db:8"
# VmRSS: at most 8 MB more over the second phase (steady state: a leak of
# a few hundred bytes a stream shows), and since the warm-up at most the
# KV pool's 64 MB (its pages touched as first used) + 16 MB (the store
# pool's page caches, allocator slack)
export SOAK_RSS_TOTAL_MB=${SOAK_RSS_TOTAL_MB:-80}
timeout 900 python3 tests/integration/soak_client.py "$port" "$gw_pid" "$prefix" \
    "${SOAK_STREAMS:-64}" "${SOAK_SECONDS:-12}" "${SOAK_SEED:-1}" \
    "${SOAK_LEAVE:-0.25}" "$out" "${SOAK_RSS_MB:-8}" | tee "$gw_dir/driver.out"
grep -q '^FAIL' "$gw_dir/driver.out" && gw_failed=$((${gw_failed:-0} + 1))
grep -q '^PASS soak_new_workers_rss' "$gw_dir/driver.out" \
    || gw_fail soak_driver "the driver did not run to its end"

killed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['killed_pid'])" "$out" 2>/dev/null)
gw_stop
log=$prefix/logs/error.log
# the one crash we caused is an [alert] too: "worker process N exited on
# signal 9"; anything else at [alert]/[emerg], or another worker's end by
# a signal, is a defect
other=$(grep -E '\[(alert|emerg)\]|exited on signal' "$log" \
    | grep -v "worker process ${killed:-none} exited on signal 9$")
gw_check soak_error_log_clean "$([ -n "$killed" ] && [ -z "$other" ]; echo $?)" \
    "killed ${killed:-?}; $(printf '%s' "$other" | head -n 5)"
gw_check soak_no_open_socket "$(grep -q 'open socket' "$log" && echo 1 || echo 0)" \
    "$(grep 'open socket' "$log" | head -n 3)"

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
