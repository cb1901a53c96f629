"""The Triton backend (fused_rnn/kernels/): whether its kernels can run a call.

The kernels hold I, H and O padded to a power of two ≥ 16, at most
``MAX_BLOCK`` (256), with their weight tiles in shared memory (see
kernels.rnn_linear.launch_unsupported_reason). "auto" gives them only CUDA
tensors and padded sizes up to ``AUTO_MAX_BLOCK`` (128), where the static
report shows no spills.
"""

from .request import KERNEL_DTYPES

NAME = "triton"

_KERNELS = None


def kernels():
    """The kernels module, or the reason it cannot be used (a string).

    Imported on first use: importing triton costs ~1 s and is not needed for the
    stock path (nor possible where triton is not installed: macOS, Windows).
    A plain global rather than functools.lru_cache, which torch.compile warns about.
    """
    global _KERNELS
    if _KERNELS is None:
        try:
            from ..kernels import rnn_linear as module
        except ImportError as e:  # triton missing or broken
            module = f"triton could not be imported ({e}); install it with `pip install triton` (Linux)"
        else:
            module = _interpreter_mismatch(module) or module   # decided once, at definition
        _KERNELS = module
    return _KERNELS


def _interpreter_mismatch(kernels):
    """A sentence if TRITON_INTERPRET was switched on after triton was imported, else None.

    triton decides interpreted or compiled per @triton.jit function when it is
    defined: triton.language's own helpers at ``import triton`` (which
    ``import fused_rnn`` does), ours when the kernels are first used. A kernel
    interpreted with compiled helpers fails inside the interpreter with
    "Cannot call @triton.jit'd outside of the scope of a kernel".
    """
    import triton.language as tl
    helpers_interpreted = type(tl.standard.sigmoid).__name__ == "InterpretedFunction"
    if kernels.INTERPRETED and not helpers_interpreted:
        return ("TRITON_INTERPRET=1 was set after triton was imported (import fused_rnn imports it); set it in "
                "the environment before Python starts, or before the first import of triton or fused_rnn")
    return None


def unsupported_reason(request, *, auto=False):
    """Why the Triton kernels cannot run this call (a sentence), or None if they can.

    request: a RnnLinearRequest. auto: also decline what "auto" leaves to the
    stock path (tensors off CUDA, padded sizes above AUTO_MAX_BLOCK), checked
    before triton is imported where the device alone decides.
    """
    if auto and request.device.type != "cuda":
        return f"backend='auto' runs the Triton kernel on CUDA tensors only, got a tensor on {request.device}"
    module = kernels()
    if isinstance(module, str):
        return module
    if request.device.type == "cpu" and not module.INTERPRETED:
        return ("the Triton kernel runs on CPU tensors only through the Triton interpreter: set "
                "TRITON_INTERPRET=1 in the environment before triton is imported, or use backend='auto' "
                "or 'torch'")
    if request.device.type not in ("cuda", "cpu"):
        return f"the Triton kernel runs on CUDA tensors, got a tensor on {request.device}"
    if request.dtype not in KERNEL_DTYPES:
        return f"the Triton kernel takes float32, float16 or bfloat16, got {request.dtype}"
    sizes = (request.dtype, request.input_size, request.hidden_size, request.output_size, request.allow_tf32,
             request.needs_grad)
    reason = module.launch_unsupported_reason(*sizes)
    if reason is not None:
        return f"{reason}; use backend='auto' or 'torch'"
    if auto and not module.auto_takes(*sizes):
        return (f"backend='auto' gives the Triton kernel padded sizes up to {module.AUTO_MAX_BLOCK} (where the "
                f"static report shows no spills), got input_size={request.input_size}, "
                f"hidden_size={request.hidden_size}, output_size={request.output_size}")
    return None
