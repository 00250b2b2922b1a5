#!/usr/bin/env bash
# The soak, long: tests/integration/test_gateway_soak.sh with bigger
# numbers (the same driver, soak_client.py): STREAMS concurrent streams
# for three phases of SECONDS each (two clean, one with a worker SIGKILLed
# mid-stream and a reload), a quarter of the clients leaving mid-stream.
# Writes its section of bench/RESULTS.md: the streams, the workers' fds
# and VmRSS before and after, the checks.
#
#   bench/soak.sh [SECONDS] [STREAMS]      (120 and 64)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-120}
streams=${2:-64}
dir=$root/build/bench-soak
mkdir -p "$dir"
load=$(cut -d' ' -f1-3 /proc/loadavg)
SOAK_DIR=$dir/run SOAK_SECONDS=$secs SOAK_STREAMS=$streams SOAK_OUT=$dir/soak.json \
    bash tests/integration/test_gateway_soak.sh | tee "$dir/out.txt"
rc=${PIPESTATUS[0]}
[ -f "$dir/soak.json" ] || { echo "bench/soak.sh: the driver wrote no numbers"; exit 1; }

body=$dir/section.md
python3 - "$dir/soak.json" "$dir/out.txt" "$secs" "$streams" "$load" >"$body" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
out = open(sys.argv[2]).read().splitlines()
secs, streams, load = sys.argv[3:6]
print("%s concurrent streams (chat, completions, /v1/rag over SQLite; 8-47 "
      "tokens each, streamed) against nginx with %d workers and the micro "
      "test model, three phases of %s s; %d%% of the clients leave "
      "mid-stream at a random event (or before the first byte). Phase 3: "
      "one worker SIGKILLed at 30%% of it, `nginx -s reload` at 60%%. "
      "Measured after each phase once idle (`bash bench/soak.sh %s %s`, "
      "`nice -n 10`, load average before %s)."
      % (streams, d["workers"], secs, d["leave"] * 100, secs, streams, load))
print()
print("| phase | done | left by the client | cut by the kill | refused | "
      "error events | settle s | fds per worker | VmRSS MB per worker |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|")
mb = lambda w: " / ".join("%d" % (v["rss_kb"] // 1024) for v in w.values())
fd = lambda w: " / ".join("%d" % v["fds"] for v in w.values())
print("| warm (before) | | | | | | | %s | %s |" % (fd(d["before"]),
                                                  mb(d["before"])))
for i, p in enumerate(d["phases"] + [d["chaos"]]):
    s = p["streams"]
    print("| %s | %d | %d | %d | %d | %d | %s | %s | %s |" % (
        i + 1 if i < 2 else "3 (kill + reload)", s.get("done", 0),
        s.get("left", 0), s.get("cut", 0), s.get("refused", 0),
        s.get("error_event", 0), p["settle_s"], fd(p["workers"]),
        mb(p["workers"])))
print()
print("VmRSS growth over phase 2 (steady state): %s MB; since the warm-up: "
      "%s MB; the new workers after the reload vs the first ones warm: "
      "%+d MB (they are forked from the master after the reload: its VmRSS "
      "went from %d to %d MB, the configuration read again, and a child "
      "counts the pages it shares with it). The store's pool opens its 4 SQLite connections as queries "
      "first need them (the fds' only growth: the file and its -wal each). "
      "Phase 3's workers are new (the killed one respawned, then both "
      "replaced by the reload)." % (
          ", ".join(map(str, d["rss_growth_phase2_mb"].values())),
          ", ".join(map(str, d["rss_growth_total_mb"].values())),
          d["rss_new_vs_warm_mb"], d["master_rss_kb_before"] // 1024,
          d["master_rss_kb_after"] // 1024))
print()
checks = [l for l in out if l.startswith(("PASS", "FAIL"))]
print("Checks: %d PASS, %d FAIL%s." % (
    sum(l.startswith("PASS") for l in checks),
    sum(l.startswith("FAIL") for l in checks),
    "".join("; `%s`" % l[:200] for l in checks if l.startswith("FAIL"))))
PY
bash bench/section.sh soak "$body"
cat "$body"
exit "$rc"
