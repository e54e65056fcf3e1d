#!/usr/bin/env bash
# Sets up a fresh machine and builds lrsched_fused._C in place; used by
# tests/run.sh and benchmarks/run.sh.
#   - installs torch 2.14.1 (the CUDA 13 build: with nvcc present, the CUDA
#     sources are compiled too, for sm_80 and sm_90, even without a GPU),
#     ninja, pybind11, pytest, and what tests and examples import: hypothesis
#     (property tests), pytorch-lightning (tests/test_lightning.py),
#     transformers and accelerate (tests/test_transformers_*.py: the schedules
#     of transformers.get_scheduler and a Trainer run; these versions leave
#     torch as it is), scikit-learn and matplotlib (examples/), expecttest
#     (torch.testing._internal.common_optimizers imports it:
#     tests/test_torch_conformance.py), lion-pytorch (the reference of FusedLion:
#     tests/test_lion.py; it leaves torch as it is), bitsandbytes (the
#     reference of 8-bit states: tests/test_states_8bit.py and the benchmark;
#     it leaves torch as it is) (+ any extra packages given as arguments)
#   - LRSCHED_SKIP_INSTALL=1 skips the pip step (a machine that has them)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${LRSCHED_SKIP_INSTALL:-0}" != "1" ]; then
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.14.1" ninja pybind11 pytest hypothesis \
    "pytorch-lightning==2.6.6" "transformers==5.24.0" "accelerate==1.16.0" "scikit-learn==1.9.1" \
    "matplotlib==3.11.2" "expecttest==0.3.0" "lion-pytorch==0.2.5" \
    "bitsandbytes==0.50.2" "$@"
fi

# nvcc: the toolkit at /usr/local/cuda unless CUDA_HOME says otherwise.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS=${MAX_JOBS:-2}
"$PY" setup.py -q build_ext --inplace
"$PY" -c "import torch, lrsched_fused; print('lrsched_fused built against torch', torch.__version__, \
'| CUDA kernels compiled:', torch._C._dispatch_has_kernel_for_dispatch_key('lrsched_fused::adam_step_', 'CUDA'))"
