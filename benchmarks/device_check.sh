#!/usr/bin/env bash
# One short check of the CUDA paths, for a machine with a GPU (run from the repository root).
#
#   bash benchmarks/device_check.sh [multimodal seeds...]
#
# 1. installs the project (no network: --no-deps, any wheels it lacks from .device/whl);
# 2. runs the test suite: the conformance checks move every module to CUDA when there is one
#    (the speech-synthesis tests are left out where espeak-ng is not installed);
# 3. runs every architecture benchmark's smoke setting with --device cuda (its runs in as many
#    worker processes as the machine has cores, sharing the one device), then the GMM's sweep
#    benchmark (kernels per sweep, time against the old sweep);
# 4. runs `serket bench multimodal --device cuda` on the seeds given (none: skipped), for
#    figures beside the CPU run.
# Data: $SERKET_DATA_DIR, default .device/data (a copy of ../shared/data). Logs and results
# go to $OUT (default /tmp/device_check).
set -uo pipefail
export PYTHONUNBUFFERED=1  # (serket/__init__.py sets OMP_WAIT_POLICY)
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export SERKET_DATA_DIR=${SERKET_DATA_DIR:-$PWD/.device/data}
export SERKET_CACHE_DIR=${SERKET_CACHE_DIR:-/tmp/serket_cache}
PY=${PYTHON:-python3}

if ls .device/whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .device/whl/*.whl || exit 1
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
cd /tmp  # import the installed copy, not the source folders
SRC=$OLDPWD
LOG="$OUT/run.log"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" | tee "$LOG"

status=0
deselect=""
command -v espeak-ng >/dev/null || deselect="not synthes and not espeak and not synthetic"
# run a copy of the tests beside the examples they use, away from the source folders (which
# would shadow the installed package, whose serket.modules comes from modules/)
rm -rf /tmp/t && mkdir -p /tmp/t && cp -r "$SRC/tests" "$SRC/examples" "$SRC/benchmarks" "$SRC/pyproject.toml" /tmp/t/
( cd /tmp/t && $PY -m pytest -q -p no:cacheprovider ${deselect:+-k "$deselect"} tests ) > /tmp/tests.log 2>&1
tail -25 /tmp/tests.log | tee -a "$LOG"
grep -qE "[0-9]+ passed" /tmp/tests.log && ! grep -qE "[0-9]+ (failed|error)" /tmp/tests.log || status=1

for bench in vae-gmm lda-asr neuro-serket multimodal; do
    echo "== serket bench $bench --quick --device cuda" | tee -a "$LOG"
    if $PY -m serket.bench.cli bench "$bench" --quick --device cuda --no-resume --out "/tmp/smoke_$bench" > /tmp/smoke.log 2>&1; then
        tail -4 /tmp/smoke.log | tee -a "$LOG"
    else
        status=1; tail -30 /tmp/smoke.log | tee -a "$LOG"
    fi
done

# the Gibbs GMM's sweep on the device: kernels per sweep, time against the pre-change sweep,
# the same chain to the bit
echo "== bench_gmm_gibbs --device cuda" | tee -a "$LOG"
$PY "$SRC/benchmarks/bench_gmm_gibbs.py" --device cuda --n 2700 --repeats 3 --json "$OUT/gmm_gibbs.json" > /tmp/gmm_gibbs.log 2>&1 || status=1
tail -8 /tmp/gmm_gibbs.log | tee -a "$LOG"

if [ "$#" -gt 0 ]; then
    echo "== serket bench multimodal --device cuda --seeds $*" | tee -a "$LOG"
    start=$(date +%s)
    timeout "${MM_TIMEOUT:-300}" $PY -m serket.bench.cli bench multimodal --device cuda --seeds "$@" --out /tmp/multimodal > "$OUT/multimodal.log" 2>&1 || status=1
    echo "multimodal wall-clock $(( $(date +%s) - start )) s" | tee -a "$LOG"
    cp /tmp/multimodal/results.json /tmp/multimodal/results.md "$OUT/" 2>/dev/null
    cp /tmp/multimodal/speech_to_image_jmvae-alternate.png "$OUT/" 2>/dev/null
fi
echo "device check status $status" | tee -a "$LOG"
exit $status
