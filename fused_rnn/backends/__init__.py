"""Backends of ``rnn_linear`` and of the layers (fused_rnn.recurrence), one module each, and the choice between them.

Each module (``triton``, ``cuda``, ``stock``) has one capability check,
``unsupported_reason(request, *, auto=False)``: a sentence saying why it
cannot run the call described by a RnnLinearRequest or a LayerRequest
(device, dtype, sizes, gradient, TF32, cell), or None. ``auto=True`` asks whether "auto" should take it.
``select_backend`` asks them in order.
"""

from . import cuda, stock, triton
from .request import KERNEL_DTYPES, LayerRequest, RnnLinearRequest, resolve_allow_tf32

# In the order "auto" asks them: the first that takes the call runs it, and the stock path takes every call.
BACKEND_MODULES = {module.NAME: module for module in (triton, cuda, stock)}
BACKENDS = ("auto", *BACKEND_MODULES)

__all__ = ["BACKENDS", "BACKEND_MODULES", "KERNEL_DTYPES", "LayerRequest", "RnnLinearRequest", "resolve_allow_tf32",
           "select_backend"]


def select_backend(backend, request):
    """The backend that runs the call ``request`` (RnnLinearRequest, LayerRequest) describes: "triton", "cuda", "torch".

    "auto" takes the first backend that accepts it (never "cuda": that kernel
    is not yet proven on a GPU). A forced "triton" or "cuda" that cannot run
    raises a RuntimeError saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        for name, module in BACKEND_MODULES.items():
            if module.unsupported_reason(request, auto=True) is None:
                return name
    reason = BACKEND_MODULES[backend].unsupported_reason(request)
    if reason is not None:
        raise RuntimeError(f"backend={backend!r} cannot run this call: {reason}")
    return backend
