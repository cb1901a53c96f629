"""The Triton backend (fused_rnn/kernels/): whether its kernels can run a call.

rnn_linear's kernel (kernels/rnn_linear.py) holds I, H and O padded to a power
of two ≥ 16, at most ``MAX_BLOCK`` (256), with its weight tiles in shared
memory (see kernels.rnn_linear.launch_unsupported_reason); the layers' kernels
(kernels/elman.py, gru.py, lstm.py, one module per cell) answer for
themselves through their own ``unsupported_reason``. "auto" gives either only
CUDA tensors and padded sizes up to ``AUTO_MAX_BLOCK`` (128), where the static
report shows no spills, and, outside torch.compile, leaves to cuDNN the float32
calls of fewer than ``STREAMING_MIN_BATCH`` sequences (of up to
``STREAMING_MAX_STEPS`` steps) whose steps stream ``STREAMING_MIN_BYTES`` or
more of weights from shared memory, which cuDNN runs faster (see there).
"""

import importlib.util

import torch

from .request import KERNEL_DTYPES, LayerRequest, resolve_allow_tf32

NAME = "triton"

_KERNELS = None


# Why kernels() and layer_kernels() read no cache while torch.compile traces
# them: in the same compile the ops' fake implementations run the launchers in
# plain Python, which fill the caches; a guard Dynamo made when it read the empty
# cache then meets a module, which it cannot guard ("AssertionError: Unexpected
# type <class 'module'>", torch 2.11 on CUDA). Where nothing fills them, the store
# Dynamo traced fails that guard on the next call: a second compile. Under Dynamo
# the import statements cost nothing after the first: it imports for real.
def kernels():
    """The kernels module, or the reason it cannot be used (a string).

    Imported on first use: importing triton costs ~1 s and is not needed for the
    stock path (nor possible where triton is not installed: macOS, Windows).
    A plain global rather than functools.lru_cache, which torch.compile warns about.
    """
    if torch.compiler.is_compiling():
        return _load_kernels()    # no cache: see the comment above
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _load_kernels()
    return _KERNELS


# Whether triton is installed, looked up once without importing it. Under torch.compile an
# import statement that fails is not an ImportError the code can catch but Dynamo's
# "Unsupported: Import failure", so without triton (CUDA torch on Windows) a compiled call
# on CUDA tensors must not try the import to learn that it has to take the stock path.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _load_kernels():
    if not TRITON_INSTALLED:
        return _triton_missing("it is not installed")
    try:
        from ..kernels import rnn_linear as module
    except ImportError as e:  # triton broken (under torch.compile: Dynamo's "Import failure" instead)
        return _triton_missing(e)
    return _interpreter_mismatch(module) or module


def _triton_missing(why):
    return f"triton could not be imported ({why}); install it with `pip install triton` (Linux)"


# Cell name -> its Triton kernel module under fused_rnn.kernels.
KERNEL_MODULE_NAMES = {"rnn_tanh": "elman", "rnn_relu": "elman", "gru": "gru", "lstm": "lstm"}

# Which of those exist, looked up once without importing them (nor triton).
KERNEL_MODULE_EXISTS = {name: importlib.util.find_spec(f"fused_rnn.kernels.{name}") is not None
                        for name in set(KERNEL_MODULE_NAMES.values())}

# Cell name -> kernel module, or the sentence saying why it cannot be used; filled on first use.
_LAYER_KERNELS = {}


def _import_layer_kernels(name):
    # Import statements, which torch.compile traces (importlib.import_module
    # would break the graph when the first call is a compiled one).
    if name == "elman":
        from ..kernels import elman as module
    elif name == "gru":
        from ..kernels import gru as module
    else:
        from ..kernels import lstm as module
    return module


def layer_kernels(cell):
    """The cell's Triton kernel module (kernels/elman.py, gru.py, lstm.py), or why it cannot be used (a string).

    Imported on first use, after triton itself (``kernels()``: the import and
    the interpreter switch are shared with rnn_linear's kernel).
    """
    if torch.compiler.is_compiling():
        return _load_layer_kernels(cell)    # no cache: see the comment above kernels()
    module = _LAYER_KERNELS.get(cell)
    if module is None:
        module = _LAYER_KERNELS[cell] = _load_layer_kernels(cell)
    return module


def _load_layer_kernels(cell):
    module = kernels()
    name = KERNEL_MODULE_NAMES[cell]
    if isinstance(module, str):
        return module
    if not KERNEL_MODULE_EXISTS[name]:
        return f"there is no Triton kernel for cell {cell!r} yet (fused_rnn/kernels/{name}.py)"
    return _import_layer_kernels(name)


def _interpreter_mismatch(kernels):
    """A sentence if TRITON_INTERPRET was switched on after triton was imported, else None.

    triton decides interpreted or compiled per @triton.jit function when it is
    defined: triton.language's own helpers at ``import triton``, ours when the
    kernels module is imported (which decides ``INTERPRET_SET_LATE``, see there).
    """
    if kernels.INTERPRET_SET_LATE:
        return ("TRITON_INTERPRET=1 was set after triton was imported; set it in the environment "
                "before Python starts, or before the first import of triton")
    return None


# A float32 call whose steps stream at least STREAMING_MIN_BYTES of weights from shared memory (the
# kernel modules' streamed_weight_bytes; kernels.rnn_linear.streamed_bytes says why that is slow), with
# fewer than STREAMING_MIN_BATCH sequences: there "auto" leaves the call, outside torch.compile, to the
# stock path, cuDNN, the faster one. H200, torch 2.11, stock ÷ fused in the committed rows (e582b08),
# with the bytes each step streamed: the Elman RNN and head with
# 3xTF32 (fp32 without TF32) at B = 64: 0.34x at H = 128 (I = 64, 192 KiB; training 0.47x), 0.50 to
# 0.66x at H = 64 (I = 32, 48 KiB; T = 256 to 16384; 0.96x at T = 64, 1.11x at T = 16); at H = 64,
# T = 64: 0.80 to 0.91x for B = 1 to 64, 1.03x at B = 256, 1.62x at 1024, 3.70x at 4096. The TF32 GRU
# at H = 128, B = 64 (192 KiB): 0.48x (two layers, both directions: 0.58x). The seed's 3xTF32 forward
# (H = 20, I = 10: 12 KiB then, none since it splits its weights in the kernel) ran 1.66x faster than
# cuDNN: the line is drawn at the smallest stream
# measured slower. Not float16 (the one fp16 configuration measured
# streaming, the LSTM's training forward at H = 128, ran at 1.03x cuDNN's speed; it holds W_hh in
# registers since) nor bfloat16 (cuDNN has no bf16 RNN: the stock path is ATen's loop, 5 to 38x slower).
# Not under torch.compile: there the stock path is the registered plain op, a loop of T steps. Not
# where cuDNN is off or missing: the stock path is then ATen's loop (and torch.backends.cudnn.flags(
# enabled=False) is what cuDNN's own error advises for double backward, which the kernels give). Not
# past STREAMING_MAX_STEPS, the longest sequence cuDNN ran there: at T = 65,536 it refused the
# stock call (CUDNN_STATUS_NOT_SUPPORTED, B = 64, H = 64), which the kernels run in constant memory.
STREAMING_MIN_BYTES = 48 * 1024
STREAMING_MIN_BATCH = 256
STREAMING_MAX_STEPS = 16_384


def _streaming_reason(request, streamed_bytes):
    """Why "auto" leaves this call to cuDNN (a sentence), or None; ``streamed_bytes``: the kernel module's
    streamed_weight_bytes for it, called only where the dtype and the shape leave the question open.

    batch_size None: a caller whose stock path is not cuDNN (recurrence.run_layers and layer: their
    "torch" is the plain loop of T steps), or B unknown; the kernels then stay.
    """
    if request.dtype != torch.float32 or request.batch_size is None or torch.compiler.is_compiling():
        return None
    if not (torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()):
        return None
    # cuDNN's RNN takes its precision from torch.backends.cudnn.allow_tf32, not from the call's: where
    # they differ (allow_tf32=False given, TF32 on by PyTorch's default) it would compute at another one.
    if request.allow_tf32 != resolve_allow_tf32(None):
        return None
    # Under autocast a module's float32 call runs its layers in the autocast dtype (run_layers casts
    # them), where the kernels hold the weights in registers and ran faster than cuDNN (fp16 GRU 1.8x).
    if torch.is_autocast_enabled(request.device.type):
        return None
    if request.batch_size >= STREAMING_MIN_BATCH or (request.steps or 0) > STREAMING_MAX_STEPS:
        return None
    streamed = streamed_bytes()
    if streamed < STREAMING_MIN_BYTES:
        return None
    precision = "TF32" if request.allow_tf32 else "3xTF32 (fp32 without TF32)"
    return (f"backend='auto' leaves to cuDNN the float32 calls whose steps stream {STREAMING_MIN_BYTES // 1024} "
            f"KiB or more of weights from shared memory, below {STREAMING_MIN_BATCH} sequences of up to "
            f"{STREAMING_MAX_STEPS} steps (faster there on an H200), got hidden_size={request.hidden_size} with "
            f"{precision} products ({streamed // 1024} KiB a step), {request.batch_size} sequences of "
            f"{request.steps} steps")


def unsupported_reason(request, *, auto=False):
    """Why the Triton kernels cannot run this call (a sentence), or None if they can.

    request: a RnnLinearRequest or a LayerRequest. auto: also decline what
    "auto" leaves to the stock path (tensors off CUDA, padded sizes above
    AUTO_MAX_BLOCK), checked before triton is imported where the device alone decides.
    """
    if auto and request.device.type != "cuda":
        return f"backend='auto' runs the Triton kernel on CUDA tensors only, got a tensor on {request.device}"
    if isinstance(request, LayerRequest):
        return _layer_unsupported_reason(request, auto)
    module = kernels()
    if isinstance(module, str):
        return module
    reason = _placement_reason(request, "the Triton kernel runs", "the Triton kernel takes")
    if reason is not None:
        return reason
    sizes = (request.dtype, request.input_size, request.hidden_size, request.output_size, request.allow_tf32,
             request.needs_grad)
    reason = module.launch_unsupported_reason(*sizes)
    if reason is not None:
        return f"{reason}; use backend='auto' or 'torch'"
    if auto and not module.auto_takes(*sizes):
        return (f"backend='auto' gives the Triton kernel padded sizes up to {module.AUTO_MAX_BLOCK} (where the "
                f"static report shows no spills), got input_size={request.input_size}, "
                f"hidden_size={request.hidden_size}, output_size={request.output_size}")
    if auto:
        return _streaming_reason(request, lambda: module.streamed_weight_bytes(*sizes))
    return None


def _placement_reason(request, run, take):
    """Why tensors on this device or of this dtype cannot reach the kernels, or None; ``run``/``take``
    begin the sentences ("the Triton kernel runs", "... takes"), for either kind of request."""
    if request.device.type == "cpu" and not kernels().INTERPRETED:
        return (f"{run} on CPU tensors only through the Triton interpreter: set "
                "TRITON_INTERPRET=1 in the environment before triton is imported, or use backend='auto' "
                "or 'torch'")
    if request.device.type not in ("cuda", "cpu"):
        return f"{run} on CUDA tensors, got a tensor on {request.device}"
    if request.dtype not in KERNEL_DTYPES:
        return f"{take} float32, float16 or bfloat16, got {request.dtype}"
    return None


def _layer_unsupported_reason(request, auto):
    """unsupported_reason for a LayerRequest: the cell's kernel module's own check, after triton's and the device's."""
    module = layer_kernels(request.cell)
    if isinstance(module, str):
        return module
    reason = _placement_reason(request, "the Triton kernels run", "the Triton kernels take")
    if reason is not None:
        return reason
    reason = module.unsupported_reason(request.cell, request.dtype, request.hidden_size, request.allow_tf32,
                                       request.needs_grad)
    if reason is not None:
        return reason
    if auto and kernels().block(request.hidden_size) > kernels().AUTO_MAX_BLOCK:
        return (f"backend='auto' gives the Triton kernels padded hidden sizes up to {kernels().AUTO_MAX_BLOCK} "
                f"(where the static report shows no spills), got hidden_size={request.hidden_size}")
    if auto:
        return _streaming_reason(request, lambda: module.streamed_weight_bytes(
            request.cell, request.dtype, request.hidden_size, request.allow_tf32, request.needs_grad))
    return None
