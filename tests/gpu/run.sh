#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (Hopper: sm_90; others
# run the embedded compute_90 PTX): builds the CUDA backend, runs its tests
# against the CPU backend (tests/unit/test_cuda.c: every op on fresh random
# inputs, then the whole model on the reference fixtures), with two GPUs or
# more the device group's (tests/unit/test_multi_cuda.c: NCCL, the fixtures
# on every rank of a group against one GPU), runs the GPU
# benchmarks (bench/gpu_bench.cu), writes their table into bench/RESULTS.md
# between the gpu markers, and prints a short summary table last.
#
#   bash tests/gpu/run.sh            # everything
#   SG_GPU_SANITIZE=1 bash ...       # also the tests under compute-sanitizer
#   SG_GPU_PREBUILT=1 bash ...       # use build/ as it is (carried binaries)
#
# Logs and results go to $OUT when set (a runner's output folder), else to
# build/gpu/.  Exit status: 0 when every test passed and the bench ran.
#
# A runner that kills the job at a time limit would cut the summary off:
# every phase's timeout comes out of SG_GPU_BUDGET (seconds, default 560,
# for a 600 s limit) so the summary always comes last.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=${OUT:-$root/build/gpu}
mkdir -p "$out"
# what needs no keeping stays out of $out, which holds only the logs,
# ptxas.txt and RESULTS.md (7 files)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
ldp=${LD_LIBRARY_PATH:-}       # the loader's path for test_cuda and gpu_bench
budget=${SG_GPU_BUDGET:-560}

# Seconds this phase may take: at most $1, leaving $2 for what follows
# (at least 1: `timeout 0` would mean no limit at all).
phase_timeout() {
    local t=$((budget - SECONDS - $2))
    [ "$t" -gt "$1" ] && t=$1
    [ "$t" -lt 1 ] && t=1
    echo "$t"
}

echo "== device"
if ! nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
        --format=csv,noheader | tee "$tmp/device.txt"; then
    echo "no NVIDIA GPU here: nothing to check (the unit suite skips the"
    echo "device tests on such machines)"
    exit 1
fi

# DeepSeek reference fixtures (data) live in tests/fixtures.
export SG_FIXTURES=${SG_FIXTURES:-$root/tests/fixtures}

# A device image may lack the -dev packages the engine links with: carry
# them as .deb files in .gpu-debs/ (fetched on the build machine with
# `apt-get download`, see kernels/NOTES.md); they are unpacked into a
# private root and found through the compiler's and loader's paths.
if ls .gpu-debs/*.deb >/dev/null 2>&1; then
    sysroot=/tmp/sg-sysroot
    mkdir -p "$sysroot"
    for f in .gpu-debs/*.deb; do dpkg -x "$f" "$sysroot"; done
    inc=$sysroot/usr/include
    lib=$sysroot/usr/lib/x86_64-linux-gnu
    export CPATH="$inc:$inc/x86_64-linux-gnu:$inc/postgresql:$inc/x86_64-linux-gnu/openblas-pthread${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$lib:$lib/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}"
    # for our two programs only: exported, the Debian libraries would also
    # be loaded by the image's own make, nvcc and python3
    ldp="$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # the unversioned openblas name is an alternatives link, not in a .deb
    [ -e "$lib/libopenblas.so" ] || ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so" 2>/dev/null
    echo "using the carried packages under $sysroot"
fi

echo "== build (sm_90 + compute_90 PTX)"
if [ "${SG_GPU_PREBUILT:-0}" != 1 ]; then
    # kernels/kernels.mk looks only at /usr/local/cuda/bin/nvcc and quietly
    # builds no CUDA library when it is not there (the engine then says
    # "built without CUDA"), which would make every device test a SKIP:
    # find nvcc, or stop here
    nvcc_bin=${NVCC:-/usr/local/cuda/bin/nvcc}
    [ -x "$nvcc_bin" ] || nvcc_bin=$(command -v nvcc || true)
    if [ -z "$nvcc_bin" ] || [ ! -x "$nvcc_bin" ]; then
        echo "no nvcc here (looked at /usr/local/cuda/bin and PATH)"
        exit 1
    fi
    cuda_home=$(cd "$(dirname "$nvcc_bin")/.." && pwd)
    start=$SECONDS
    mk=(make -j"$(nproc)" NVCC="$nvcc_bin" CUDA_HOME="$cuda_home")
    # test_cuda and gpu_bench need the engine alone: build them without
    # the stores (retrieval/, the store-test helper drive_aquery.c) and
    # link them without -lsqlite3 -lhiredis -lpq, so a bare image needs
    # neither those packages nor what a Debian libpq5 pulls in (libldap,
    # krb5, ...).  The link line is the Makefile's own, less those three.
    "${mk[@]}" build/link-flags.txt >"$out/build.log" 2>&1
    libs=
    for w in $(cat build/link-flags.txt 2>/dev/null); do
        case $w in -lsqlite3|-lhiredis|-lpq) ;; *) libs="$libs $w" ;; esac
    done
    helpers=
    for f in tests/unit/*.c; do
        case $f in */test_*|*/drive_aquery.c) ;;
                   *) helpers="$helpers build/obj/${f%.c}.o" ;; esac
    done
    # --as-needed: a library none of the code uses is not loaded;
    # --allow-shlib-undefined: a carried library may name others that
    # the linker cannot see here (the loader finds them or says so)
    if ! timeout "$(phase_timeout 300 200)" "${mk[@]}" \
            LIBS=build/libsparsegate.a TESTLIB_OBJ="$helpers" \
            LDLIBS="$libs" \
            LDFLAGS="-pthread -Wl,--as-needed -Wl,--allow-shlib-undefined" \
            build/libsparsegate_cuda.so build/tests/test_cuda \
            build/tests/test_multi_cuda build/bench/gpu_bench \
            >>"$out/build.log" 2>&1; then
        tail -n 40 "$out/build.log"
        echo "build failed (log: $out/build.log); if -dev packages are"
        echo "missing here, build on a machine that has them and carry"
        echo "build/ with SG_GPU_PREBUILT=1"
        exit 1
    fi
    echo "built in $((SECONDS - start)) s"
    # registers / spills of every kernel, for the notes
    for f in kernels/*.cu; do
        "$nvcc_bin" -std=c++17 -O3 \
            -gencode arch=compute_90,code=sm_90 -Iengine -Ikernels \
            -Xptxas -v -c "$f" -o /dev/null 2>&1 | grep -E "Function properties|Used|spill" ;
    done >"$out/ptxas.txt" 2>&1
fi
[ -x build/tests/test_cuda ] && [ -x build/bench/gpu_bench ] \
    && [ -f build/libsparsegate_cuda.so ] || {
    echo "build/tests/test_cuda, build/bench/gpu_bench or"
    echo "build/libsparsegate_cuda.so missing"; exit 1; }

echo "== tests: CUDA backend vs CPU backend"
start=$SECONDS
LD_LIBRARY_PATH=$ldp timeout "$(phase_timeout 240 200)" build/tests/test_cuda \
    >"$out/test_cuda.log" 2>&1
rc=$?
test_s=$((SECONDS - start))
passed=$(grep -c '^PASS ' "$out/test_cuda.log")
failed=$(grep -c '^FAIL ' "$out/test_cuda.log")
skipped=$(grep -c '^SKIP ' "$out/test_cuda.log")
grep -E '^(FAIL|SKIP|#)' "$out/test_cuda.log"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
    echo "test_cuda exited with status $rc (124: out of time)"
    tail -n 20 "$out/test_cuda.log"
fi
# On this machine the op checks must run: "SKIP cuda/..." means the
# backend did not start (no device seen, or the CUDA-less stub was built).
if grep -q '^SKIP cuda/' "$out/test_cuda.log"; then
    failed=$((failed + 1))
    echo "FAIL: the device tests were skipped on a GPU machine"
fi
# the model checks need the fixtures (tests/fixtures, or SG_FIXTURES)
fixtures_note=
grep -q '^SKIP model' "$out/test_cuda.log" \
    && fixtures_note=" (model: no fixtures)"
# the same with the indexer's f32 FMA kernel instead of the tensor cores
SG_CUDA_FMA=1 LD_LIBRARY_PATH=$ldp \
    timeout "$(phase_timeout 240 150)" build/tests/test_cuda \
    >"$out/test_cuda_fma.log" 2>&1
frc=$?
fpassed=$(grep -c '^PASS ' "$out/test_cuda_fma.log")
ffailed=$(grep -c '^FAIL ' "$out/test_cuda_fma.log")
grep -E '^FAIL' "$out/test_cuda_fma.log" | sed 's/^FAIL /FAIL (SG_CUDA_FMA=1) /'
[ "$frc" -ne 0 ] && [ "$ffailed" -eq 0 ] && ffailed=1
passed=$((passed + fpassed))
failed=$((failed + ffailed))
[ "$failed" -eq 0 ] || status=1

# A device group (NCCL, the fixtures on every rank) needs two GPUs or more.
n_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
multi_note="skipped: $n_gpus GPU"
if [ "$n_gpus" -ge 2 ] && [ -x build/tests/test_multi_cuda ]; then
    echo "== tests: device group over $n_gpus GPUs (NCCL)"
    LD_LIBRARY_PATH=$ldp timeout "$(phase_timeout 180 120)" \
        build/tests/test_multi_cuda >"$out/test_multi_cuda.log" 2>&1
    mrc=$?
    mpassed=$(grep -c '^PASS ' "$out/test_multi_cuda.log")
    mfailed=$(grep -c '^FAIL ' "$out/test_multi_cuda.log")
    grep -E '^(FAIL|SKIP|#)' "$out/test_multi_cuda.log"
    [ "$mrc" -ne 0 ] && [ "$mfailed" -eq 0 ] && mfailed=1
    multi_note="$mpassed passed, $mfailed failed"
    [ "$mfailed" -eq 0 ] || status=1
else
    echo "== tests: device group: skipped ($n_gpus GPU here, two needed)"
fi

if [ "${SG_GPU_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    echo "== tests under compute-sanitizer (memcheck)"
    LD_LIBRARY_PATH=$ldp timeout "$(phase_timeout 300 120)" \
        compute-sanitizer --tool memcheck --error-exitcode 3 \
        build/tests/test_cuda >"$out/sanitizer.log" 2>&1
    src=$?
    tail -n 5 "$out/sanitizer.log"
    [ "$src" -eq 0 ] || { echo "compute-sanitizer: status $src"; status=1; }
fi

echo "== benchmarks"
start=$SECONDS
rm -f "$tmp/gpu_results.md"
LD_LIBRARY_PATH=$ldp \
    timeout "$(phase_timeout 400 10)" \
    build/bench/gpu_bench "$tmp/gpu_results.md" >"$out/bench.log" 2>&1
brc=$?
bench_s=$((SECONDS - start))
# gpu_bench exits 0 after "SKIP" when it finds no device: no table is no run
[ "$brc" -eq 0 ] && [ ! -s "$tmp/gpu_results.md" ] && brc=2
[ "$brc" -eq 0 ] || { tail -n 20 "$out/bench.log"; status=1; }

# bench/RESULTS.md: replace what lies between the gpu markers (added at the
# end when absent); the updated copy also goes to $out.
if [ "$brc" -eq 0 ] && [ -s "$tmp/gpu_results.md" ]; then
    python3 - "$tmp/gpu_results.md" bench/RESULTS.md <<'PY'
import sys, datetime
new = open(sys.argv[1]).read().strip()
path = sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmark results\n"
begin, end = "<!-- gpu:begin -->", "<!-- gpu:end -->"
stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
    "%Y-%m-%d %H:%M UTC")
block = (f"{begin}\n## GPU ({stamp}, `bash tests/gpu/run.sh`)\n\n{new}\n{end}")
if begin in text and end in text:
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
    cp bench/RESULTS.md "$out/RESULTS.md"
fi

echo
echo "== summary ($(cut -d, -f1 "$tmp/device.txt" | head -1))"
printf '%-28s %s\n' "tests (test_cuda, twice)" \
    "$passed passed, $failed failed, $skipped skipped in ${test_s}s$fixtures_note"
printf '%-28s %s\n' "device group (test_multi_cuda)" "$multi_note"
printf '%-28s %s\n' "benchmarks (gpu_bench)" \
    "$(case $brc in
        0) echo "ran in ${bench_s}s" ;;
        2) echo "FAILED (no table written: see bench.log)" ;;
        124) echo "FAILED (out of time after ${bench_s}s)" ;;
        *) echo "FAILED (status $brc)" ;;
       esac)"
grep '^|' "$out/bench.log" | grep -v '^|---' | grep -v '^| what' || true
exit $status
