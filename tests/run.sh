#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs the C unit
# tests (plain and under ASan + UBSan), then the integration tests, and ends
# with one line "N passed, N failed".
#
# Every test program prints "PASS name" / "FAIL name: why" lines; a program
# that exits non-zero without a FAIL line (a crash) counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash tools/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

# DeepSeek reference fixtures (data) live in tests/fixtures.
export SG_FIXTURES=${SG_FIXTURES:-$root/tests/fixtures}
export SG_ROOT=$root

jobs=$(nproc)
echo "== build"
make -s -j"$jobs" all >build.log 2>&1 || { cat build.log; echo "0 passed, 1 failed"; exit 1; }
make -s -j"$jobs" SAN=1 tests >build-san.log 2>&1 || { cat build-san.log; echo "0 passed, 1 failed"; exit 1; }
rm -f build.log build-san.log

passed=0
failed=0
logdir=$root/build/test-logs
mkdir -p "$logdir"

# run_one LABEL CMD...: runs one test program, echoes its FAIL lines, and
# adds its PASS/FAIL counts to the totals.
run_one() {
    local label=$1; shift
    local log="$logdir/$(echo "$label" | tr '/ ' '__').log"
    local start=$SECONDS rc p f
    "$@" >"$log" 2>&1 </dev/null
    rc=$?
    # -a: a log holding a stray binary byte is still read line by line
    # (else grep prints "binary file matches" instead of the FAIL line)
    p=$(grep -ac '^PASS ' "$log")
    f=$(grep -ac '^FAIL ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $label: exited with status $rc (log: $log)"
        tail -n 20 "$log"
    fi
    grep -a '^FAIL ' "$log" | sed "s|^FAIL |FAIL $label: |"
    grep -a '^SKIP ' "$log" | sed "s|^SKIP |SKIP $label: |"
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-44s %4d passed %3d failed %4ds\n' "$label" "$p" "$f" $((SECONDS - start))
}

echo "== unit tests"
for t in build/tests/test_*; do
    [ -x "$t" ] && run_one "unit/${t##*/}" "$t"
done

echo "== unit tests under ASan + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in build-san/tests/test_*; do
    [ -x "$t" ] && SG_SANITIZED=1 run_one "san/${t##*/}" "$t"
done
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== integration tests"
for t in tests/integration/test_*; do
    case "$t" in
        *.sh)  run_one "integration/${t##*/}" bash "$t" ;;
        *.mjs) run_one "integration/${t##*/}" node "$t" ;;
        *.py)  run_one "integration/${t##*/}" python3 "$t" ;;
    esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
