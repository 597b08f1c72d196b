#!/usr/bin/env bash
# Issue 14's GPU checks in one go, for a machine with a CUDA GPU (docs/performance.md, "On a GPU"):
# the CUDA test subset, then benchmarks/gpu.py (training, sweep and one claim, timed).
# Needs falsify installed with a CUDA build of torch (pip install -e ".[test]"); writes its logs
# and gpu.json to $OUT (default ./gpu-results). About 5–8 minutes on one H200-class GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$python" -m pytest -p no:cacheprovider -q -rfEs tests/test_cuda.py \
  "tests/test_engine.py::test_cuda_gives_the_cpu_numbers" 2>&1 | tee "$out/cuda-tests.log"
tests=${PIPESTATUS[0]}
"$python" benchmarks/gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu-benchmark.log"
bench=${PIPESTATUS[0]}
echo "CUDA tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
