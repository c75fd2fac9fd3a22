#!/usr/bin/env bash
# The GPU benchmark and the device tests in one go, from the repository root of a machine with CUDA
# (nothing downloaded): benchmarks/gpu.py over the four model shapes and the 31,102 x 13-layer metrics,
# then the engine/metrics/device tests. Results: $OUT/gpu.json, $OUT/gpu.md, $OUT/gpu_bench.log,
# $OUT/pytest.log. Extra arguments go to benchmarks/gpu.py (e.g. --quick to check the script on a CPU).
#
#   bash benchmarks/gpu_run.sh            # needs the bundle: python benchmarks/gpu.py --make-bundle benchmarks/.gpu_bundle
set -u
OUT=${OUT:-/tmp/xling-gpu-out}
BUNDLE=${BUNDLE:-benchmarks/.gpu_bundle}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT" "$SITE"
# (a) the pure-Python dependencies a bare GPU machine lacks (wheels are zip files: no pip, no network)
for w in "$BUNDLE"/wheels/*.whl; do
  [ -f "$w" ] && python3 -m zipfile -e "$w" "$SITE"
done
export PYTHONPATH="src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export XLING_CACHE="${XLING_CACHE:-/tmp/xling-bench-cache}"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true) > "$OUT/device.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" >> "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
# (b) the benchmark (bounded: a partial gpu.json survives the limit)
timeout "${BENCH_TIMEOUT:-270}" python3 benchmarks/gpu.py --bundle "$BUNDLE" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
bench=${PIPESTATUS[0]}
# (c) the tests that touch the device, with CUDA initialised in this process
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_metrics.py \
  tests/test_metrics_blocked.py tests/test_metrics_pass.py tests/test_engine.py \
  tests/test_integrity.py::test_concurrent_align_runs_leave_one_runs_folder 2>&1 | tee "$OUT/pytest.log" | tail -15
tests=${PIPESTATUS[0]}
echo "benchmark exit $bench, tests exit $tests" | tee -a "$OUT/device.txt"
[ "$bench" = 0 ] && [ "$tests" = 0 ]
