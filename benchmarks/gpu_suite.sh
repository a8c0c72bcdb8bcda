#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one run, results under benchmarks/results/gpu/.
#
# On a machine with an NVIDIA GPU, from the repository root:
#
#     bash benchmarks/gpu_suite.sh                 # about 8 minutes
#     bash benchmarks/gpu_suite.sh --cpu-dry-run   # the same stages at tiny sizes on the CPU
#
# Stages, in order of what matters most (each under its own time limit, so that a stage that
# hangs cannot eat the others' time; the suite's exit status is 1 when any stage failed):
#
#   1. checks      python -m benchmarks.gpu_check: the core's invariants on CuPy, torch-CUDA and
#                  JAX-GPU (float64 and float32), every direction method, the DLPack exchange and
#                  hybrid paths, and SNGD timings at P = 4,417 and 1,005,001 (the Jacobian path
#                  chosen by the rule from the device's free memory);
#   2. tests       python -m pytest -m "not slow": the suite (its slow marks are CPU smoke runs
#                  of the benchmarks), the property tests also on the device backends
#                  (torch-cuda, jax-gpu, cupy fixtures in tests/conftest.py);
#   3. steptime    python -m benchmarks.pinn.steptime: one step of SNGD (rank 100, 300), dense
#                  ENGD and ENGD-Woodbury at P = 4,417, N = 1,020 (target: SNGD <= 2x Woodbury);
#   4. crossover   python -m benchmarks.crossover: where sketching pays, N in {1k, 4k, 16k, 64k}
#                  and P from 1e4 to 1e6, for ENGD-Woodbury, SNGD and Nystrom-PCG;
#   5. large       python -m benchmarks.scale --widths 3576 (P = 12,805,465 >= 1.28e7, float32):
#                  SNGD on Poisson 2D for up to 5 minutes, only when 200 s of the budget are
#                  left (the default budget, 480 s, fits one 600 s device call; a second
#                  call `bash benchmarks/gpu_suite.sh --only=large` runs it by itself).
#
# What the device machine needs beside the repository: array-api-compat (not in its image).
# Here, once: `echo /.whl/ >> .git/info/exclude` and
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl array-api-compat==1.16.0
# then run `bash benchmarks/gpu_suite.sh` with `.whl` carried; the script installs what is in
# .whl/ into /tmp/site. Everything it writes is also packed into $OUT/gpu_results.tar.gz when
# $OUT is set (the device tool brings that folder back).
set -u
cd "$(dirname "$0")/.."

DRY=0
ONLY=""
BUDGET=${GPU_SUITE_BUDGET:-480}   # seconds for all stages together
for arg in "$@"; do
    case "$arg" in
        --cpu-dry-run) DRY=1 ;;
        --budget=*) BUDGET="${arg#--budget=}" ;;
        --only=*) ONLY=",${arg#--only=}," ;;
        *) echo "gpu_suite.sh: unknown argument $arg (expected --cpu-dry-run, --budget=SECONDS," \
                "--only=STAGE[,STAGE])" >&2
           exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX must not take 75% of the GPU up front: torch and CuPy share the card in these runs.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

if [ "$DRY" = 1 ]; then
    RESULTS=${GPU_SUITE_RESULTS:-$(mktemp -d)}
else
    RESULTS=${GPU_SUITE_RESULTS:-benchmarks/results/gpu}
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        echo "gpu_suite.sh: no NVIDIA GPU (nvidia-smi -L failed); use --cpu-dry-run on a CPU" >&2
        exit 2
    fi
fi
mkdir -p "$RESULTS"
LOG="$RESULTS/suite.log"
: >"$LOG"
START=$(date +%s)
FAILED=()

left() { echo $((BUDGET - ($(date +%s) - START))); }

# stage NAME LIMIT_SECONDS MIN_LEFT COMMAND...: run under `timeout`, log, record the outcome.
stage() {
    local name=$1 limit=$2 need=$3
    shift 3
    local remaining
    if [ -n "$ONLY" ] && [[ "$ONLY" != *",$name,"* ]]; then
        echo "== $name: not asked for (--only)" | tee -a "$LOG"
        return
    fi
    remaining=$(left)
    if [ "$remaining" -lt "$need" ]; then
        echo "== $name: skipped, ${remaining}s left of the budget (needs ${need}s)" | tee -a "$LOG"
        return
    fi
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$(date +%s) rc
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(($(date +%s) - t0))s" | tee -a "$LOG"
    [ "$rc" = 0 ] || FAILED+=("$name (exit $rc)")
}

{
    echo "gpu_suite.sh $(date -u +%FT%TZ) budget ${BUDGET}s dry-run $DRY"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    "$PY" -c 'import sys; print("python", sys.version.split()[0])'
    for lib in torch jax cupy array_api_compat; do
        "$PY" -c "import $lib; print('$lib', $lib.__version__)" 2>/dev/null || echo "$lib: absent"
    done
} | tee -a "$LOG"

if [ "$DRY" = 1 ]; then
    stage checks 300 30 "$PY" -m benchmarks.gpu_check --cpu-dry-run --out "$RESULTS"
    stage tests 300 30 "$PY" -m pytest -q -p no:cacheprovider -x tests/test_precision.py
    stage steptime 300 30 "$PY" -m benchmarks.pinn.steptime --repeats 1 --ranks 20 --widths 2,16,16,1 \
        --out "$RESULTS/steptime"
    stage crossover 300 30 "$PY" -m benchmarks.crossover --quick --out "$RESULTS"
else
    stage checks 150 60 "$PY" -m benchmarks.gpu_check --out "$RESULTS"
    stage tests 200 60 "$PY" -m pytest -q -p no:cacheprovider -n 8 --dist loadfile \
        -m "not slow" --junitxml="$RESULTS/pytest.xml"
    stage steptime 60 30 "$PY" -m benchmarks.pinn.steptime --ranks 100,300 \
        --out "$RESULTS/steptime"
    stage crossover 120 60 "$PY" -m benchmarks.crossover --framework jax,torch --device cuda \
        --plot --out "$RESULTS"
    stage large 330 200 "$PY" -m benchmarks.scale --framework jax --widths 3576 --float32 \
        --budget 300 --max-steps 500 --out "$RESULTS/scale_large"
fi

echo "== done in $(($(date +%s) - START))s; failed: ${FAILED[*]:-none}" | tee -a "$LOG"
if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/gpu_results.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
    cp "$LOG" "$OUT/suite.log"
fi
[ ${#FAILED[@]} = 0 ]
