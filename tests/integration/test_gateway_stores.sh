#!/usr/bin/env bash
# /v1/rag through nginx with the networked stores: private PostgreSQL and
# Redis servers on loopback (tests/retrieval/servers.sh), queried from the
# nginx event loop.  For each store: answers with citations, 8 requests at
# once share the worker's connection pool, /health answers while queries
# run, a store that goes away gives a 502 in OpenAI's error shape (not a
# hang), and nginx stops without an open socket left.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-gw-stores
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh
. tests/retrieval/servers.sh

for tool in redis-server redis-cli psql runuser; do
    command -v $tool >/dev/null || { echo "SKIP gateway_stores: $tool missing"; exit 0; }
done
gw_build
gw_model

# PostgreSQL runs as the postgres user: its data lives outside the
# checkout, which may be closed to other users.
srv_dir=$(mktemp -d /tmp/sg-gw-stores.XXXXXX)
chmod 755 "$srv_dir"
sg_servers_init "$srv_dir/srv"
trap 'gw_stop; sg_servers_stop; rm -rf "$srv_dir"' EXIT
sg_redis_start || { echo "FAIL gw_stores_redis_start: redis-server did not start"; exit 1; }
sg_pg_start || { echo "FAIL gw_stores_pg_start: postgres did not start"; exit 1; }
sg_psql -v ON_ERROR_STOP=1 -f conf/schema.sql >/dev/null 2>"$gw_dir/schema.err" \
    || { echo "FAIL gw_stores_schema: $(head -n 3 "$gw_dir/schema.err")"; exit 1; }

gw_corpus "$gw_dir/corpus.jsonl"

declare -A URI=([postgres]="postgres:$SG_PG" [redis]="redis:$SG_REDIS")
url=
rag() {   # rag OUT -> status
    curl -s -m 30 -o "$1" -w '%{http_code}' "$url/v1/rag" \
        -d '{"question":"how does epoll report readiness","collection":"man","max_tokens":2,"temperature":0}'
}
has_epoll() {
    python3 -c "import json,sys; d=json.load(open('$1')); sys.exit(0 if 'epoll' in [c['doc_id'] for c in d['citations']] else 1)" 2>/dev/null
}

for kind in postgres redis; do
    "$gw_cli" ingest --store "${URI[$kind]}" --collection man \
        --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.$kind.log" 2>&1 \
        || { gw_fail "gw_${kind}_ingest" "$(tail -n 3 "$gw_dir/ingest.$kind.log")"; continue; }

    port=$(gw_free_port)
    prefix=$gw_dir/nginx-$kind
    url=http://127.0.0.1:$port
    gw_conf "$prefix" "$port" "sparsegate_store \"${URI[$kind]}\"; sparsegate_store_timeout 3s;"
    chmod -R a+rX "$gw_dir/nginx-$kind"
    gw_start "$prefix" "$port" || { gw_fail "gw_${kind}_start" "nginx did not start"; continue; }

    s=$(rag "$gw_dir/$kind.1")
    gw_check "gw_${kind}_rag" "$([ "$s" = 200 ] && has_epoll "$gw_dir/$kind.1"; echo $?)" \
        "status $s: $(head -c 300 "$gw_dir/$kind.1")"

    pids=()
    for k in $(seq 1 8); do
        rag "$gw_dir/$kind.c$k" >"$gw_dir/$kind.c$k.s" &
        pids+=($!)
    done
    hs=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$url/health")
    wait "${pids[@]}"
    ok=0
    for k in $(seq 1 8); do
        [ "$(cat "$gw_dir/$kind.c$k.s")" = 200 ] && has_epoll "$gw_dir/$kind.c$k" || ok=1
    done
    gw_check "gw_${kind}_rag_concurrent" "$ok" "statuses: $(cat "$gw_dir/$kind".c*.s | tr '\n' ' ')"
    gw_check "gw_${kind}_worker_not_blocked" "$([ "$hs" = 200 ]; echo $?)" "/health during queries: $hs"

    if [ "$kind" = redis ]; then
        # the passages' tokens went into Redis, and a request served from
        # that cache builds the same prompt
        ntok=$(redis-cli -p "$SG_REDIS_PORT" --scan --pattern 'tok:*' | wc -l)
        s=$(rag "$gw_dir/$kind.2")
        same=$(python3 -c "import json; a=json.load(open('$gw_dir/$kind.1')); b=json.load(open('$gw_dir/$kind.2')); print(a['usage']['prompt_tokens'] == b['usage']['prompt_tokens'] and a['choices'][0]['message']['content'] == b['choices'][0]['message']['content'])" 2>/dev/null)
        gw_check gw_redis_token_cache "$([ "$ntok" -ge 4 ] && [ "$s" = 200 ] && [ "$same" = True ]; echo $?)" \
            "$ntok tok:* keys, status $s, same answer: $same"
    fi

    # the store goes away: a prompt 502 with OpenAI's error shape
    if [ "$kind" = redis ]; then sg_redis_stop; else sg_pg_stop; fi
    t0=$SECONDS
    s=$(rag "$gw_dir/$kind.down")
    code=$(python3 -c "import json; print(json.load(open('$gw_dir/$kind.down'))['error']['code'])" 2>/dev/null)
    case "$s/$code" in 502/store_error|504/timeout) down=0 ;; *) down=1 ;; esac
    gw_check "gw_${kind}_down_502" "$down" \
        "status $s after $((SECONDS - t0)) s: $(head -c 300 "$gw_dir/$kind.down")"
    s=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$url/health")
    gw_check "gw_${kind}_down_health" "$([ "$s" = 200 ]; echo $?)" "status $s"

    gw_stop
    gw_check "gw_${kind}_no_open_socket" "$(grep -q 'open socket' "$prefix/logs/error.log" && echo 1 || echo 0)" \
        "$(grep 'open socket' "$prefix/logs/error.log" | head -n 3)"
done

exit "$([ "${gw_failed:-0}" -eq 0 ] && echo 0 || echo 1)"
