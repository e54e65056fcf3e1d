#!/usr/bin/env bash
# The benchmark command: sets up a fresh machine (tests/build.sh, plus
# matplotlib for the plot), builds the extension in place and runs
# `python -m lrsched_fused.bench` (CPU by default; CUDA events and a CUDA-graph
# variant where a GPU is present). Arguments go to the benchmark, e.g.
#   bash benchmarks/run.sh --quick --out benchmarks/out
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh matplotlib
exec "${PYTHON:-python3}" -m lrsched_fused.bench "$@"
