#!/usr/bin/env bash
# The gateway against mutated bodies: 3,000 per JSON endpoint (chat
# completions, completions, RAG over SQLite), each a valid request with one
# to three mutations (types, huge numbers, deep nesting, invalid UTF-8,
# truncation, flipped bytes, duplicate keys, long strings; see
# fuzz_client.py).  No answer may be a 5xx, late (30 s) or malformed; the
# worker must be the same process at the end (no crash).  The seed is
# printed; SG_FUZZ_SEED replays a run, SG_FUZZ_N sets the count.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-fuzz
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
gw_micro_model
gw_sqlite_store fuzz 6
chmod -R a+rwX "$gw_dir"
# short generations: every valid body costs at most 8 tokens
gw_conf "$prefix" "$port" "sparsegate_store sqlite:$gw_dir/store/p.db;"
sed -i -e 's/sparsegate_max_tokens 1024;/sparsegate_max_tokens 8;/' \
    -e 's/sparsegate_model_name gw-tiny;/sparsegate_model_name gw-fuzz;/' "$prefix/conf/nginx.conf"
gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

worker=$(pgrep -P "$gw_pid" | head -n 1)
seed=${SG_FUZZ_SEED:-$(( $(date +%s) % 100000 ))}
timeout 1200 python3 tests/integration/fuzz_client.py "$port" "${SG_FUZZ_N:-3000}" "$seed"
gw_check fuzz_no_crash "$([ "$(pgrep -P "$gw_pid" | head -n 1)" = "$worker" ] \
    && ! grep -q 'exited on signal' "$prefix/logs/error.log"; echo $?)" \
    "worker $worker, now $(pgrep -P "$gw_pid" | tr '\n' ' '): $(grep 'exited on signal' "$prefix/logs/error.log" | head -n 2)"
s=$(curl -s -o /dev/null -w '%{http_code}' -m 30 "$url/v1/completions" -d '{"prompt":"after","max_tokens":2}')
gw_check fuzz_serves_after "$([ "$s" = 200 ]; echo $?)" "status $s"
exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
