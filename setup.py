"""Plain Python install: torch is not imported at build time (install it first, for your platform).

FUSED_RNN_BUILD_CUDA=1 also builds the CUDA C++ extension in csrc/ ahead of time
(then torch must be installed, with CUDA: use pip install --no-build-isolation).
Without it, backend="cuda" builds the extension just in time on first use.
"""

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fused_rnn" / "__init__.py").read_text()).group(1)

ext_modules, cmdclass = [], {}
if os.environ.get("FUSED_RNN_BUILD_CUDA") == "1":
    import importlib.util

    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    # The nvcc flags live in fused_rnn/cuda.py (the JIT build uses them too);
    # load that file alone rather than the whole package.
    spec = importlib.util.spec_from_file_location("fused_rnn_cuda_flags", HERE / "fused_rnn" / "cuda.py")
    flags = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flags)
    NVCC_FLAGS = flags.NVCC_FLAGS

    ext_modules = [CUDAExtension(
        "fused_rnn._cuda", ["csrc/binding.cpp", "csrc/rnn_cluster.cu"],
        include_dirs=[str(HERE / "csrc")], extra_compile_args={"cxx": ["-O3"], "nvcc": NVCC_FLAGS})]
    cmdclass = {"build_ext": BuildExtension}

setup(
    name="fused_rnn",
    version=VERSION,
    description="Recurrent networks as fused GPU kernels (Triton) for PyTorch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fused_rnn", "fused_rnn.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "numpy",  # the Triton interpreter (CPU runs of the kernels) needs it
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={"test": ["pytest>=7", "torchinfo"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
