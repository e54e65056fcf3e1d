"""Builds lrsched_fused._C: the C++ sources always, the CUDA sources when torch
has CUDA and nvcc is found (or FORCE_CUDA=1).

Environment knobs:
  FORCE_CUDA=1            build the CUDA sources even when no GPU is visible
  NO_CUDA=1               never build them
  TORCH_CUDA_ARCH_LIST    defaults to "8.0;9.0" when no GPU is visible
  MAX_JOBS                parallel compile jobs (ninja)

Install with `pip install --no-build-isolation .` (the build needs the torch
that is already installed) or build in place with
`python setup.py build_ext --inplace`.
"""
import glob
import os
import site
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda():
    if os.environ.get("NO_CUDA") == "1":
        return False
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        if os.environ.get("FORCE_CUDA") == "1":
            sys.exit("FORCE_CUDA=1 but torch has no CUDA or nvcc was not found (set CUDA_HOME)")
        return False
    return True


def _nvidia_wheel_includes():
    """Headers of the nvidia-* wheels (cusparse, cublas, ...) that ATen's CUDA
    headers include; a plain CUDA toolkit may lack some of them."""
    found = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        found += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(found))


def _openmp_flags():
    """at::parallel_for is a header template; with torch's OpenMP backend it is
    a `#pragma omp parallel`, which compiles to a serial loop without -fopenmp.
    Linking -fopenmp adds libgomp.so.1, which resolves to the one torch loaded."""
    if getattr(torch._C, "has_openmp", False) and sys.platform.startswith("linux"):
        return ["-fopenmp"]
    return []


def extension():
    # The C++ standard is the one torch's headers ask for; hidden visibility as
    # pybind11 asks of modules (only PyInit__C is exported). -fno-trapping-math
    # lets GCC compute both sides of a select (no value changes, only whether a
    # floating-point exception flag could be raised): the CPU loops' runtime
    # options become vector selects (NOTE: [CPU loop specialization]).
    # -ffp-contract=off: no a * b + c fused into one rounding where a loop's
    # target has FMA (the AVX-512 one), so every version rounds as torch does.
    cxx_flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
                 "-fvisibility=hidden"] + _openmp_flags()
    link_flags = _openmp_flags()
    sources = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True))]
    cuda_sources = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if _want_cuda() and cuda_sources:
        if not torch.cuda.is_available():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        # -Xfatbin=-compress-all, as torch's own build: the device code is
        # stored compressed (grad_norm_cuda.o 5.7 MB -> 0.85 MB with nvcc 13.0)
        # and inflated once when the module loads.
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xfatbin=-compress-all"]
        return cpp_extension.CUDAExtension(
            "lrsched_fused._C",
            sources + cuda_sources,
            include_dirs=include_dirs + _nvidia_wheel_includes(),
            define_macros=[("LRSCHED_FUSED_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
        )
    return cpp_extension.CppExtension(
        "lrsched_fused._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )


setup(
    name="lrsched_fused",
    version="0.1.0",
    description="Fused SGD/Adam/AdamW/Lion/Muon with the learning-rate schedule computed on the device",
    packages=find_packages(include=["lrsched_fused", "lrsched_fused.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
    extras_require={"test": ["pytest", "hypothesis"], "plot": ["matplotlib"]},
)
