#!/usr/bin/env bash
# The engine against DeepSeek's own reference outputs (the shared tiny-v32
# fixtures, both variants, every run of their manifests): `sparsegate run`
# dumps in the fixtures' format and `sparsegate compare` checks logits,
# argmax and top-k sets at the tolerances each manifest recommends, with
# decisions forced and free running; free-running greedy decoding must
# reproduce the reference tokens where the manifest says the run is clean.
set -u
root=${SG_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
fx=${SG_FIXTURES:-$root/tests/fixtures}/tiny-v32
sg=$root/build/sparsegate
if [ ! -d "$fx" ]; then
    echo "FAIL fixtures: $fx not found (set SG_FIXTURES)"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name|flags|clean for every run of a manifest
runs() {
    node -e '
const m = require(process.argv[1]);
for (const [name, r] of Object.entries(m.runs)) {
  const a = r.model_args;
  const f = [];
  if (r.attention === "dense") f.push("--dense");
  f.push("--kv", a.kv_cache_fp8_sim ? "fp8" : "exact");
  f.push("--act-quant", a.fp8_act_quant ? "on" : "off");
  f.push("--indexer-rope", a.indexer_rope_interleaved ? "interleaved" : "half");
  console.log([name, f.join(" "), r.recommended_tolerance.free_running_clean ? 1 : 0].join("|"));
}' "$1"
}

for v in bf16 fp8; do
    exp=$fx/$v/expected
    man=$exp/manifest.json
    steps=$(node -e 'console.log(require(process.argv[1]).protocol.n_decode)' "$man")
    while IFS='|' read -r run flags clean; do
        ref=$exp/$run
        for mode in forced free; do
            out=$tmp/$v-$run-$mode
            extra=()
            [ "$mode" = forced ] && extra=(--force-decisions "$ref")
            # shellcheck disable=SC2086
            if ! "$sg" run --model "$fx/$v" --prompt-ids "$exp/prompt.i32.bin" \
                    --steps "$steps" --teacher "$ref/tokens.i32.bin" $flags \
                    "${extra[@]}" --dump "$out" >"$out.log" 2>&1; then
                echo "FAIL $v/$run/$mode/run: $(tail -n 3 "$out.log")"
                continue
            fi
            "$sg" compare --manifest "$man" --run "$run" --out "$out" \
                --mode "$mode" --label "$v/$run/$mode"
        done
        if [ "$clean" = 1 ]; then
            out=$tmp/$v-$run-greedy
            # shellcheck disable=SC2086
            if "$sg" run --model "$fx/$v" --prompt-ids "$exp/prompt.i32.bin" \
                    --steps "$steps" $flags --dump "$out" >"$out.log" 2>&1 &&
               cmp -s "$out/tokens.i32.bin" "$ref/tokens.i32.bin"; then
                echo "PASS $v/$run/greedy: free-running tokens equal the reference"
            else
                echo "FAIL $v/$run/greedy: tokens $(head -n 1 "$out.log")"
            fi
        fi
    done < <(runs "$man")
done
