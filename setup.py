"""Only for the optional CUDA C++ extension; the package's metadata is in pyproject.toml.

FUSED_RNN_BUILD_CUDA=1 builds fused_rnn/csrc/ ahead of time as fused_rnn._cuda
(torch with CUDA and nvcc must be installed first: pip install --no-build-isolation).
Without it this is a plain Python package, and backend="cuda" builds the
extension just in time on first use, from the sources installed with the package.
"""

import ast
import os
from pathlib import Path

from setuptools import setup

CSRC = "fused_rnn/csrc"


def cuda_build_constants():
    """SOURCES and NVCC_FLAGS from fused_rnn/cuda_build.py, read without importing the package."""
    tree = ast.parse((Path(__file__).parent / "fused_rnn" / "cuda_build.py").read_text())
    return {target.id: ast.literal_eval(node.value)
            for node in tree.body if isinstance(node, ast.Assign) for target in node.targets}


ext_modules, cmdclass = [], {}
if os.environ.get("FUSED_RNN_BUILD_CUDA") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    constants = cuda_build_constants()
    ext_modules = [CUDAExtension(
        "fused_rnn._cuda", [f"{CSRC}/{name}" for name in constants["SOURCES"]], include_dirs=[CSRC],
        extra_compile_args={"cxx": ["-O3"], "nvcc": constants["NVCC_FLAGS"]})]
    cmdclass = {"build_ext": BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
