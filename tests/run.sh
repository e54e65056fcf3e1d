#!/usr/bin/env bash
# The test command: sets up a fresh machine, builds the extension in place and
# runs the suite. `bash tests/run.sh [pytest args]`.
#   - installs torch 2.14.1 (the CUDA 13 build: with nvcc present, the CUDA
#     sources are compiled too, for sm_80 and sm_90, even without a GPU),
#     ninja, pybind11, pytest
#   - LRSCHED_SKIP_INSTALL=1 skips the pip step (a machine that has them)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${LRSCHED_SKIP_INSTALL:-0}" != "1" ]; then
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" ninja pybind11 pytest
fi

# nvcc: the toolkit at /usr/local/cuda unless CUDA_HOME says otherwise.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS=${MAX_JOBS:-2}
"$PY" setup.py -q build_ext --inplace
"$PY" -c "import lrsched_fused, torch; print('lrsched_fused built against torch', torch.__version__, \
'| CUDA kernels:', hasattr(torch.ops.lrsched_fused, 'adam_step_') and torch._C._dispatch_has_kernel_for_dispatch_key('lrsched_fused::adam_step_', 'CUDA'))"
exec "$PY" -m pytest -q -p no:cacheprovider tests "$@"
