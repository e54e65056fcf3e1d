#!/usr/bin/env bash
# The GPU check of the CUDA path, one command, offline (installs nothing; needs
# python3 with torch (a CUDA build), nvcc, ninja, pybind11, pytest):
#   1. builds the extension in place (FORCE_CUDA=1 when nvcc is found),
#   2. runs the CUDA tests: tests/test_cuda.py (against torch's fused CUDA
#      optimizers, sync-debug mode, CUDA-graph capture and replay, launch
#      counts, calls of several launches, bf16/fp16 with master weights;
#      Lion against lion-pytorch, skipped where lion-pytorch is not
#      importable: put its pure-Python package on PYTHONPATH; Muon against
#      torch.optim.Muon + AdamW; 8-bit states against the CPU kernel and
#      replayed from a graph), plus the CUDA cases of tests/test_ops.py and
#      tests/test_no_sync.py,
#   3. runs the GPU benchmark: benchmarks/bench.py --gpu-check (GPT-2 small's
#      124M parameters and 2000 small tensors, fp32/bf16/bf16 with master
#      weights, Adam and SGD; torch
#      fused + eager scheduler, torch with a tensor lr, ours eager and
#      graph-replayed, beside the device-copy ceiling of the same run; GPT-2
#      small Lion and Muon against lion-pytorch and torch's Muon + AdamW;
#      AdamW with 8-bit states against torch's fused fp32 AdamW).
# Meant to finish in under 7 minutes on one H100/H200. Writes three files under
# $OUT (default benchmarks/out/gpu_check): summary.md (status and the
# benchmark table), gpu_check.json (status, environment, every benchmark row),
# log.txt (build, tests and benchmark output). On a machine without a GPU it
# builds, says so in one line and exits 0.
#
# Usage: bash benchmarks/gpu_check.sh            (from anywhere)
# Knobs: OUT, PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0),
#        MAX_JOBS (default: cores), CUDA_HOME (default /usr/local/cuda).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benchmarks/out/gpu_check}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  export FORCE_CUDA=1
fi
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
LOG="$OUT/log.txt"
: > "$LOG"
section() { printf '\n===== %s (+%ss)\n' "$1" "$(elapsed)" >> "$LOG"; }

section "environment"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version 2>&1 | tail -n 2 || true
} >> "$LOG" 2>&1

section "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS, FORCE_CUDA=${FORCE_CUDA:-0})"
timeout 300 "$PY" setup.py build_ext --inplace >> "$LOG" 2>&1
BUILD_RC=$?
"$PY" - > "$WORK/probe.json" 2>> "$LOG" <<'EOF'
import json, torch, lrsched_fused  # noqa: F401
print(json.dumps(dict(
    cuda_kernels=torch._C._dispatch_has_kernel_for_dispatch_key("lrsched_fused::adam_step_", "CUDA"),
    gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    torch=torch.__version__, torch_cuda=torch.version.cuda)))
EOF
PROBE_RC=$?
read -r KERNELS GPU < <("$PY" -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['cuda_kernels'], p['gpu'] or '-')" "$WORK/probe.json" 2>/dev/null || echo "False -")

if [ "$BUILD_RC" -ne 0 ] || [ "$PROBE_RC" -ne 0 ]; then
  echo "gpu_check: the build failed (exit $BUILD_RC, import exit $PROBE_RC); the end of $LOG:"
  tail -n 30 "$LOG"
  exit 1
fi
if [ "$GPU" = "-" ]; then
  echo "gpu_check: built in $(elapsed)s (CUDA kernels compiled: $KERNELS); no GPU visible (torch.cuda.is_available() is False), so nothing was run"
  exit 0
fi

section "tests (GPU: $GPU)"
timeout 200 "$PY" -m pytest -q -rfEs -p no:cacheprovider tests/test_cuda.py tests/test_ops.py tests/test_no_sync.py \
  > "$WORK/tests.txt" 2>&1
TESTS_RC=$?
cat "$WORK/tests.txt" >> "$LOG"
TESTS_SUMMARY="$(tail -n 1 "$WORK/tests.txt")"

section "benchmark"
timeout 180 "$PY" benchmarks/bench.py --gpu-check --json "$WORK/bench.json" > "$WORK/bench.txt" 2>&1
BENCH_RC=$?
cat "$WORK/bench.txt" >> "$LOG"

"$PY" - "$OUT" "$WORK" "$BUILD_RC" "$TESTS_RC" "$TESTS_SUMMARY" "$BENCH_RC" "$(elapsed)" <<'EOF'
import json, os, sys
out, work, build, tests, tests_summary, bench, seconds = sys.argv[1:]
with open(os.path.join(work, "probe.json")) as f:
    environment = json.load(f)
record = None
if os.path.exists(os.path.join(work, "bench.json")):
    with open(os.path.join(work, "bench.json")) as f:
        record = json.load(f)
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(dict(build_rc=int(build), tests_rc=int(tests), tests=tests_summary, bench_rc=int(bench),
                   seconds=int(seconds), environment=environment, bench=record), f, indent=1)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(f"# gpu_check on {environment['gpu']}\n\n"
            f"torch {environment['torch']} (CUDA {environment['torch_cuda']}), {seconds} s in all. "
            f"Build: exit {build}. Tests: {tests_summary} (exit {tests}). Benchmark: exit {bench}.\n\n")
EOF
if [ -f "$WORK/bench.json" ]; then
  "$PY" benchmarks/render_table.py "$WORK/bench.json" >> "$OUT/summary.md"
fi
cat "$OUT/summary.md"

echo
grep -E '^(FAILED|ERROR)' "$WORK/tests.txt" | head -n 20
echo "gpu_check: $(elapsed)s; files: $OUT/summary.md, $OUT/gpu_check.json, $OUT/log.txt"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
