#!/usr/bin/env bash
# Engine benchmarks (CPU): one decode step's attention + indexer at the real
# DeepSeek-V3.2 shapes, DSA vs dense, 8K..128K context; and end-to-end
# prefill/decode tokens/s of a small model at 4K..16K, DSA vs dense.
# Writes the "engine" section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j"$(nproc)" build/sparsegate build/bench/bench_attn
work=${SG_BENCH_DIR:-/tmp/sg-bench}
mkdir -p "$work"
sg=build/sparsegate
out=$(mktemp)

if [ ! -f "$work/v32-attn/config.json" ]; then
    $sg mkmodel --preset v32-attn --set num_hidden_layers=1 --out "$work/v32-attn" >/dev/null
fi
# The small preset with 16 attention heads and 4 index heads: the indexer's
# cost per (query, key) pair is then 1/5 of dense attention's, as in the
# real V3.2 (64 x 128 FP8 index dims vs 128 MLA heads).
if [ ! -f "$work/small-e2e/config.json" ]; then
    $sg mkmodel --preset small --set num_attention_heads=16 --set index_n_heads=4 \
        --out "$work/small-e2e" >/dev/null
fi

ctxs=${SG_BENCH_CONTEXTS:-"8192 32768 65536 131072"}
lens=${SG_BENCH_PROMPTS:-"4096 8192 16384"}
{
    echo "### Decode attention + indexer, real V3.2 shapes (one layer, one query)"
    echo
    echo "128 heads, kv_lora 512, rope 64, indexer 64 x 128 FP8, top-k 2048, FP8 latent"
    echo "cache; synthetic cache contents. Command: \`build/bench/bench_attn $work/v32-attn $ctxs\`"
    echo
    build/bench/bench_attn "$work/v32-attn" $ctxs
    echo
    cat <<'TXT'
The op count counts multiply-adds per query: DSA = L x 64 x 128 (indexer, every key)
+ min(L, 2048) x 128 x (2 x 512 + 64) (scores and values over the selected latents)
+ the value projection; dense = L x 128 x (2 x 512 + 64) + the value projection.
At 64K it predicts 11x. The measured time ratio is the op-count ratio times the
ratio of the two paths' achieved rates (last two columns). While the cache fits
in the CPU's caches both run at about the same rate and the measured ratio
follows the op count. Past them, dense attention streams the whole latent cache
(784 bytes per key: e4m3 latent, scales, f32 RoPE key) from memory for every
query and slows down, so DSA gains more than the op count says; at the longest
contexts the indexer's own keys (132 bytes per key) and the top-k pass over L
scores leave the caches too, and DSA's rate drops as well. Top-k selection is
not in the op count. Single runs on this shared machine move by 10-20%.
TXT
    echo
    echo "### End to end, small model, CPU"
    echo
    echo "\`mkmodel --preset small --set num_attention_heads=16 --set index_n_heads=4\`:"
    node -e 'const c = require(process.argv[1]);
console.log(`${c.num_hidden_layers} layers, hidden ${c.hidden_size}, ${c.num_attention_heads} heads, ` +
  `kv_lora ${c.kv_lora_rank}, index ${c.index_n_heads}x${c.index_head_dim}, top-k ${c.index_topk}, ` +
  `vocab ${c.vocab_size}; prompts of random ids, 8 greedy decode steps.`)' "$(cd "$work/small-e2e" && pwd)/config.json"
    echo
    echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg). \`sparsegate run\` prefills in"
    echo "chunks of 2048 tokens; \"cores\" is the run's CPU time over its wall time (of 2)."
    echo
    echo "| prompt tokens | mode | prefill tok/s | decode tok/s | peak MB | cores |"
    echo "|---:|---|---:|---:|---:|---:|"
    for n in $lens; do
        node -e 'const n=+process.argv[1];const b=Buffer.alloc(4*n);let s=12345;
for(let i=0;i<n;i++){s=(s*1103515245+12345)%2147483648;b.writeInt32LE(2+(s%100000),4*i);}
require("fs").writeFileSync(process.argv[2],b);' "$n" "$work/prompt-$n.bin"
        for mode in dsa dense; do
            flag=; [ $mode = dense ] && flag=--dense
            res=$(/usr/bin/time -f 'maxrss %M cpu %U %S %e' $sg run --model "$work/small-e2e" \
                  --prompt-ids "$work/prompt-$n.bin" --steps 8 $flag 2>&1)
            line=$(echo "$res" | grep '^prefill:')
            pf=$(echo "$line" | sed -E 's/.*\(([0-9.]+) tok\/s\); decode.*/\1/')
            dc=$(echo "$line" | sed -E 's/.*steps in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/')
            mb=$(( $(echo "$res" | sed -n 's/^maxrss \([0-9]*\).*/\1/p') / 1024 ))
            co=$(echo "$res" | sed -n 's/^maxrss [0-9]* cpu //p' | awk '{ printf "%.2f", ($1 + $2) / $3 }')
            echo "| $n | $mode | $pf | $dc | $mb | $co |"
        done
    done
    echo
    cat <<'TXT'
Why a 16K dense prefill once measured 39 tok/s where this table had 88 (same
binary, same command): the old dense kernel read each key's slice of the
expanded keys per head, 256 bytes every 8 KB (keys x 16 heads x 128 floats
apart), from a context-sized buffer in 4 KB pages (transparent huge pages
are madvise-only here): a TLB miss and a fresh DRAM row per 256 bytes, for
every 4 rows. That made it bound by memory latency and twice as sensitive
to the machine's state as the compute-bound DSA path: across the two
measurements dense fell to 0.44-0.54 of the table at 4K, 8K and 16K alike
while DSA kept 0.76-0.94, and on this shared machine the same binary's 4K
dense prefill has measured anywhere from 426 down to 29 tok/s with other
jobs' load (the process then got 10-45% of its two threads' time: see the
cores column). The flash kernel packs a 64-key tile of one head once per
64-row block and runs at compute rate; the run's CPU share is now recorded
beside every number.
TXT
} | tee "$out"

bash bench/section.sh engine "$out"
rm -f "$out"
