#!/usr/bin/env bash
# Who may reach which endpoint.  Endpoints are bound by the location's
# configuration ("sparsegate_api ENDPOINT"), never by the end of the URI,
# and every endpoint of a location with keys asks for one:
#   - /metrics behind "deny all" cannot be read as /v1/metrics or
#     /v1/anything/metrics
#   - under a keyed location, metrics and health ask for the key like the
#     rest, and a path that names no endpoint there is refused first
#   - a key is accepted only whole: its prefix, it with a byte more, or
#     another of its length are refused; the second key works too
#   - "sparsegate_api_key off" opens one location under server-wide keys
#   - nginx -t refuses sparsegate_api without an endpoint, an unknown one,
#     and "model" outside a prefix location
#   - the shipped confs (conf/sparsegate.conf, docker/nginx.conf) pass
#     nginx -t, and the example serves what it binds
# Prints PASS/FAIL lines; SKIP when the engine pieces are not built yet.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-access
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_setup
out=$gw_dir/out

locations="$(gw_api /v1)
        location = /health { sparsegate_api health; }
        location = /metrics { sparsegate_api metrics; deny all; }
        location / { sparsegate_api error; }
$(gw_api /sec/v1 'sparsegate_api_key sk-sec-1234; sparsegate_api_key sk-other-99;')
        location = /sec/metrics { sparsegate_api metrics; sparsegate_api_key sk-sec-1234; }
        location = /sec/health { sparsegate_api health; sparsegate_api_key sk-sec-1234; }
        location /sec/ { sparsegate_api error; sparsegate_api_key sk-sec-1234; }"
gw_conf "$prefix" "$port" "" "" "$locations"
chmod -R a+rX "$gw_dir"
gw_start "$prefix" "$port" || exit 1
trap 'gw_stop' EXIT

get() {   # get PATH [curl args...] -> status, body in $out
    local p=$1; shift
    curl -s -m 30 -o "$out" -w '%{http_code}' "$url$p" "$@"
}
not_metrics() { ! grep -q '^# HELP sparsegate_' "$out"; }

s=$(get /metrics)
gw_check access_metrics_denied "$([ "$s" = 403 ] && not_metrics; echo $?)" "status $s"
s=$(get /v1/metrics)
gw_check access_v1_metrics_not_metrics "$([ "$s" = 404 ] && not_metrics; echo $?)" \
    "status $s: $(head -c 120 "$out")"
s=$(get /v1/anything/metrics)
gw_check access_any_suffix_not_metrics "$([ "$s" = 404 ] && not_metrics; echo $?)" \
    "status $s: $(head -c 120 "$out")"
s=$(get /v1/anything/health)
gw_check access_any_suffix_not_health "$([ "$s" = 404 ] && ! grep -q '"status"' "$out"; echo $?)" \
    "status $s: $(head -c 120 "$out")"
s=$(get /v1/models/../../metrics --path-as-is)
gw_check access_dot_segments_not_metrics "$(not_metrics; echo $?)" "status $s: $(head -c 120 "$out")"

# A keyed location: every endpoint asks for the key.
s=$(get /sec/v1/metrics)
gw_check access_keyed_suffix_needs_key "$([ "$s" = 401 ] && not_metrics; echo $?)" "status $s"
s=$(get /sec/metrics)
gw_check access_keyed_metrics_needs_key "$([ "$s" = 401 ] && not_metrics; echo $?)" "status $s"
s=$(get /sec/metrics -H 'Authorization: Bearer sk-sec-1234')
gw_check access_keyed_metrics_with_key "$([ "$s" = 200 ] && ! not_metrics; echo $?)" "status $s"
s=$(get /sec/health)
gw_check access_keyed_health_needs_key "$([ "$s" = 401 ]; echo $?)" "status $s"
s=$(get /sec/health -H 'Authorization: Bearer sk-sec-1234')
gw_check access_keyed_health_with_key "$([ "$s" = 200 ]; echo $?)" "status $s"
s=$(get /sec/v1/models)
gw_check access_keyed_models_needs_key "$([ "$s" = 401 ]; echo $?)" "status $s"
s=$(get /sec/v1/completions -d '{"prompt":"x","max_tokens":1}')
gw_check access_keyed_post_needs_key "$([ "$s" = 401 ]; echo $?)" "status $s"

# The key whole, and nothing else.
key_status() { get /sec/v1/models -H "Authorization: Bearer $1"; }
for k in prefix:sk-sec-123 longer:sk-sec-12345 same_length:sk-sec-1235 \
         empty: case:sK-sec-1234; do
    s=$(key_status "${k#*:}")
    gw_check "access_key_refused_${k%%:*}" "$([ "$s" = 401 ]; echo $?)" "status $s"
done
s=$(key_status sk-sec-1234)
gw_check access_key_accepted "$([ "$s" = 200 ]; echo $?)" "status $s"
s=$(key_status sk-other-99)
gw_check access_second_key_accepted "$([ "$s" = 200 ]; echo $?)" "status $s"
s=$(get /sec/v1/models -H 'Authorization: Basic c2stc2VjLTEyMzQ=')
gw_check access_not_bearer "$([ "$s" = 401 ]; echo $?)" "status $s"

# A refused POST's body is dropped, not read as the next request of the
# connection: two requests on one keep-alive connection.
codes=$(curl -s -m 30 -o /dev/null -w '%{http_code} ' \
    "$url/sec/v1/completions" -d '{"prompt":"GET /metrics HTTP/1.1"}' \
    --next -s -o /dev/null -w '%{http_code} ' "$url/health")
gw_check access_refused_body_dropped "$([ "$codes" = "401 200 " ]; echo $?)" "statuses $codes"
gw_stop

# Keys for the whole server, and one location opened with "off".
gw_conf "$prefix" "$port" "" "sparsegate_api_key sk-all;" "
        location = /health { sparsegate_api health; sparsegate_api_key off; }
$(gw_api /v1)"
gw_start "$prefix" "$port" || exit 1
s=$(get /v1/models)
gw_check access_server_keys_inherited "$([ "$s" = 401 ]; echo $?)" "status $s"
s=$(get /v1/models -H 'Authorization: Bearer sk-all')
gw_check access_server_key_accepted "$([ "$s" = 200 ]; echo $?)" "status $s"
s=$(get /health)
gw_check access_key_off "$([ "$s" = 200 ]; echo $?)" "status $s"
gw_stop

# nginx -t names the mistake with file:line.
bad_conf() {   # bad_conf NAME LOCATIONS WANT_REGEX
    gw_conf "$gw_dir/bad" "$port" "" "" "$2"
    nginx -t -p "$gw_dir/bad" -c "$gw_dir/bad/conf/nginx.conf" >"$gw_dir/bad.out" 2>&1
    local rc=$?
    gw_check "$1" "$([ $rc -ne 0 ] && grep -Eq "$3" "$gw_dir/bad.out"; echo $?)" "$(cat "$gw_dir/bad.out")"
}
bad_conf conf_api_needs_endpoint "location = /x { sparsegate_api; }" \
    'needs the endpoint.*nginx.conf:[0-9]+'
bad_conf conf_api_unknown_endpoint "location = /x { sparsegate_api chat; }" \
    'unknown endpoint "chat".*nginx.conf:[0-9]+'
bad_conf conf_api_model_needs_prefix "location = /v1/models/x { sparsegate_api model; }" \
    'prefix location.*nginx.conf:[0-9]+'
bad_conf conf_api_key_off_and_keys \
    "location = /x { sparsegate_api health; sparsegate_api_key k; sparsegate_api_key off; }" \
    'sparsegate_api_key.*is duplicate.*nginx.conf:[0-9]+'

# The shipped confs, with this checkout's paths (as tools/demo.sh writes
# conf/sparsegate.conf) and the test model's limits.
mkdir -p "$gw_dir/ship/conf" "$gw_dir/ship/logs" "$gw_dir/ship/tmp"
printf '{"id":"a","title":"a","text":"epoll and eventfd"}\n' >"$gw_dir/ship/c.jsonl"
"$gw_cli" ingest --store "sqlite:$gw_dir/ship/demo.db" --collection man \
    --jsonl "$gw_dir/ship/c.jsonl" --quiet >/dev/null 2>&1
chmod -R a+rwX "$gw_dir/ship"
ship_conf() {   # ship_conf FILE: writes it as $gw_dir/ship/conf/nginx.conf
    {
        gw_user_line
        sed -e "s#load_module .*#load_module $gw_so;#" \
            -e "s#sparsegate_model [^;]*;#sparsegate_model $gw_model_dir;#" \
            -e "s#sparsegate_max_context [0-9]*;#sparsegate_max_context 2048;#" \
            -e "s#sparsegate_kv_cache_size [0-9a-z]*;#sparsegate_kv_cache_size 256m;#" \
            -e "s#sparsegate_backend cuda;#sparsegate_backend cpu;#" \
            -e "s#sqlite:[^;]*;#sqlite:$gw_dir/ship/demo.db;#" \
            -e "s#listen [0-9.:]*8080;#listen 127.0.0.1:$port;#" \
            -e "s#/dev/stderr#$gw_dir/ship/logs/error.log#" \
            -e "s#access_log /dev/stdout#access_log off#" "$1"
    } >"$gw_dir/ship/conf/nginx.conf"
}
for f in conf/sparsegate.conf docker/nginx.conf; do
    ship_conf "$f"
    nginx -t -p "$gw_dir/ship" -c "$gw_dir/ship/conf/nginx.conf" >"$gw_dir/ship.out" 2>&1
    gw_check "conf_shipped_ok_${f//[\/.]/_}" "$?" "$(cat "$gw_dir/ship.out")"
done
ship_conf conf/sparsegate.conf
gw_start "$gw_dir/ship" "$port" || exit 1
codes=""
for p in /v1/models /metrics /v1/metrics /health/metrics /v1/models/demo /v1/models/x; do
    codes="$codes $(get "$p")"
done
gw_check conf_shipped_serves "$([ "$codes" = " 200 200 404 404 200 404" ]; echo $?)" \
    "statuses$codes for /v1/models /metrics /v1/metrics /health/metrics /v1/models/demo /v1/models/x"
gw_stop

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
