#!/usr/bin/env bash
# The page in a real browser: Debian's chromium, headless, driven by
# playwright-core (tests/integration/ui_browser.mjs), against gateways
# started here.  Gateway A: a SQLite store, API keys on every endpoint but
# the page, one running sequence and a queue of one (so that a third
# request gets a 429).  Gateway B: a store that is down (a Redis address
# nothing listens on), then stopped: the page's store error and gateway
# down.  Screenshots go to build/test-logs/ui/.
# Prints PASS/FAIL lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-ui
shots=$root/build/test-logs/ui
rm -rf "$gw_dir" "$shots"
mkdir -p "$gw_dir/store" "$shots"
. tests/integration/gateway_lib.sh

chromium=${SG_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || { echo "SKIP ui: $chromium missing (tools/setup.sh installs chromium)"; exit 0; }
[ -f node_modules/playwright-core/package.json ] || { echo "SKIP ui: playwright-core missing (npm ci)"; exit 0; }
command -v node >/dev/null || { echo "SKIP ui: node missing"; exit 0; }

gw_setup
key=sk-ui-test

gw_corpus "$gw_dir/corpus.jsonl"
"$gw_cli" ingest --store "sqlite:$gw_dir/store/passages.db" --collection man \
    --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
    || { echo "FAIL ui_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
chmod -R a+rwX "$gw_dir"

# the API under /v1 with keys (the server's), the page and the operator's
# endpoints without
ui_locations() {
    cat <<'LOC'
        location = /v1/rag { sparsegate_api rag; }
        location = /v1/chat/completions { sparsegate_api chat_completions; }
        location = /v1/collections { sparsegate_api collections; }
        location = /v1/status { sparsegate_api status; }
        location ^~ /ui/ { sparsegate_api ui; sparsegate_api_key off; }
        location = /health { sparsegate_api health; sparsegate_api_key off; }
        location = /metrics { sparsegate_api metrics; sparsegate_api_key off; }
LOC
}

# configuration errors name the file and line: a page directory that is
# not there, the page in a location that gives it no file name
ui_bad_conf() {   # NAME LOCATIONS PATTERN
    local p=$gw_dir/nginx-bad out
    gw_conf "$p" "$port" "sparsegate_store sqlite:$gw_dir/store/passages.db;" "" "$2"
    out=$(nginx -p "$p" -c "$p/conf/nginx.conf" -t 2>&1)
    gw_check "$1" "$(echo "$out" | grep -Eq "$3"; echo $?)" "$out"
}
ui_bad_conf ui_conf_missing_root \
    'location ^~ /ui/ { sparsegate_api ui; sparsegate_ui_root /nonexistent/ui; }' \
    'cannot open the page.s directory "/nonexistent/ui".*nginx.conf:[0-9]+'
ui_bad_conf ui_conf_exact_location \
    'location = /ui { sparsegate_api ui; }' \
    'endpoint "ui" takes what follows a prefix location.*nginx.conf:[0-9]+'
mkdir -p "$gw_dir/empty-ui"
ui_bad_conf ui_conf_no_index \
    "location ^~ /ui/ { sparsegate_api ui; sparsegate_ui_root $gw_dir/empty-ui; }" \
    'no index.html in'

# B: the store is down
port_b=$(gw_free_port)
dead=$(gw_free_port)
gw_conf "$gw_dir/nginx-b" "$port_b" "sparsegate_store redis:127.0.0.1:$dead;" \
    "" "$(ui_locations)"
gw_start "$gw_dir/nginx-b" "$port_b" || exit 1
pid_b=$gw_pid

gw_conf "$prefix" "$port" \
    "sparsegate_store sqlite:$gw_dir/store/passages.db;
     sparsegate_max_running 1; sparsegate_max_queue 1;" \
    "sparsegate_api_key $key;" "$(ui_locations)"
if ! gw_start "$prefix" "$port"; then
    kill -QUIT "$pid_b" 2>/dev/null
    exit 1
fi
trap 'gw_stop; kill -QUIT "$pid_b" 2>/dev/null' EXIT

UI_URL=$url UI_URL_B=http://127.0.0.1:$port_b UI_PID_B=$pid_b UI_KEY=$key \
UI_SHOTS=$shots UI_CHROMIUM=$chromium UI_CORPUS=$gw_dir/corpus.jsonl \
    node tests/integration/ui_browser.mjs
rc=$?

# gateway A's log: nothing worse than the errors the test caused
crit=$(grep -E '\[(alert|crit|emerg)\]|open socket|leak' "$prefix/logs/error.log" | head -n 3)
gw_check ui_gateway_log_clean "$([ -z "$crit" ]; echo $?)" "$crit"
exit $rc
