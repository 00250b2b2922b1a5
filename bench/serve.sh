#!/usr/bin/env bash
# Serving benchmark (engine/scheduler/prefix cache through sparsegate.h) on
# the small demo model: TTFT of a 16K-token prompt cold vs with a cached
# 15K-token prefix, decode tokens/s with 1/4/16 sequences, the hit rate of
# a replayed RAG workload, TTFT again with IndexCache (index_share 2) and
# its effect on outputs.
# Writes the "serve" section of bench/RESULTS.md.
# SG_SERVE_ARGS adds options (e.g. "--prompt 4096 --prefix 3840" for a
# quick run).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j"$(nproc)" build/sparsegate build/bench/bench_serve
work=${SG_BENCH_DIR:-/tmp/sg-bench}
mkdir -p "$work"
if [ ! -f "$work/small/config.json" ]; then
    build/sparsegate mkmodel --preset small --out "$work/small" >/dev/null
fi
out=$(mktemp)
# shellcheck disable=SC2086
build/bench/bench_serve "$work/small" ${SG_SERVE_ARGS:-} >"$out"
echo >>"$out"
echo "Command: \`build/bench/bench_serve $work/small ${SG_SERVE_ARGS:-}\`" >>"$out"
echo >>"$out"
build/bench/bench_serve "$work/small" \
    --index-cache "${SG_INDEXCACHE_TOKENS:-4096}" >>"$out"
cat "$out"
bash bench/section.sh serve "$out"
rm -f "$out"
