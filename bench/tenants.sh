#!/usr/bin/env bash
# The cost of the prefix cache's isolation per tenant: K tenants ask
# questions after the same shared documents (one long prompt prefix),
# round-robin, R rounds, one request at a time, against a fresh gateway
# (one worker, the tiny test model) for each of two setups:
#   isolated  each tenant its own API key: the cache's namespace is the
#             key's digest, so each tenant prefills the documents once
#   shared    every tenant the same key: one namespace, the documents
#             prefilled once for all
# Per setup: the prefix cache's hit rate (cached / prompt tokens), TTFT
# (client side, streamed: the request sent to its first token; the
# first request of a tenant and the others apart), the KV blocks held
# after the run (in use, and by the prefix cache alone).  Writes its
# section of bench/RESULTS.md.
#
#   bench/tenants.sh [K...] [ROUNDS]      ("8 32" and 4: each K in turn)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ks=${1:-8 32}
rounds=${2:-4}
gw_dir=$root/build/bench-tenants
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

gw_build
gw_model
load=$(cut -d' ' -f1-3 /proc/loadavg)
trap 'gw_stop' EXIT
: >"$gw_dir/rows"
for k in $ks; do
keys=
for i in $(seq 1 "$k"); do keys="$keys sparsegate_api_key sk-tenant-$i;"; done
for mode in isolated shared; do
    port=$(gw_free_port)
    prefix=$gw_dir/nginx-$mode
    gw_conf "$prefix" "$port" "" "" "$(gw_api /v1 "$keys")
        location = /metrics { sparsegate_api metrics; }
        location = /health { sparsegate_api health; }"
    chmod -R a+rX "$prefix"
    gw_start "$prefix" "$port" || exit 1
    python3 - "$port" "$mode" "$k" "$rounds" >>"$gw_dir/rows" <<'PY'
import http.client, json, sys, time
port, mode, k, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# the shared documents: about 700 tokens, the same for every tenant
docs = " ".join("Section %d of the operations manual: the gateway's workers "
                "run an event loop, never block, and hand long work to a "
                "thread pool." % i for i in range(24))

def ask(key, q):
    body = {"prompt": "Documents:\n%s\n\nQuestion: %s\nAnswer:" % (docs, q),
            "max_tokens": 2, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body),
              {"Content-Type": "application/json",
               "Authorization": "Bearer " + key})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    ttft, usage = None, None
    while True:
        line = r.readline()
        if not line or line.strip() == b"data: [DONE]":
            break
        if not line.startswith(b"data: {"):
            continue
        ev = json.loads(line[6:])
        if ttft is None and ev.get("choices") and ev["choices"][0].get("text"):
            ttft = time.perf_counter() - t0
        if ev.get("usage"):
            usage = ev["usage"]
    c.close()
    return ttft, usage["prompt_tokens"], \
        (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)

def metrics():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    m = {}
    for l in c.getresponse().read().decode().splitlines():
        p = l.split()
        if len(p) == 2 and not l.startswith("#"):
            m[p[0]] = float(p[1])
    return m

first, later, prompt, cached = [], [], 0, 0
for r in range(rounds):
    for t in range(k):
        key = "sk-tenant-%d" % (t + 1 if mode == "isolated" else 1)
        ttft, p, c = ask(key, "what does tenant %d need in round %d?" % (t, r))
        (first if r == 0 else later).append(ttft)
        prompt += p
        cached += c
m = metrics()
med = lambda v: sorted(v)[len(v) // 2] * 1000
allt = first + later
print("| %s | %d | %d | %d | %d | %.1f%% | %.0f | %.0f | %.0f | %d | %d |" % (
    mode, k, rounds, prompt, prompt - cached, 100.0 * cached / prompt,
    med(first), med(later), 1000 * sum(allt) / len(allt),
    m["sparsegate_kv_blocks_used"], m["sparsegate_kv_blocks_cached"]))
PY
    gw_stop
done
done

body=$gw_dir/section.md
{
    echo "K tenants ask after the same shared documents (a prompt prefix of about"
    echo "700 tokens, then a question of their own), round-robin for R rounds, one"
    echo "request at a time, each setup on a fresh gateway (one worker, the tiny test"
    echo "model, \`/v1/completions\` streamed, 2 tokens).  *isolated*: each tenant its"
    echo "own API key, so the prefix cache's namespace is its key's digest (the"
    echo "default: one key cannot confirm another's prompts by \`cached_tokens\`);"
    echo "*shared*: every tenant the same key, one namespace.  TTFT is the client's"
    echo "time from sending to the first token (median); round 1 is each tenant's"
    echo "first request.  KV blocks after the run: in use (by the prefix cache alone"
    echo "in the last column: nothing else runs then).  Load average before: $load."
    echo "Command: \`bash bench/tenants.sh \"$ks\" $rounds\`."
    echo
    echo "| setup | K | rounds | prompt tokens | prefilled | hit rate | TTFT round 1 median ms | TTFT later median ms | TTFT mean ms | KV blocks used | KV blocks cached |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    cat "$gw_dir/rows"
    echo
    echo "Isolation costs one prefill of the shared documents per tenant (K-1 more"
    echo "than one shared namespace) and K copies of their blocks in the cache; every"
    echo "later request of a tenant hits its own copy the same way."
} >"$body"
bash bench/section.sh tenants "$body"
cat "$body"
