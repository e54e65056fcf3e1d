#!/usr/bin/env bash
# The test command: sets up a fresh machine, builds the extension in place
# (tests/build.sh) and runs the suite. `bash tests/run.sh [pytest args]`.
# Without a GPU, tests/test_cuda.py then runs a second time with
# LRSCHED_FUSED_CUDA_TESTS_ON_CPU=1: its comparisons on the CPU against
# torch's fused CPU kernels, so the CUDA tests' logic is checked everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash tests/build.sh
# A basetemp of its own: pytest's default one is shared by every pytest run
# of the user, and a concurrent run's cleanup may remove a live directory
# (tests/test_distributed.py's ranks meet through a file in it).
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/lrsched_fused-tests.XXXXXX")
"$PY" -m pytest -q -p no:cacheprovider --basetemp "$basetemp/suite" tests "$@"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "-- tests/test_cuda.py with LRSCHED_FUSED_CUDA_TESTS_ON_CPU=1 (no GPU here: its test logic on the CPU) --"
  # Every test of the file; of test_matches_torch_fused's 11 schedules (x 3
  # optimizers x 4 dtypes) the four whose kinds differ most (step, plateau,
  # warmup-plateau, onecycle): the CPU suite runs every schedule against torch
  # already. 142 tests, 74 s on 2 idle cores (CI at 6877761, 2026-12-06).
  LRSCHED_FUSED_CUDA_TESTS_ON_CPU=1 "$PY" -m pytest -q -p no:cacheprovider --basetemp "$basetemp/cuda-on-cpu" \
    tests/test_cuda.py -k "not test_matches_torch_fused or -step- or -plateau- or onecycle" "$@"
fi
