#!/usr/bin/env bash
# Retrieval against real servers: starts its own redis-server and
# PostgreSQL on loopback (stopped by pid at exit), then for each store
# (sqlite, postgres, redis) runs ingest (and a re-run: no duplicates),
# search (sync and async), context building with citations, and faults:
# store down at start, ingest killed midway then completed by a re-run,
# a query slower than its timeout, a malformed row (and its repair by
# re-ingest), the server going away and coming back.  Then runs the C
# store tests (tests/unit/test_{pg,redis}_store.c) against the servers.
# Prints PASS/FAIL lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
SG=$root/build/sparsegate
. tests/retrieval/servers.sh

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() {       # check NAME CONDITION-COMMAND... (message from $why)
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name" "${why:-failed}"; fi
}

for tool in redis-server redis-cli psql runuser; do
    command -v $tool >/dev/null || { fail stores_setup "$tool missing (tools/setup.sh)"; exit 1; }
done
[ -x "$SG" ] || { fail stores_setup "build/sparsegate not built"; exit 1; }

tmp=$(mktemp -d /tmp/sg-stores.XXXXXX)
chmod 755 "$tmp"      # the postgres user works in it
# a private copy: a rebuild during the run must not pull it away
cp "$SG" "$tmp/sparsegate" && SG=$tmp/sparsegate
cleanup() {
    sg_servers_stop
    [ -n "${bgpid:-}" ] && kill "$bgpid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
sg_servers_init "$tmp/srv"

# A small corpus with known answers: networking/IPC pages of man7.
SECTIONS=7 tools/make_corpus.sh "$tmp/man7.jsonl" 2>/dev/null
grep -E '"id": "man7/(tcp|udp|ip|ipv6|socket|epoll|signal|pipe|unix|inotify|capabilities|futex|mq_overview|netlink|packet|raw|fifo|eventfd|sem_overview|shm_overview)\.7"' \
    "$tmp/man7.jsonl" >"$tmp/corpus.jsonl"
ndocs=$(wc -l <"$tmp/corpus.jsonl")
[ "$ndocs" -ge 10 ] || { fail stores_corpus "only $ndocs documents"; exit 1; }

sg_redis_start || { fail stores_redis_start "redis-server did not start"; exit 1; }
sg_pg_start || { fail stores_pg_start "postgres did not start"; exit 1; }
sg_psql -v ON_ERROR_STOP=1 -f conf/schema.sql >/dev/null 2>"$tmp/schema.err"
why=$(cat "$tmp/schema.err") check pg_schema_sql_applies test ! -s "$tmp/schema.err"

declare -A URI=(
    [sqlite]="sqlite:$tmp/store.db"
    [postgres]="postgres:$SG_PG"
    [redis]="redis:$SG_REDIS"
)

count() {      # count STORE COLLECTION -> passages in it (direct query)
    case $1 in
        sqlite) sqlite3 "$tmp/store.db" "SELECT count(*) FROM passages WHERE collection = '$2'" ;;
        postgres) sg_psql -c "SELECT count(*) FROM passages WHERE collection = '$2'" ;;
        redis) redis-cli -p "$SG_REDIS_PORT" zcard "sg:coll:$2" ;;
    esac
}

q_tcp="how do I enable keepalive probes on an idle TCP connection"
for s in sqlite postgres redis; do
    u=${URI[$s]}
    # ingest, twice: same ids -> same count
    "$SG" ingest --store "$u" --collection demo --jsonl "$tmp/corpus.jsonl" \
        --quiet 2>"$tmp/ingest.err"
    rc=$?
    n1=$(count $s demo)
    why="rc $rc, $n1 passages: $(tail -n 2 "$tmp/ingest.err")" \
        check ${s}_ingest test "$rc" -eq 0 -a "${n1:-0}" -gt 100
    "$SG" ingest --store "$u" --collection demo --jsonl "$tmp/corpus.jsonl" \
        --quiet 2>/dev/null
    n2=$(count $s demo)
    why="$n1 then $n2 passages" check ${s}_ingest_idempotent test "$n1" = "$n2"

    # search, sync and async: the tcp(7) page answers
    "$SG" search --store "$u" --collection demo --limit 10 --json "$q_tcp" \
        >"$tmp/s.json" 2>"$tmp/s.err"
    why="$(cat "$tmp/s.err")" check ${s}_search grep -q '"doc_id":"man7/tcp.7"' "$tmp/s.json"
    "$SG" search --async --store "$u" --collection demo --limit 10 --json \
        "$q_tcp" >"$tmp/a.json" 2>"$tmp/a.err"
    why="async results differ from sync: $(cat "$tmp/a.err")" \
        check ${s}_async_search_same_as_sync cmp -s "$tmp/s.json" "$tmp/a.json"
    "$SG" search --store "$u" --collection demo --limit 3 --filter '{"section":"7"}' \
        --doc man7/epoll.7 >"$tmp/f.txt" 2>&1
    why="$(head -c 300 "$tmp/f.txt")" check ${s}_filters \
        bash -c "grep -q 'man7/epoll.7:0000' '$tmp/f.txt' && ! grep -q 'man7/tcp.7' '$tmp/f.txt'"

    # context: budget respected, shared prefix, citations
    "$SG" context --store "$u" --collection demo --budget 32768 --json \
        "$q_tcp" >"$tmp/c.json" 2>"$tmp/c.err"
    why="$(head -c 300 "$tmp/c.err") $(head -c 300 "$tmp/c.json")" check ${s}_context python3 -c "
import json, sys
c = json.load(open('$tmp/c.json'))
ok = 30000 < c['prompt_tokens'] <= 32768 and c['prefix_tokens'] > 0.5 * c['prompt_tokens']
ok = ok and any(x['doc_id'] == 'man7/tcp.7' for x in c['citations'])
ok = ok and all('score' in x and 'id' in x for x in c['citations'])
sys.exit(0 if ok else 1)"
done

# Prefix reuse: two questions over one collection share >= 90% of tokens.
"$SG" context --store "${URI[sqlite]}" --collection demo --budget 32768 \
    --ids-out "$tmp/p1.bin" "$q_tcp" >/dev/null 2>&1
"$SG" context --store "${URI[sqlite]}" --collection demo --budget 32768 \
    --ids-out "$tmp/p2.bin" "which signals cannot be caught or ignored" >/dev/null 2>&1
share=$(python3 -c "
import array
a = array.array('i'); a.frombytes(open('$tmp/p1.bin','rb').read())
b = array.array('i'); b.frombytes(open('$tmp/p2.bin','rb').read())
n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print('%.3f' % (n / max(len(a), len(b))))" 2>/dev/null)
why="share $share" check context_prefix_share_90 python3 -c "import sys; sys.exit(0 if float('${share:-0}') >= 0.9 else 1)"

# A folder of .txt/.md files, and a bad JSONL line (named by file:line).
mkdir -p "$tmp/docs/sub"
printf '# Widget manual\n\nThe widget frobnicates the gizmo.\n' >"$tmp/docs/a.md"
printf 'A note about zebras.\n' >"$tmp/docs/sub/b.txt"
printf 'not a document\n' >"$tmp/docs/c.bin"
"$SG" ingest --store "${URI[sqlite]}" --collection folder --dir "$tmp/docs" 2>/dev/null
"$SG" search --store "${URI[sqlite]}" --collection folder --json frobnicates zebras >"$tmp/d.json" 2>/dev/null
why="$(cat "$tmp/d.json")" check ingest_dir bash -c "grep -q '\"title\":\"Widget manual\"' '$tmp/d.json' && grep -q '\"doc_id\":\"sub/b.txt\"' '$tmp/d.json' && [ \$(wc -l <'$tmp/d.json') -eq 2 ]"
printf '{"id":"ok","text":"fine"}\nnot json\n' >"$tmp/bad.jsonl"
"$SG" ingest --store "${URI[sqlite]}" --collection bad --jsonl "$tmp/bad.jsonl" 2>"$tmp/e"
rc=$?
why="rc $rc: $(cat "$tmp/e")" check ingest_bad_line_named test $rc -ne 0 -a -n "$(grep "bad.jsonl:2" "$tmp/e")"

# --- faults -----------------------------------------------------------
# Down at start: clear error naming the store, 502-class kind.
"$SG" search --store "redis:127.0.0.1:1" x >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check redis_down_at_start grep -q "store_unavailable.*502" "$tmp/e"
"$SG" search --async --store "postgres:host=127.0.0.1 port=1 user=sg" x >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check pg_down_at_start grep -q "store_unavailable.*502" "$tmp/e"
"$SG" search --store "sqlite:$tmp/no/such/dir/x.db" x >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check sqlite_unopenable grep -q "no/such/dir/x.db" "$tmp/e"
# A mistyped path is an error naming it, and makes no file.
"$SG" search --store "sqlite:$tmp/stroe.db" x >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check sqlite_missing_not_created \
    bash -c "grep -q 'stroe.db: No such file' '$tmp/e' && [ ! -e '$tmp/stroe.db' ]"
# An empty collection name, or one with a control character: refused,
# naming it, in every store and in ingest.
for s in sqlite postgres redis; do
    "$SG" search --store "${URI[$s]}" --collection "" x >/dev/null 2>"$tmp/e"
    why="$(cat "$tmp/e")" check ${s}_empty_collection_refused \
        grep -q "collection name is empty.*invalid_request.*400" "$tmp/e"
done
"$SG" ingest --store "${URI[sqlite]}" --collection "" --jsonl "$tmp/bad.jsonl" 2>"$tmp/e"
rc=$?
why="rc $rc: $(cat "$tmp/e")" check ingest_empty_collection_refused \
    bash -c "[ $rc -eq 2 ] && grep -q -- '--collection: collection name is empty' '$tmp/e'"
"$SG" ingest --store "${URI[sqlite]}" --collection "$(printf 'a\tb')" --jsonl "$tmp/bad.jsonl" 2>"$tmp/e"
rc=$?
why="rc $rc: $(cat "$tmp/e")" check ingest_control_collection_refused \
    bash -c "[ $rc -eq 2 ] && grep -q -- '--collection: collection name has a control character' '$tmp/e'"
"$SG" migrate --store "${URI[sqlite]}" 2>"$tmp/e"
why="$(cat "$tmp/e")" check sqlite_migrate_current grep -q "sqlite store at schema 2" "$tmp/e"

# Killed midway through an ingest (all of man7, small batches): what was
# committed stays; a re-run completes it with no duplicates (every store
# cuts the same passages, so all end with the same count).  Its ids are
# the demo collection's too: ids are per collection, so demo keeps its
# passages (an ingest into one collection once moved them out of another).
cp "$tmp/man7.jsonl" "$tmp/killed.jsonl"
want=
for s in sqlite postgres redis; do
    u=${URI[$s]}
    "$SG" ingest --store "$u" --collection killed --jsonl "$tmp/killed.jsonl" \
        --batch 10 --quiet 2>/dev/null &
    bgpid=$!
    for _ in $(seq 1 300); do
        n=$(count $s killed 2>/dev/null)
        [ "${n:-0}" -gt 200 ] && break
        sleep 0.02
    done
    kill -9 $bgpid 2>/dev/null
    wait $bgpid 2>/dev/null
    bgpid=
    partial=$(count $s killed)
    "$SG" ingest --store "$u" --collection killed --jsonl "$tmp/killed.jsonl" \
        --quiet 2>/dev/null
    full=$(count $s killed)
    want=${want:-$full}
    why="partial $partial, after re-run $full, want $want" \
        check ${s}_killed_ingest_completes test "${partial:-0}" -gt 0 \
            -a "${partial:-0}" -lt "$full" -a "$full" = "$want"
    n3=$(count $s demo)
    "$SG" search --store "$u" --collection demo --limit 10 --json "$q_tcp" \
        >"$tmp/s2.json" 2>"$tmp/s.err"
    why="demo had $n1 passages, now $n3; search: $(cat "$tmp/s.err")" \
        check ${s}_ids_per_collection bash -c "[ '$n3' = '$n1' ] && grep -q '\"collection\":\"demo\"' '$tmp/s2.json' && ! grep -q '\"collection\":\"killed\"' '$tmp/s2.json'"
done

# Slow store: postgres waits on a lock held by another connection in pg_sleep.
sg_psql -c "BEGIN; LOCK TABLE passages IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;" >/dev/null 2>&1 &
bgpid=$!
sleep 0.5
start=$(date +%s%N)
"$SG" search --async --timeout 400 --store "${URI[postgres]}" "$q_tcp" >/dev/null 2>"$tmp/e"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
why="$ms ms: $(cat "$tmp/e")" check pg_slow_query_timeout bash -c "grep -q 'store_timeout.*504' '$tmp/e' && [ $ms -lt 1500 ]"
wait $bgpid 2>/dev/null
bgpid=
"$SG" search --async --store "${URI[postgres]}" --limit 1 "$q_tcp" >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check pg_answers_after_slow_query test $? -eq 0

# Slow store: redis busy in a 2 s script.
redis-cli -p "$SG_REDIS_PORT" eval "local t = redis.call('TIME') local e = t[1] * 1000000 + t[2] + 2000000 repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= e return 1" 0 >/dev/null 2>&1 &
bgpid=$!
sleep 0.3
start=$(date +%s%N)
"$SG" search --async --timeout 300 --store "${URI[redis]}" "$q_tcp" >/dev/null 2>"$tmp/e"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
why="$ms ms: $(cat "$tmp/e")" check redis_slow_query_timeout bash -c "grep -q 'store_timeout.*504' '$tmp/e' && [ $ms -lt 1500 ]"
wait $bgpid 2>/dev/null
bgpid=

# Malformed rows: a clear 502-class error naming the passage; a re-run of
# the ingest repairs them.
sqlite3 "$tmp/store.db" "UPDATE passages SET meta = 'not json' WHERE collection = 'demo' AND id = 'man7/tcp.7:0000'"
sg_psql -c "UPDATE passages SET meta = '[1]' WHERE collection = 'demo' AND id = 'man7/tcp.7:0000'" >/dev/null
redis-cli -p "$SG_REDIS_PORT" hdel "passage:4:demo:man7/tcp.7:0000" text >/dev/null
for s in sqlite postgres redis; do
    u=${URI[$s]}
    "$SG" search --async --store "$u" --collection demo --doc man7/tcp.7 --limit 5 >/dev/null 2>"$tmp/e"
    why="$(cat "$tmp/e")" check ${s}_malformed_row grep -q "man7/tcp.7:0000.*store_bad_data.*502" "$tmp/e"
    "$SG" ingest --store "$u" --collection demo --jsonl "$tmp/corpus.jsonl" --quiet 2>/dev/null
    "$SG" search --async --store "$u" --collection demo --doc man7/tcp.7 --limit 5 >/dev/null 2>"$tmp/e"
    why="$(cat "$tmp/e")" check ${s}_malformed_row_repaired test $? -eq 0
done

# The server goes away, then comes back.
sg_redis_stop save
"$SG" search --async --store "${URI[redis]}" "$q_tcp" >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check redis_gone_gives_502 grep -q "store_unavailable.*502" "$tmp/e"
sg_redis_start
"$SG" search --async --store "${URI[redis]}" --limit 1 --json "$q_tcp" >"$tmp/o" 2>"$tmp/e"
why="$(cat "$tmp/e")" check redis_back_answers grep -q man7 "$tmp/o"
sg_pg_stop
"$SG" search --async --store "${URI[postgres]}" "$q_tcp" >/dev/null 2>"$tmp/e"
why="$(cat "$tmp/e")" check pg_gone_gives_502 grep -q "store_unavailable.*502" "$tmp/e"
sg_pg_start
"$SG" search --async --store "${URI[postgres]}" --limit 1 --json "$q_tcp" >"$tmp/o" 2>"$tmp/e"
why="$(cat "$tmp/e")" check pg_back_answers grep -q man7 "$tmp/o"

# The C store tests against these servers (async paths, pools, faults).
for t in test_pg_store test_redis_store; do
    bin=$root/build/tests/$t
    [ "${SG_SANITIZED:-}" = 1 ] && [ -x "$root/build-san/tests/$t" ] && bin=$root/build-san/tests/$t
    if [ -x "$bin" ]; then
        SG_TEST_PG="$SG_PG" SG_TEST_REDIS="$SG_REDIS" "$bin" >"$tmp/$t.log" 2>&1
        rc=$?
        grep -E '^(PASS|FAIL) ' "$tmp/$t.log"
        [ $rc -eq 0 ] || grep -q '^FAIL ' "$tmp/$t.log" || fail "$t" "exited with $rc: $(tail -n 3 "$tmp/$t.log")"
    else
        fail "$t" "not built"
    fi
done
