#!/usr/bin/env bash
# Several gateways behind one nginx, and a gateway over a device group:
#   - two gateways (one on sparsegate_devices 0-1: two host ranks, one on
#     a single device) give the same greedy completion for the same request;
#   - a proxying nginx with `hash $sparsegate_prefix_key consistent` sends
#     every question about one document to one gateway, and the prefix
#     cache hit rate (usage.prompt_tokens_details.cached_tokens over the
#     prompt tokens) beats round robin on the same workload, both measured
#     from cold caches;
#   - nginx -t refuses what cannot fit or is malformed, naming the numbers:
#     a device smaller than the weights, host memory too small, a bad
#     device list, more ranks than experts, sparsegate_devices without a
#     model.
# Prints PASS/FAIL lines; SKIP when nginx or the engine is not built.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
gw_dir=$root/build/test-upstream
rm -rf "$gw_dir"
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_build
gw_model

pa=$(gw_free_port)
pb=$(gw_free_port)
pp=$(gw_free_port)
while [ "$pb" = "$pa" ]; do pb=$(gw_free_port); done
while [ "$pp" = "$pa" ] || [ "$pp" = "$pb" ]; do pp=$(gw_free_port); done

pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do
        gw_pid=$p
        gw_stop
    done
    pids=()
}
trap stop_all EXIT

start_gateways() {
    gw_conf "$gw_dir/a" "$pa" "sparsegate_devices 0-1;"
    gw_conf "$gw_dir/b" "$pb" ""
    gw_start "$gw_dir/a" "$pa" || exit 1
    pids+=("$gw_pid")
    gw_start "$gw_dir/b" "$pb" || exit 1
    pids+=("$gw_pid")
}

# --------------------------------------------------------- nginx -t checks
t_conf() {      # t_conf NAME EXPECT EXTRA_HTTP [MODEL_LINE]
    local name=$1 expect=$2 extra=$3 dir=$gw_dir/t-$1
    gw_conf "$dir" "$(gw_free_port)" "$extra"
    if [ "${4:-}" = nomodel ]; then
        sed -i '/sparsegate_model /d; /sparsegate_model_name/d' \
            "$dir/conf/nginx.conf"
    fi
    local out
    out=$(nginx -t -p "$dir" -c "$dir/conf/nginx.conf" 2>&1)
    if [ $? -ne 0 ] && printf '%s' "$out" | grep -q -- "$expect"; then
        gw_pass "nginx_t_$name"
    else
        gw_fail "nginx_t_$name" "want a refusal with '$expect', got: $out"
    fi
}
t_conf cuda_device_too_small "needs .* GB on each of 2 device(s)" \
    "sparsegate_backend cuda; sparsegate_devices 0-1; sparsegate_device_memory 1m;"
t_conf host_memory_too_small "GB of host memory" \
    "sparsegate_devices 0-1; sparsegate_device_memory 1m;"
t_conf bad_device_list 'device list "3-1"' "sparsegate_devices 3-1;"
t_conf too_many_ranks "16 routed experts" "sparsegate_devices 0-40;"
t_conf devices_without_model "sparsegate_devices without sparsegate_model" \
    "sparsegate_devices 0-1;" nomodel
ok_out=$(gw_conf "$gw_dir/t-ok" "$(gw_free_port)" \
             "sparsegate_devices 0-1; sparsegate_device_memory 4g;" \
         && nginx -t -p "$gw_dir/t-ok" -c "$gw_dir/t-ok/conf/nginx.conf" 2>&1)
gw_check nginx_t_fits $? "$ok_out"

# ------------------------------------------------- the gateways, the proxy
start_gateways

cat >"$gw_dir/proxy.conf" <<EOF
$(gw_user_line)
load_module $gw_so;
worker_processes 1;
pid $gw_dir/proxy/logs/nginx.pid;
error_log $gw_dir/proxy/logs/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $gw_dir/proxy/tmp/body;
    proxy_temp_path $gw_dir/proxy/tmp/proxy;
    fastcgi_temp_path $gw_dir/proxy/tmp/fastcgi;
    uwsgi_temp_path $gw_dir/proxy/tmp/uwsgi;
    scgi_temp_path $gw_dir/proxy/tmp/scgi;
    client_body_buffer_size 1m;
    client_max_body_size 8m;

    upstream by_prefix {
        hash \$sparsegate_prefix_key consistent;
        server 127.0.0.1:$pa;
        server 127.0.0.1:$pb;
    }
    upstream round_robin {
        server 127.0.0.1:$pa;
        server 127.0.0.1:$pb;
    }
    server {
        listen 127.0.0.1:$pp;
        add_header X-Upstream \$upstream_addr always;
        add_header X-Prefix-Key \$sparsegate_prefix_key always;
        location /hash/ { proxy_pass http://by_prefix/; }
        location /rr/   { proxy_pass http://round_robin/; }
        location = /health { return 200 "ok\n"; }
    }
}
EOF
mkdir -p "$gw_dir/proxy/logs" "$gw_dir/proxy/tmp"
chmod 777 "$gw_dir/proxy/tmp"
nginx -p "$gw_dir/proxy" -c "$gw_dir/proxy.conf" -g "daemon off;" \
    >"$gw_dir/proxy/logs/stderr.log" 2>&1 &
pids+=("$!")
for i in $(seq 1 100); do
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$pp/health" && break
    sleep 0.1
done

# -------------------------------------- a device group = one device, greedy
same_out=$(python3 - "$pa" "$pb" <<'PY'
import json, sys, urllib.request
def ask(port):
    body = {"model": "gw-tiny", "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user",
                          "content": "The epoll API and eventfd on Linux: " * 20}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        # random weights: the text may be any bytes; compare them as sent
        raw = r.read()
        return raw[raw.index(b'"content"'):raw.index(b'"finish_reason"')]
a, b = ask(sys.argv[1]), ask(sys.argv[2])
print("same" if a == b and a else f"differ: {a!r} vs {b!r}")
PY
)
gw_check group_gateway_same_as_single "$([ "$same_out" = same ]; echo $?)" \
    "$same_out"

# ----------------------------------------------------- hash vs round robin
# 5 documents of ~5 KB (a long system message: its own key), 4 questions
# each, question after question (an odd number of documents, so that round
# robin does not happen to keep a document on one gateway); each route
# from cold caches.
workload() {    # workload ROUTE -> "hit_rate docs_on_one_upstream upstreams keys"
    python3 - "$pp" "$1" <<'PY'
import json, random, sys, urllib.request
port, route = sys.argv[1], sys.argv[2]
random.seed(7)
words = ("kernel socket buffer thread queue epoll event page cache worker "
         "proxy header stream token block prefix vector index shard").split()
docs = [" ".join(random.choice(words) for _ in range(800)) for _ in range(5)]
order = [(d, q) for q in range(4) for d in range(5)]
prompt = cached = 0
where, keys = {}, {}
for d, q in order:
    body = {"model": "gw-tiny", "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "system", "content": f"Document {d}: " + docs[d]},
                         {"role": "user", "content": f"Question {q} about it?"}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{route}/v1/chat/completions",
                                 json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        up = r.headers.get("X-Upstream")
        keys.setdefault(d, set()).add(r.headers.get("X-Prefix-Key"))
        u = json.loads(r.read().decode("utf-8", "replace"))["usage"]
    prompt += u["prompt_tokens"]
    cached += u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    where.setdefault(d, set()).add(up)
one = sum(1 for s in where.values() if len(s) == 1)
ups = len(set().union(*where.values()))
# one key per document, a different one for each
nkeys = len(set().union(*keys.values())) if all(len(k) == 1 for k in keys.values()) else 0
print(f"{cached / prompt:.3f} {one} {ups} {nkeys}")
PY
}
read -r hash_rate hash_one hash_ups hash_keys < <(workload hash)
stop_all
start_gateways
# the proxy went down with stop_all: start it again
nginx -p "$gw_dir/proxy" -c "$gw_dir/proxy.conf" -g "daemon off;" \
    >>"$gw_dir/proxy/logs/stderr.log" 2>&1 &
pids+=("$!")
for i in $(seq 1 100); do
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$pp/health" && break
    sleep 0.1
done
read -r rr_rate rr_one rr_ups rr_keys < <(workload rr)
echo "# prefix-cache hit rate: hash \$sparsegate_prefix_key $hash_rate" \
     "($hash_one of 5 documents on one gateway, $hash_ups gateways used);" \
     "round robin $rr_rate ($rr_one of 5 on one gateway)"
# (which gateway a key lands on depends on the ports, picked at random:
# that both are used is likely, not certain, and not checked)
gw_check prefix_key_one_per_document "$([ "${hash_keys:-0}" = 5 ]; echo $?)" \
    "$hash_keys distinct keys for 5 documents (0: a document got several)"
gw_check hash_keeps_documents_together "$([ "${hash_one:-0}" = 5 ]; echo $?)" \
    "$hash_one of 5 documents on one gateway"
gw_check hash_beats_round_robin \
    "$(python3 -c "import sys; sys.exit(0 if float('${hash_rate:-0}') > float('${rr_rate:-1}') + 0.15 else 1)"; echo $?)" \
    "hit rate with the hash $hash_rate, round robin $rr_rate"

exit $((${gw_failed:-0} > 0))
