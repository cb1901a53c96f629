"""The optional CUDA C++ extension (fused_rnn/csrc/): thread-block-cluster forward for large H.

Loaded on first use of backend="cuda": the ahead-of-time build
(``FUSED_RNN_BUILD_CUDA=1 pip install --no-build-isolation .``) if present,
else a just-in-time build with torch.utils.cpp_extension.load and ninja
(cached under TORCH_EXTENSIONS_DIR) from the sources installed with the
package. Without CUDA torch and nvcc neither can happen, and backend="cuda"
raises an error that says how to build it.
"""

from pathlib import Path

import torch

from .cuda_build import NVCC_FLAGS
from .cuda_build import SOURCES as SOURCE_NAMES

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = [CSRC / name for name in SOURCE_NAMES]
BUILD_HINT = ("build the CUDA extension ahead of time with `FUSED_RNN_BUILD_CUDA=1 pip install "
              "--no-build-isolation -e .` (from a checkout), or let it build on first use "
              "(needs CUDA torch, nvcc and ninja)")

_EXTENSION = None


def extension():
    """The compiled module, or the reason it is unavailable (a string)."""
    global _EXTENSION
    if _EXTENSION is None:
        _EXTENSION = _load()
    return _EXTENSION


def _load():
    try:
        from fused_rnn import _cuda  # ahead-of-time build
        return _cuda
    except ImportError:
        pass
    if torch.version.cuda is None:
        return f"this torch has no CUDA ({torch.__version__}); {BUILD_HINT}"
    if not all(p.exists() for p in SOURCES):
        return f"the CUDA sources are not installed beside the package ({CSRC}); {BUILD_HINT}"
    try:
        from torch.utils.cpp_extension import load
        return load(name="fused_rnn_cuda", sources=[str(p) for p in SOURCES], extra_cuda_cflags=NVCC_FLAGS,
                    extra_include_paths=[str(CSRC)])
    except Exception as e:  # compiler missing, build error: say so, with the build command
        return f"building the CUDA extension failed ({type(e).__name__}: {e}); {BUILD_HINT}"
