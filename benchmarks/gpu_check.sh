#!/usr/bin/env bash
# One-shot GPU check of the CUDA path, meant to finish in under 8 minutes on
# one H200 with torch (CUDA build), nvcc, ninja and no package registry:
#   1. builds the extension in place for sm_90 (FORCE_CUDA=1),
#   2. runs tests/test_cuda.py,
#   3. runs benchmarks/gpu_bench.py (throughput vs torch + copy bandwidth).
# Everything goes under $OUT (default: benchmarks/out/gpu_check): build.log,
# env.txt, tests.log, tests.xml, bench.log, bench.json, summary.json. The last
# thing printed is a short table. Installs nothing.
#
# Usage: bash benchmarks/gpu_check.sh            (from anywhere)
# Knobs: OUT, TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default: cores),
#        CUDA_HOME (default: /usr/local/cuda when it exists).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benchmarks/out/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export FORCE_CUDA=1
START=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"
  "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>&1 | tail -n 2 || true
  ninja --version 2>&1 | sed 's/^/ninja /' || true
} > "$OUT/env.txt" 2>&1
stamp "environment: $OUT/env.txt"

stamp "building (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
"$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1
BUILD_RC=$?
stamp "build exit $BUILD_RC (log: $OUT/build.log)"
if [ "$BUILD_RC" -ne 0 ]; then
  tail -n 40 "$OUT/build.log"
fi
"$PY" -c "import torch, lrsched_fused._C; assert torch._C._dispatch_has_kernel_for_dispatch_key('lrsched_fused::adam_step_', 'CUDA'), 'no CUDA kernel registered'" \
  > "$OUT/import.log" 2>&1
IMPORT_RC=$?
[ "$IMPORT_RC" -ne 0 ] && cat "$OUT/import.log"

TESTS_RC=skipped
TESTS_SUMMARY="not run"
if [ "$BUILD_RC" -eq 0 ] && [ "$IMPORT_RC" -eq 0 ]; then
  if "$PY" -c "import pytest" 2>/dev/null; then
    stamp "running tests/test_cuda.py"
    timeout 300 "$PY" -m pytest -q -rfEs tests/test_cuda.py --junitxml="$OUT/tests.xml" -p no:cacheprovider \
      > "$OUT/tests.log" 2>&1
    TESTS_RC=$?
    TESTS_SUMMARY="$(tail -n 1 "$OUT/tests.log")"
    stamp "tests exit $TESTS_RC: $TESTS_SUMMARY"
  else
    TESTS_SUMMARY="pytest is not installed here, so tests/test_cuda.py was NOT run"
    stamp "$TESTS_SUMMARY"
  fi
fi

BENCH_RC=skipped
if [ "$BUILD_RC" -eq 0 ] && [ "$IMPORT_RC" -eq 0 ]; then
  stamp "running benchmarks/gpu_bench.py"
  timeout 180 "$PY" benchmarks/gpu_bench.py --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
  BENCH_RC=$?
  stamp "bench exit $BENCH_RC (log: $OUT/bench.log)"
fi

"$PY" - "$OUT" "$BUILD_RC" "$IMPORT_RC" "$TESTS_RC" "$TESTS_SUMMARY" "$BENCH_RC" "$(( $(date +%s) - START ))" <<'EOF'
import json, os, sys
out, build, imported, tests, tests_summary, bench, seconds = sys.argv[1:]
summary = dict(build_rc=build, import_rc=imported, tests_rc=tests, tests=tests_summary, bench_rc=bench,
               seconds=int(seconds))
path = os.path.join(out, "bench.json")
if os.path.exists(path):
    with open(path) as f:
        summary["bench"] = json.load(f)
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
EOF

echo
echo "== gpu_check summary ($(( $(date +%s) - START ))s, files in $OUT) =="
echo "build: exit $BUILD_RC   import+CUDA kernel registered: exit $IMPORT_RC"
echo "tests: $TESTS_SUMMARY (exit $TESTS_RC)"
if [ -f "$OUT/bench.log" ]; then
  echo "bench (exit $BENCH_RC):"
  grep -v '^\s*$' "$OUT/bench.log" | tail -n 20
fi
if [ "$BUILD_RC" -ne 0 ] || [ "$IMPORT_RC" -ne 0 ] || [ "$TESTS_RC" != 0 ] || [ "$BENCH_RC" != 0 ]; then
  exit 1
fi
