#!/usr/bin/env bash
# Every benchmark, one after another; each writes its own section of
# bench/RESULTS.md (ratios side by side from one run: this machine is shared
# and noisy, absolute times drift).  GPU benchmarks run from tests/gpu/run.sh
# on a machine with a device.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
for b in kernels engine tokenizer retrieval rag_freeze serve gateway soak tenants multi plan peer grammar; do
    if [ -f "bench/$b.sh" ]; then
        echo "== bench/$b.sh"
        bash "bench/$b.sh" || echo "bench/$b.sh failed (exit $?)"
    fi
done
