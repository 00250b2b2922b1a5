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
    if [ -n "${SG_BENCH_BASELINE:-}" ]; then
        # linear rows of another build (e.g. the previous commit's
        # bench_ops), alternating with this one's, per CPU-second
        ab=$(mktemp)
        for r in 1 2 3; do
            for v in baseline this; do
                bin=build/bench/bench_ops
                [ $v = baseline ] && bin=$SG_BENCH_BASELINE
                "$bin" 2 "${SG_BENCH_SECONDS:-0.5}" linear \
                    | grep 'GEMM\|peak FMA' \
                    | awk -F'|' -v v=$v '{ split($5, a, " "); gsub(/^ +| +$/, "", $2);
                        printf "%s|%s|%.1f\n", v, $2, a[1] / ($7 * 2) }' >>"$ab"
            done
        done
        echo
        echo "Against the baseline build ${SG_BENCH_BASELINE_LABEL:-$SG_BENCH_BASELINE}, alternating"
        echo "three times: GFLOP per CPU-second (rate / (cores x threads)), so the share"
        echo "of the machine each run got cancels out; mean (min-max) of the three:"
        echo
        echo "| kernel | baseline | this build | ratio |"
        echo "|---|---:|---:|---:|"
        awk -F'|' '{ k = $2; n[$1, k]++; s[$1, k] += $3;
                     if (!(($1, k) in lo) || $3 < lo[$1, k]) lo[$1, k] = $3;
                     if ($3 > hi[$1, k]) hi[$1, k] = $3;
                     if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
            END { for (i = 1; i <= m; i++) { k = order[i];
                    b = s["baseline", k] / n["baseline", k]; t = s["this", k] / n["this", k];
                    printf "| %s | %.1f (%.1f-%.1f) | %.1f (%.1f-%.1f) | %.2fx |\n", k,
                           b, lo["baseline", k], hi["baseline", k],
                           t, lo["this", k], hi["this", k], t / b } }' "$ab"
        rm -f "$ab"
    fi
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
none of these rates comes from reordering sums across a batch: the GEMM
rows run the GEMV's order (lane l of an output sums columns l, l + lanes,
... in order, then one fixed horizontal sum), with 6 weight x 4 input rows
per register block at 16 lanes (3 x 4 at 8), and give its bits. The
"serial / split" rows are decode projections below CPU_PAR_WORK (2M
multiply-adds), alternating between the default backend (calling thread
only) and one that splits every loop (SG_CPU_PAR_WORK=0); their weights
(0.5-2 MB) sit in cache, hence rates above the DRAM read ceiling.
TXT
    echo
    echo "Command: \`bash bench/kernels.sh\`${SG_BENCH_BASELINE:+ with SG_BENCH_BASELINE=$SG_BENCH_BASELINE (${SG_BENCH_BASELINE_LABEL:-})}"
} | tee "$out"
bash bench/section.sh kernels "$out"
rm -f "$out"
