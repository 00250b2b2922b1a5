#!/usr/bin/env bash
# The device group on host ranks (bench/bench_multi.c): the MoE exchange's
# own cost, the same work on 1-4 ranks, and the engine's tokens/s on one
# rank and on two.  Writes the "multi" section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/sparsegate build/bench/bench_multi
work=${SG_BENCH_DIR:-/tmp/sg-bench}
mkdir -p "$work"
[ -f "$work/small/config.json" ] \
    || build/sparsegate mkmodel --preset small --out "$work/small" >/dev/null
out=$(mktemp)
{
    echo "\`mkmodel --preset small\`: 4 layers (3 MoE, 16 routed experts, 4 per token),"
    echo "hidden 512, vocab 129280; host ranks = threads of one process, the host"
    echo "collective.  Command: \`build/bench/bench_multi $work/small ${SG_BENCH_MULTI_ARGS:-}\`."
    echo
    # shellcheck disable=SC2086
    nice -n 10 build/bench/bench_multi "$work/small" ${SG_BENCH_MULTI_ARGS:-}
    cat <<'TXT'

What this machine can and cannot show.  It has two cores, shared with other
jobs (see the load above): a run of two ranks has the same two cores as a
run of one, so the ratios measure the group's overhead, never a speed-up.
Prefill (compute-bound, many rows per weight read) costs the same CPU on
1-4 ranks (last column): the exchange itself is cheap next to the experts.
A decode-like step costs more CPU on several ranks: every rank reads the
replicated weights (attention, shared expert, the 129280 x 512 head) for its
own few rows, where one rank reads them once for all rows; on one socket
that is the same memory read again.  On GPUs each rank reads its own HBM,
and on a multi-socket server each NUMA rank its own node's memory: there
the same split adds bandwidth instead.  The exchange alone is a few
condition-variable wake-ups per MoE layer: with more ranks than free cores
its wall time is mostly waiting to be scheduled, and "in collectives"
(which includes the wait for the slowest rank) grows with the ranks for
the same reason.  Wall times on a machine this loaded move by 20-30% from
run to run; the CPU column is the steadier one.  The engine's ratio adds
lockstep steps (a rank whose requests are done still steps while the other
finishes).
TXT
} | tee "$out"
bash bench/section.sh multi "$out"
rm -f "$out"
