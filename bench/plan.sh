#!/usr/bin/env bash
# `sparsegate plan` on DeepSeek-V3.2's published config (conf/deepseek-v3.2)
# for the device groups it is usually served on.  Device memory as
# nvidia-smi reports memory.total (MiB); the runtime reserve is the
# planner's default (2 GiB per GPU).  Writes the "plan" section of
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 build/sparsegate
out=$(mktemp)
{
    echo "Weights from the config's shapes (FP8 e4m3 128x128 blocks as DeepSeek ships"
    echo "them; the MTP layer is not loaded), FP8 latent cache, 2048-token steps,"
    echo "64 sequences; a configuration fits when every rank caches one full"
    echo "163840-token context."
    echo
    for cfg in "8 H200 143771MiB" "8 H100 81559MiB" "16 H100 81559MiB" "8 B200 183359MiB"; do
        set -- $cfg
        echo "### $1 x $2 ($3 each)"
        echo
        echo '```'
        echo "\$ sparsegate plan --model conf/deepseek-v3.2 --devices $1 --device-memory $3"
        build/sparsegate plan --model conf/deepseek-v3.2 --devices "$1" \
            --device-memory "$3" || true
        echo '```'
        echo
    done
} | tee "$out"
bash bench/section.sh plan "$out"
rm -f "$out"
