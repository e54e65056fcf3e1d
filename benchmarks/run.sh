#!/usr/bin/env bash
# The benchmark command: sets up a fresh machine (tests/build.sh, plus
# matplotlib for the plot), builds the extension in place and runs
# benchmarks/bench.py (on the CPU by default; `--device cuda` times on a GPU
# with CUDA events and adds a CUDA-graph variant). Arguments go to the
# benchmark, e.g.
#   bash benchmarks/run.sh --quick --out benchmarks/out
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh matplotlib
exec "${PYTHON:-python3}" benchmarks/bench.py "$@"
