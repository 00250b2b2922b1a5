#!/usr/bin/env bash
# Gateway overhead, one run, three rows side by side:
#   1. POST /v1/completions (max_tokens 1, greedy) through nginx + module
#   2. the same engine and request called directly (build/bench/gateway_direct)
#   3. a plain nginx `return 200` location in the same server (the floor)
# wrk drives 1 and 3 with the same connections; 2 keeps as many requests in
# flight.  Writes its section of bench/RESULTS.md.
#
#   bench/gateway.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-10}
conns=${2:-8}
gw_dir=$root/build/bench-gw
mkdir -p "$gw_dir"
. tests/integration/gateway_lib.sh

command -v wrk >/dev/null || { echo "wrk is not installed (tools/setup.sh)"; exit 1; }
gw_build
gw_model
make -s build/bench/gateway_direct

ids="15 200 3000 77 4242 9 31 64"
port=$(gw_free_port)
prefix=$gw_dir/nginx
url=http://127.0.0.1:$port
gw_conf "$prefix" "$port" ""
chmod -R a+rX "$gw_dir"
gw_start "$prefix" "$port"
trap 'gw_stop' EXIT

cat >"$gw_dir/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":[${ids// /,}],"max_tokens":1,"temperature":0,"ignore_eos":true}'
EOF

# wrk_row URL [script] -> "rps p50_ms p99_ms requests"
wrk_row() {
    local out
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency ${2:+-s "$2"} "$1")
    echo "$out" >>"$gw_dir/wrk.log"
    echo "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", t).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", t).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if bad:
    sys.exit("wrk: %s responses were not 2xx" % bad.group(1))
print("%.1f %.2f %.2f %d" % (rps, p50, p99, n))
'
}

: >"$gw_dir/wrk.log"
curl -sf -o /dev/null "$url/v1/completions" -d @- <<<"{\"prompt\":[${ids// /,}],\"max_tokens\":1}"
row_gw=$(wrk_row "$url/v1/completions" "$gw_dir/post.lua")
row_plain=$(wrk_row "$url/plain")
gw_stop
row_direct=$("$root/build/bench/gateway_direct" "$gw_model_dir" "$secs" "$conns" 1 $ids)

cpu=$(lscpu | sed -n 's/^Model name:\s*//p' | head -n 1)
section=$(cat <<EOF
<!-- gateway:begin -->
## Gateway overhead (bench/gateway.sh)

$(date -u +%Y-%m-%d), $(nproc) CPU cores ($cpu), nginx $(nginx -v 2>&1 | sed 's#.*/##'),
one worker, engine on 1 CPU thread, tiny random model (3 layers, hidden 256,
DeepSeek vocabulary), prompt of 8 token ids, max_tokens 1, greedy,
$conns connections / requests in flight, ${secs} s per row, one run.

| path | requests/s | p50 ms | p99 ms | requests |
|---|---:|---:|---:|---:|
| nginx + module: POST /v1/completions | $(echo "$row_gw" | awk '{print $1" | "$2" | "$3" | "$4}') |
| engine called directly (gateway_direct) | $(echo "$row_direct" | awk '{print $1" | "$2" | "$3" | "$4}') |
| plain nginx \`return 200\` (floor) | $(echo "$row_plain" | awk '{print $1" | "$2" | "$3" | "$4}') |

The engine's prefill + one decode step (tens of ms on this CPU) dominates
the first two rows; what the gateway adds (HTTP, JSON parsing and
building, the eventfd bridge) costs about what the floor row shows, well
below a millisecond, which is less than the run-to-run noise of a shared
2-core machine: the two rows can come out in either order.
<!-- gateway:end -->
EOF
)
printf '%s\n' "$section"

results=bench/RESULTS.md
[ -f "$results" ] || printf '# Benchmark results\n' >"$results"
SECTION=$section python3 - "$results" <<'PY'
import os, sys
path, section = sys.argv[1], os.environ["SECTION"]
text = open(path).read()
b, e = "<!-- gateway:begin -->", "<!-- gateway:end -->"
if b in text and e in text:
    text = text[:text.index(b)] + section + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
echo "wrote $results"
