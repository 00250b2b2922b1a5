# Starts private redis-server and PostgreSQL instances on loopback for the
# retrieval tests and benchmark (sourced by tests/integration/
# test_stores.sh and bench/retrieval.sh).  Everything lives in $SG_SRV_DIR;
# servers are stopped by their own pids (sg_servers_stop, from a trap).
#
#   sg_servers_init DIR      pick ports, make DIR
#   sg_redis_start           -> $SG_REDIS (HOST:PORT), pid in $SG_REDIS_PID
#   sg_redis_stop [save]     (save: SHUTDOWN SAVE, so a restart keeps data)
#   sg_pg_start              -> $SG_PG (conninfo), database "sg"
#   sg_pg_stop
#   sg_servers_stop

SG_PGBIN=${SG_PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

sg_free_port() {
    local p
    for _ in $(seq 1 50); do
        # below Linux's ephemeral range (32768-60999): a port there can
        # be taken by any outgoing connection between the check and the
        # server's bind
        p=$((12000 + RANDOM % 20000))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
            echo $p
            return 0
        fi
    done
    return 1
}

sg_servers_init() {
    SG_SRV_DIR=$1
    mkdir -p "$SG_SRV_DIR"
    chmod 755 "$SG_SRV_DIR"
    SG_REDIS_PORT=$(sg_free_port)
    SG_PG_PORT=$(sg_free_port)
    SG_REDIS=127.0.0.1:$SG_REDIS_PORT
    SG_PG="host=127.0.0.1 port=$SG_PG_PORT user=sg dbname=sg connect_timeout=5"
    SG_REDIS_PID=
    SG_PG_UP=
}

sg_redis_start() {
    mkdir -p "$SG_SRV_DIR/redis"
    redis-server --port "$SG_REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --dir "$SG_SRV_DIR/redis" \
        --logfile "$SG_SRV_DIR/redis/log" &
    SG_REDIS_PID=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$SG_REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "redis did not start: $(tail -n 3 "$SG_SRV_DIR/redis/log")" >&2
    return 1
}

sg_redis_stop() {
    [ -n "$SG_REDIS_PID" ] || return 0
    if [ "${1:-}" = save ]; then
        redis-cli -p "$SG_REDIS_PORT" shutdown save >/dev/null 2>&1 || true
    else
        kill "$SG_REDIS_PID" 2>/dev/null || true
    fi
    for _ in $(seq 1 100); do
        kill -0 "$SG_REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    # (a server already gone makes kill fail: fine)
    kill -9 "$SG_REDIS_PID" 2>/dev/null || true
    wait "$SG_REDIS_PID" 2>/dev/null || true
    SG_REDIS_PID=
}

sg_pg_ctl() {
    runuser -u postgres -- "$SG_PGBIN/pg_ctl" -D "$SG_SRV_DIR/pg/data" "$@"
}

sg_pg_start() {
    if [ ! -d "$SG_SRV_DIR/pg/data" ]; then
        mkdir -p "$SG_SRV_DIR/pg"
        chown postgres "$SG_SRV_DIR/pg"
        runuser -u postgres -- "$SG_PGBIN/initdb" -D "$SG_SRV_DIR/pg/data" \
            -A trust -U sg -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null \
            || return 1
    fi
    # a port taken meanwhile by another process: try another
    for try in 1 2 3; do
        : >"$SG_SRV_DIR/pg/log"
        chown postgres "$SG_SRV_DIR/pg/log"
        sg_pg_ctl -l "$SG_SRV_DIR/pg/log" -w -t 30 \
            -o "-p $SG_PG_PORT -k $SG_SRV_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" \
            start >/dev/null && break
        tail -n 5 "$SG_SRV_DIR/pg/log" >&2
        grep -q "already in use" "$SG_SRV_DIR/pg/log" && [ "$try" -lt 3 ] \
            || return 1
        SG_PG_PORT=$(sg_free_port)
        SG_PG="host=127.0.0.1 port=$SG_PG_PORT user=sg dbname=sg connect_timeout=5"
    done
    SG_PG_UP=1
    psql -qAt -h 127.0.0.1 -p "$SG_PG_PORT" -U sg -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'sg'" | grep -q 1 \
        || psql -q -h 127.0.0.1 -p "$SG_PG_PORT" -U sg -d postgres \
               -c "CREATE DATABASE sg" >/dev/null
}

sg_pg_stop() {
    [ -n "$SG_PG_UP" ] || return 0
    sg_pg_ctl -m fast -w -t 30 stop >/dev/null 2>&1 || true
    SG_PG_UP=
}

sg_psql() {
    psql -qAt -h 127.0.0.1 -p "$SG_PG_PORT" -U sg -d sg "$@"
}

# Safe under set -e (callers' EXIT traps): every step runs.
sg_servers_stop() {
    sg_redis_stop || true
    sg_pg_stop || true
    # pg_ctl stop waits; if it failed, stop the postmaster by its pid
    if [ -f "$SG_SRV_DIR/pg/data/postmaster.pid" ]; then
        kill -QUIT "$(head -n 1 "$SG_SRV_DIR/pg/data/postmaster.pid")" \
            2>/dev/null || true
    fi
    return 0
}
