#!/usr/bin/env bash
# The CPU backend's hot kernels against this machine's ceilings measured in
# the same run (bench/bench_ops.c: peak-FMA and memory loops, then GEMV and
# GEMM over BF16/FP8 weights, flash prefill attention, indexer scores,
# top-k and absorbed attention).  Writes the "kernels" section of
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/bench/bench_ops
out=$(mktemp)
{
    echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    build/bench/bench_ops 2 "${SG_BENCH_SECONDS:-0.5}"
    echo
    cat <<'TXT'
Rates are wall-clock; "cores" is the CPU time the process got per second
over its threads, so a row below 1.00 ran on part of the machine (other
jobs), and so did its ceiling row when the "cores" match. GEMV rows are
bound by memory (weights streamed once); lm_head at the small model's
shape is 132 MB per call; a 29 MB weight read again and again (2048x7168)
is served partly from this CPU's large last-level cache, above the DRAM
ceiling. GEMM, flash and absorbed attention rows are
compute-bound: their ceiling is the FMA peak of the vector width the
kernel uses. The summation order of every kernel is fixed per output, so
none of these rates comes from reordering sums across a batch.
TXT
    echo
    echo "Command: \`bash bench/kernels.sh\`"
} | tee "$out"
bash bench/section.sh kernels "$out"
rm -f "$out"
