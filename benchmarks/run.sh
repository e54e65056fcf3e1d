#!/usr/bin/env bash
# The benchmark command: sets up a fresh machine (tests/build.sh, plus
# matplotlib for the plot), builds the extension in place and runs
# benchmarks/bench.py on the CPU.
#   bash benchmarks/run.sh              the representative set (bench.py --quick: every optimizer on few
#                                       large and many small tensors, StepLR/Plateau, bf16+master, bf16+SR,
#                                       fp32+bf16 states, +clip, the host-cost rows), a few minutes on 2 cores;
#                                       table and PNG in benchmarks/results/
#   bash benchmarks/run.sh --full       every configuration (about half an hour on 2 cores with 3 dtypes;
#                                       5 now, with bf16+SR and fp32+bf16 states: not re-measured)
#   bash benchmarks/run.sh ARGS...      anything else goes to bench.py as it is, e.g. --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/build.sh matplotlib
if [ $# -eq 0 ]; then
  set -- --quick --out benchmarks/results
elif [ "$1" = "--full" ]; then
  shift
  set -- --out benchmarks/results "$@"
fi
exec "${PYTHON:-python3}" benchmarks/bench.py "$@"
