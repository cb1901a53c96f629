"""The fused op registered with torch.library, for torch.compile, torch.export and CUDA graphs.

``torch.ops.fused_rnn.rnn_linear`` and ``torch.ops.fused_rnn.rnn_linear_bwd_sweep``
are custom ops (``fused_op`` below): torch.compile and torch.export see each as
one opaque op, so a compiled graph stays whole (fullgraph) and calls it. On
CUDA their bodies launch the Triton kernels; on other devices they call
``fused_rnn::rnn_linear_stock`` and ``fused_rnn::rnn_bwd_sweep_stock``, plain
custom ops running the stock math with shape-only fakes, so that T stays
symbolic. Autograd is registered with ``register_autograd`` and shares its
saving and products with the eager path (fused_rnn.ops.save_for_backward,
fused_rnn.ops.backward).

Eager calls of ``fused_rnn.rnn_linear`` do not go through these ops: the direct
launch skips the dispatcher. Under torch.compile ``rnn_linear`` calls them, so
the stock nn.RNN's graph break does not happen.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch._library.triton import set_wrap_triton_enabled
from torch.library import custom_op, infer_schema, wrap_triton

from .backends.stock import rnn_bwd_sweep_loop, rnn_states_stock
from .ops import _kernels, backward, save_for_backward


def fused_op(name):
    """Register the decorated function as the custom op ``name`` (returns its CustomOpDef).

    The body is written as for ``torch.library.triton_op`` (kernels launched
    through ``wrap_triton``) and registered as triton_op registers it, less the
    decomposition that lets Inductor inline the launches: compiled graphs call
    the op as a whole instead. Why not triton_op itself: torch 2.13's scans the
    body for kernels when it registers, which imports triton, torch._inductor
    and torch._dynamo, 1.3 s added to ``import fused_rnn``, and finds none here
    (they are behind ``_kernels()``).

    The body is its own fake: on fake CUDA tensors it allocates the outputs and
    launches nothing (kernels/rnn_linear.py's ``_launch`` returns before
    ``wrap_triton`` on fakes). Real calls launch directly, as under
    triton_op: ``wrap_triton``'s dispatch costs ~1 ms a call (torch's figure) and keeps every
    call's constant arguments in a table that only grows.
    """
    def register(fn):
        def launch(*args, **kwargs):
            with set_wrap_triton_enabled(False):
                return fn(*args, **kwargs)

        op = custom_op(name, launch, mutates_args=(), schema=infer_schema(fn, mutates_args=()))
        op.register_fake(fn)
        return op
    return register


# Off CUDA the ops' bodies call these plain custom ops. fused_op makes a body
# its own fake, so under torch.compile it is traced with fake tensors: the stock
# math traced there would unroll the time loop and fix T, and every new T would
# recompile. These have shape-only fakes, so T stays symbolic.
@torch.library.custom_op("fused_rnn::rnn_linear_stock", mutates_args=())
def rnn_linear_stock_op(
    x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor],
    fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], lengths: Optional[torch.Tensor], relu: bool, store_hs: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stock math of fused_rnn::rnn_linear: (y [B, O], h_n [B, H], hs [B, T, H] fp32 or empty)."""
    states = rnn_states_stock(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, lengths, "relu" if relu else "tanh")
    # Outputs of a custom op may not alias each other, and are contiguous as the fake says.
    h_n = states[:, -1].clone(memory_format=torch.contiguous_format)
    y = F.linear(h_n, fc_weight, fc_bias)
    hs = (states.to(torch.float32, memory_format=torch.contiguous_format, copy=True) if store_hs
          else x.new_empty(0, dtype=torch.float32))
    return y, h_n, hs


@rnn_linear_stock_op.register_fake
def _(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, relu, store_hs):
    B, T, _ = x.shape
    H, O = weight_hh.shape[0], fc_weight.shape[0]
    hs = x.new_empty((B, T, H) if store_hs else (0,), dtype=torch.float32)
    return x.new_empty(B, O), x.new_empty(B, H), hs


@torch.library.custom_op("fused_rnn::rnn_bwd_sweep_stock", mutates_args=())
def rnn_bwd_sweep_stock_op(
    hs: torch.Tensor, weight_hh: torch.Tensor, fc_weight: torch.Tensor, dy: torch.Tensor,
    dh_n: Optional[torch.Tensor], lengths: Optional[torch.Tensor], relu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse-time sweep in plain PyTorch: (g [B, T, H], dh0 [B, H]), fp32."""
    return rnn_bwd_sweep_loop(hs, weight_hh, fc_weight, dy, dh_n, lengths, "relu" if relu else "tanh")


@rnn_bwd_sweep_stock_op.register_fake
def _(hs, weight_hh, fc_weight, dy, dh_n, lengths, relu):
    return torch.empty_like(hs), hs.new_empty(hs.shape[0], hs.shape[2])


@fused_op("fused_rnn::rnn_linear")
def rnn_linear_op(
    x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor],
    fc_weight: torch.Tensor, fc_bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], lengths: Optional[torch.Tensor],
    relu: bool, allow_tf32: bool, store_hs: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [B, T, I]; h0: [B, H] or None; lengths: [B] int64 on x's device or None.

    Returns (y [B, O], h_n [B, H], hs): hs is the [B, T, H] fp32 states when
    store_hs (for the backward), else an empty tensor.
    """
    if x.device.type == "cuda":
        y, h_n, hs = _kernels().rnn_linear_fwd(
            x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths,
            relu=relu, allow_tf32=allow_tf32, store_hn=True, store_hs=store_hs, wrap=wrap_triton)
    else:
        y, h_n, hs = rnn_linear_stock_op(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0,
                                         lengths, relu, store_hs)
    if hs is None:
        hs = x.new_empty(0, dtype=torch.float32)
    return y, h_n, hs


@fused_op("fused_rnn::rnn_linear_bwd_sweep")
def rnn_linear_bwd_sweep_op(
    hs: torch.Tensor, weight_hh: torch.Tensor, fc_weight: torch.Tensor, dy: torch.Tensor,
    dh_n: Optional[torch.Tensor], lengths: Optional[torch.Tensor], relu: bool, allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hs: [B, T, H] fp32; dy: [B, O]; dh_n: [B, H] or None. Returns (g [B, T, H], dh0 [B, H]), fp32."""
    if hs.device.type == "cuda":
        return _kernels().rnn_linear_bwd_sweep(hs, weight_hh, fc_weight, dy, dh_n, lengths, relu=relu,
                                               allow_tf32=allow_tf32, wrap=wrap_triton)
    return rnn_bwd_sweep_stock_op(hs, weight_hh, fc_weight, dy, dh_n, lengths, relu)


def _setup_context(ctx, inputs, output):
    x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, relu, allow_tf32, _ = inputs
    save_for_backward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, output[2],
                      relu, allow_tf32)


def _backward(ctx, dy, dh_n, _dhs):
    if ctx.saved_tensors[-1].numel() == 0:
        raise RuntimeError("fused_rnn::rnn_linear was called with store_hs=False and cannot be differentiated")
    # In the op's argument order; lengths, relu, allow_tf32 and store_hs get none.
    return *backward(ctx, dy, dh_n, rnn_linear_bwd_sweep_op), None, None, None, None


rnn_linear_op.register_autograd(_backward, setup_context=_setup_context)
