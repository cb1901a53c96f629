"""``RnnLinearRequest`` and ``LayerRequest``: one ``rnn_linear`` or layer-stack call as the backends see it.

Every backend's ``unsupported_reason`` and ``select_backend`` take this one
object instead of x and the sizes threaded positionally: a new field (a cell,
a layer count) is one line here, not an edit of every signature.
"""

from typing import NamedTuple, Optional

import torch

# The dtypes the fused kernels (Triton and CUDA) take; float64 runs the stock path.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_allow_tf32(allow_tf32):
    """A TypeError unless None, True or False (a string "False" would otherwise read as True)."""
    if allow_tf32 is not None and not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be None, True or False, got {allow_tf32!r}")


def resolve_allow_tf32(allow_tf32):
    """None follows torch.backends.cudnn.allow_tf32 now, as nn.RNN does (a guard under torch.compile)."""
    check_allow_tf32(allow_tf32)
    if allow_tf32 is None:
        return bool(torch.backends.cudnn.allow_tf32)
    return allow_tf32


class RnnLinearRequest(NamedTuple):
    """Where a call runs, in what dtype, at what sizes, and with which options.

    A NamedTuple (immutable) rather than a frozen dataclass: the request is built
    inside ``rnn_linear``, which torch.compile traces, and Dynamo traces a
    NamedTuple's construction as a tuple's.
    """

    device: torch.device
    dtype: torch.dtype
    input_size: int
    hidden_size: int
    output_size: int
    needs_grad: bool = False
    allow_tf32: bool = False      # resolved: never None
    nonlinearity: str = "tanh"
    batch_size: Optional[int] = None   # B and T; None: not known (the backends then choose as for any)
    steps: Optional[int] = None

    @classmethod
    def of(cls, x, hidden_size, output_size, *, needs_grad=False, allow_tf32=None, nonlinearity="tanh"):
        """The request for input x [B, T, I] (only its device, dtype and shape are read)."""
        return cls(x.device, x.dtype, x.shape[2], hidden_size, output_size, bool(needs_grad),
                   resolve_allow_tf32(allow_tf32), nonlinearity, x.shape[0], x.shape[1])


class LayerRequest(NamedTuple):
    """One recurrent layer stack's call (fused_rnn.recurrence.run_layers) as the backends see it.

    A separate kind from RnnLinearRequest: a backend answers for layers by the
    cell's kernels (fused_rnn/kernels/elman.py, gru.py, lstm.py), not rnn_linear's.
    """

    cell: str                     # "rnn_tanh", "rnn_relu", "gru" or "lstm"
    device: torch.device
    dtype: torch.dtype
    hidden_size: int
    needs_grad: bool = False
    allow_tf32: bool = False      # resolved: never None
    batch_size: Optional[int] = None   # B and T; None: not known (the backends then choose as for any)
    steps: Optional[int] = None

    @classmethod
    def of(cls, cell, x, hidden_size, *, needs_grad=False, allow_tf32=None, batch_size=None, steps=None):
        """The request for layers over input x (only its device and dtype are read: x may be time-major
        or a PackedSequence's data, so the caller names B and T)."""
        return cls(cell, x.device, x.dtype, hidden_size, bool(needs_grad), resolve_allow_tf32(allow_tf32),
                   batch_size, steps)
