"""The cell-agnostic driver: backend choice, autograd and registered ops for one recurrent layer, and stacking.

Layers, from the bottom: a cell's kernel module (fused_rnn/kernels/elman.py,
gru.py, lstm.py: Triton) or its plain-PyTorch twin (recurrence_stock.py) runs
one layer's recurrence in one direction, the layer contract of
fused_rnn/cells/__init__.py → ``_RecurrenceFunction`` (eager autograd) and the
registered ops ``fused_rnn::recurrence`` / ``fused_rnn::recurrence_bwd``
(torch.compile, torch.export) → ``layer`` (the input GEMM, then the
recurrence) → ``run_layers`` (num_layers × directions, dropout between layers)
→ the modules. A bidirectional layer of a cell whose kernel module launches
both directions at once (Elman: ``bidirectional_fwd`` / ``_bwd``) runs as
``bidirectional_layer`` instead, one input GEMM and one launch each way, with
its own Function and ops (``fused_rnn::bidirectional_recurrence`` / ``_bwd``).
The backend is chosen by fused_rnn.backends (a LayerRequest), through
``select_layer_backend``.

Eager calls launch the kernels directly (no dispatcher); under torch.compile
the ops keep the graph whole, one op per layer and direction. On CUDA the ops'
bodies call the kernels; elsewhere, and on CUDA for backend "torch" (``plain``),
they call plain custom ops with shape-only fakes (``fused_rnn::recurrence_torch``,
``fused_rnn::recurrence_bwd_torch``), so T stays symbolic. Both autograd paths share ``save_for_backward`` and
``backward``: the sweep (kernel or op) gives ∂L/∂xp and ∂L/∂gh, and the
weight gradients are one GEMM over all B·T steps.
"""

import functools
import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from torch.compiler import is_compiling
from torch.library import wrap_triton

from . import backends
from . import recurrence_stock as stock
from .backends import LayerRequest, resolve_allow_tf32
from .backends import triton as triton_backend
from .cells import cell as get_cell
from .library import fused_op
from .ops import (_under_functorch, autocast_low_dtype, cast_floating, check_lengths, plain_math_backward,
                  shape_only)

# The backends a layer stack may name; "cuda" is refused by its capability check (no layer kernel in csrc).
BACKENDS = backends.BACKENDS


def kernel_module(cell):
    """The cell's Triton kernel module, or the reason it cannot be used (a string): backends.triton's."""
    return triton_backend.layer_kernels(cell)


def select_layer_backend(cell, x, hidden_size, *, backend, needs_grad, allow_tf32, batch_size=None, steps=None):
    """"triton" or "torch": what runs the layers of this call (backends.select_backend on a LayerRequest).

    "auto": the kernels on CUDA tensors where the cell's kernel module exists and
    launches this configuration with a padded hidden size up to AUTO_MAX_BLOCK
    (128: where the static report shows no spills), else the plain path.
    "triton": the kernels or a RuntimeError saying why not; "cuda": a
    RuntimeError (no layer kernel). Neither runs the kernels inside torch.func
    transforms (the Function has no functorch rules).

    batch_size, steps: B and T, named only by the callers whose stock path is cuDNN's (the
    modules' _VF call), to which "auto" leaves some float32 calls of few sequences
    (backends.triton._streaming_reason). ``layer`` and ``run_layers`` name neither: their
    "torch" is recurrence_stock's loop of T steps of PyTorch ops, not cuDNN.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    get_cell(cell)
    if backend in ("auto", "triton") and _under_functorch():
        if backend == "auto":
            return "torch"
        raise RuntimeError("backend='triton' cannot run inside torch.func transforms (grad, jvp, vmap, "
                           "functional_call under them); use backend='auto' or 'torch', which run the plain "
                           "math there")
    if backend in ("auto", "triton") and torch.jit.is_tracing():
        # jit.trace records dispatcher ops only: an eager kernel launch would be missing from the trace.
        if backend == "auto":
            return "torch"
        raise RuntimeError("backend='triton' cannot run under torch.jit.trace (the tracer does not record "
                           "Triton launches); use backend='auto' or 'torch', or torch.compile / torch.export")
    request = LayerRequest.of(cell, x, hidden_size, needs_grad=needs_grad, allow_tf32=allow_tf32,
                              batch_size=batch_size, steps=steps)
    return backends.select_backend(backend, request)


# --- registered ops -----------------------------------------------------------------------------------------

def _empty(like, dtype=None):
    """The stand-in for an absent tensor result (custom ops return tensors only)."""
    return like.new_empty(0, dtype=dtype)


def _present(t):
    """t, or None where it is the empty stand-in for an absent tensor."""
    return t if t is not None and t.dim() != 1 else None


def _head(fc_w, fc_b):
    """The layer forwards' ``head`` argument from the ops' two: (fc_w, fc_b), or None without fc_w."""
    return (fc_w, fc_b) if fc_w is not None else None


def _fill_forward(xp, out, h_n, c_n, hs, aux):
    """recurrence_fwd's results with an empty tensor for each None."""
    wide = stock.wide_dtype(xp.dtype)
    return (out if out is not None else _empty(xp), h_n, c_n if c_n is not None else _empty(xp),
            hs if hs is not None else _empty(xp, wide), aux if aux is not None else _empty(xp, wide))


# Off CUDA the ops' bodies call these plain custom ops: fused_op makes a body its
# own fake, and the plain loop traced with fake tensors would unroll T steps
# and recompile for every new T. These fakes give shapes only.
@torch.library.custom_op("fused_rnn::recurrence_torch", mutates_args=())
def recurrence_torch_op(
    cell: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor], h0: Optional[torch.Tensor],
    c0: Optional[torch.Tensor], lengths: Optional[torch.Tensor], reverse: bool, store_out: bool,
    store_saved: bool, fc_w: Optional[torch.Tensor] = None, fc_b: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """recurrence_stock.recurrence_fwd with empty tensors for the absent results."""
    return _fill_forward(xp, *stock.recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                                   store_out=store_out, store_saved=store_saved,
                                                   head=_head(fc_w, fc_b)))


@recurrence_torch_op.register_fake
def _(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, store_out, store_saved, fc_w=None, fc_b=None):
    spec = get_cell(cell)
    B, T, _ = xp.shape
    H = w_hh.shape[1]
    wide = stock.wide_dtype(xp.dtype)
    return (xp.new_empty(B, fc_w.shape[0]) if fc_w is not None else xp.new_empty(B, T, H) if store_out else _empty(xp),
            xp.new_empty(B, H),
            xp.new_empty(B, H) if spec.has_cell_state else _empty(xp),
            xp.new_empty(B, T, H, dtype=wide) if store_saved else _empty(xp, wide),
            xp.new_empty(B, T, stock.aux_size(cell, H), dtype=wide) if store_saved else _empty(xp, wide))


@torch.library.custom_op("fused_rnn::recurrence_bwd_torch", mutates_args=())
def recurrence_bwd_torch_op(
    cell: str, hs: torch.Tensor, aux: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], c0: Optional[torch.Tensor], dout: Optional[torch.Tensor],
    dh_n: Optional[torch.Tensor], dc_n: Optional[torch.Tensor], lengths: Optional[torch.Tensor], reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """recurrence_stock.recurrence_bwd: (dxp, dgh, dh0, dc0 or empty)."""
    dxp, dgh, dh0, dc0 = stock.recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths,
                                              reverse=reverse)
    return dxp, dgh, dh0, dc0 if dc0 is not None else _empty(hs)


@recurrence_bwd_torch_op.register_fake
def _(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, reverse):
    B, T, H = hs.shape
    return (hs.new_empty(B, T, w_hh.shape[0]), hs.new_empty(B, T, w_hh.shape[0]), hs.new_empty(B, H),
            hs.new_empty(B, H) if get_cell(cell).has_cell_state else _empty(hs))


def _contiguous(*tensors):
    """The tensors the kernels read with fixed strides, contiguous (None stays None). ``layer`` makes them so
    where it chooses the kernels; a program traced where it chose the plain path (exported on CPU,
    where "auto" is "torch") and run on CUDA passes them as the model holds them (a transposed
    fc.weight, say)."""
    return [t.contiguous() if t is not None else None for t in tensors]


def _cuda_kernels(cell):
    module = kernel_module(cell)
    if isinstance(module, str):
        raise RuntimeError(f"fused_rnn::recurrence cannot run on CUDA: {module}")
    return module


@fused_op("fused_rnn::recurrence")
def recurrence_op(
    cell: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor], h0: Optional[torch.Tensor],
    c0: Optional[torch.Tensor], lengths: Optional[torch.Tensor], reverse: bool, allow_tf32: bool,
    store_out: bool, store_saved: bool, plain: bool, fc_w: Optional[torch.Tensor] = None,
    fc_b: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's recurrence in one direction (the kernels' recurrence_fwd, contract.md).

    Returns (out, h_n, c_n, hs, aux), an empty tensor for each absent one
    (out without store_out, c_n for cells without c, hs and aux without store_saved);
    with fc_w (a fused head, fc_b or None beside it) y = h_n fc_wᵀ + fc_b in out's place.
    plain: the plain-PyTorch contract on CUDA too (backend "torch": a configuration the kernels do not take).
    """
    if xp.device.type == "cuda" and not plain:
        w_hh, b_hh, h0, c0, lengths, fc_w, fc_b = _contiguous(w_hh, b_hh, h0, c0, lengths, fc_w, fc_b)
        return _fill_forward(xp, *_cuda_kernels(cell).recurrence_fwd(
            cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse, allow_tf32=allow_tf32, store_out=store_out,
            store_saved=store_saved, head=_head(fc_w, fc_b), wrap=wrap_triton))
    return recurrence_torch_op(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, store_out, store_saved, fc_w, fc_b)


@fused_op("fused_rnn::recurrence_bwd")
def recurrence_bwd_op(
    cell: str, hs: torch.Tensor, aux: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], c0: Optional[torch.Tensor], dout: Optional[torch.Tensor],
    dh_n: Optional[torch.Tensor], dc_n: Optional[torch.Tensor], lengths: Optional[torch.Tensor], reverse: bool,
    allow_tf32: bool, plain: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reverse-time sweep (the kernels' recurrence_bwd): (dxp, dgh, dh0, dc0).

    dgh is empty where it equals dxp (outputs of a custom op may not alias), and
    dc0 for cells without c. plain: as fused_rnn::recurrence's.
    """
    if hs.device.type == "cuda" and not plain:
        w_hh, lengths = _contiguous(w_hh, lengths)
        dxp, dgh, dh0, dc0 = _cuda_kernels(cell).recurrence_bwd(
            cell, hs, _present(aux), w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, reverse=reverse,
            allow_tf32=allow_tf32, wrap=wrap_triton)
        return dxp, _empty(dxp) if dgh is dxp else dgh, dh0, dc0 if dc0 is not None else _empty(dh0)
    return recurrence_bwd_torch_op(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, reverse)


def _op_sweep(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, *, reverse, allow_tf32, plain):
    """recurrence_bwd through the registered op, with the kernel modules' results (None, dgh is dxp)."""
    dxp, dgh, dh0, dc0 = recurrence_bwd_op(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, reverse,
                                           allow_tf32, plain)
    return dxp, _present(dgh) if _present(dgh) is not None else dxp, dh0, _present(dc0)


# --- autograd, shared by the eager Function and the op --------------------------------------------------------

def save_for_backward(ctx, cell, xp, w_hh, b_hh, h0, c0, lengths, hs, aux, reverse, allow_tf32, projection=None,
                      head=None, head_at=None):
    """Save on an autograd ctx what ``backward`` needs (eager Function and registered op alike).

    projection: (x, w_ih, b_ih), what xp was computed from, for double backward
    (which recomputes xp). Not xp itself: it would keep B·T·G·H more elements
    alive per layer and direction, while F.linear's backward holds x and w_ih anyway.
    head: (fc_w, fc_b, h_n) of a fused head, None without one; head_at: fc_w's place among the
    inputs (fc_b's the next), whose needs_input_grad says which of their gradients to give.
    """
    ctx.save_for_backward(w_hh, b_hh, h0, c0, lengths, hs, aux, *(projection or (None, None, None)),
                          *(head or (None, None, None)))
    ctx.cell, ctx.reverse, ctx.allow_tf32, ctx.xp_dtype = cell, reverse, allow_tf32, xp.dtype
    ctx.has_head, ctx.head_at = head is not None, head_at


def states_before(hs, h0, lengths, reverse):
    """[B, T, H]: the state each step started from (h_{t-1}; reverse: h_{t+1}); 0 past a length.

    hs: [B, T, H] the state after each position, 0 past a length; h0: [B, H] or None (zeros).
    A sequence's first processed step (t = 0; reverse: t = len_b - 1) reads h0.
    """
    B, T, H = hs.shape
    first = h0.to(hs.dtype)[:, None] if h0 is not None else hs.new_zeros(B, 1, H)
    before = torch.cat([hs[:, 1:], first] if reverse else [first, hs[:, :-1]], dim=1)
    if lengths is None:
        return before
    steps = torch.arange(T, device=hs.device)[None, :, None]
    if reverse:
        before = torch.where(steps == lengths[:, None, None] - 1, first, before)
    # Past a length the gradient is 0, but 0 · NaN would not be: a where, not a product. (Forward, the
    # step after the last holds the last state, which may be NaN or inf, as a relu state can be.)
    return torch.where(steps < lengths[:, None, None], before, 0)


def backward(ctx, dout, dh_n, dc_n, sweep, differentiable=False):
    """Gradients of (xp, w_hh, b_hh, h0, c0, fc_w, fc_b), None where not needed (fc_w, fc_b: without a head).

    ``sweep`` is the kernels' recurrence_bwd or ``_op_sweep``; dW_hh = Σ_t dgh_tᵀ h_{t-1}
    and db_hh = Σ_t dgh_t are then single products over all B·T steps, in fp32.
    With a fused head ``dout`` is ∂L/∂y: the sweep starts from dh_n + dy·fc_W, and
    dfc_W = dyᵀ h_n, dfc_b = Σ_b dy (fp32 products, float64 for float64, as rnn_linear's backward).
    differentiable: build a graph of the gradients (create_graph=True) by
    differentiating the plain loop instead; the sweep is not differentiable.
    """
    if differentiable:
        return _differentiable_backward(ctx, dout, dh_n, dc_n)
    saved = ctx.saved_tensors   # once: torch.utils.checkpoint(use_reentrant=False) refuses a second unpack
    w_hh, b_hh, h0, c0, lengths, hs, aux = saved[:7]
    need_xp, need_w_hh, need_b_hh, need_h0, need_c0 = ctx.needs_input_grad[1:6]
    dfc_w = dfc_b = None
    if ctx.has_head:
        fc_w, fc_b, h_n = saved[10:13]
        dy, dout = dout, None
        if dy is not None:
            wide = hs.dtype   # fp32 (float64 for float64), as the sweep's
            dy = dy.to(wide)
            from_head = dy @ fc_w.to(wide)
            dh_n = from_head if dh_n is None else dh_n.to(wide) + from_head
            if ctx.needs_input_grad[ctx.head_at]:
                dfc_w = (dy.T @ h_n.to(wide)).to(fc_w.dtype)
            if fc_b is not None and ctx.needs_input_grad[ctx.head_at + 1]:
                dfc_b = dy.sum(0).to(fc_b.dtype)
        if not any(ctx.needs_input_grad[1:6]):   # only the head's weights (a frozen recurrent layer)
            return None, None, None, None, None, dfc_w, dfc_b
    dxp, dgh, dh0, dc0 = sweep(ctx.cell, hs, _present(aux), w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths,
                               reverse=ctx.reverse, allow_tf32=ctx.allow_tf32)
    B, T, H = hs.shape
    dw_hh = db_hh = None
    if need_w_hh:
        before = states_before(hs, h0, lengths, ctx.reverse)
        dw_hh = (dgh.reshape(B * T, -1).T @ before.reshape(B * T, H)).to(w_hh.dtype)
    if need_b_hh and b_hh is not None:
        db_hh = dgh.sum((0, 1)).to(b_hh.dtype)
    return (dxp.to(ctx.xp_dtype) if need_xp else None, dw_hh, db_hh,
            dh0.to(h0.dtype) if need_h0 else None,
            dc0.to(c0.dtype) if need_c0 and dc0 is not None else None, dfc_w, dfc_b)


def _differentiable_backward(ctx, dout, dh_n, dc_n):
    """backward's gradients as differentiable functions of the inputs and of dout, dh_n, dc_n.

    Recomputes xp from the saved projection and the layer with
    recurrence_stock.recurrence_unrolled (fp32, or float64 for float64), and
    differentiates it with create_graph=True.
    """
    w_hh, b_hh, h0, c0, lengths, _, _, x, w_ih, b_ih, fc_w, fc_b, _ = ctx.saved_tensors
    if x is None:
        raise RuntimeError("double backward (create_graph=True) does not go through fused_rnn::recurrence, the op "
                           "torch.compile calls (compiled graphs have no double backward either); run the model "
                           "eagerly for higher-order gradients")
    # The gradients backward returns: xp, w_hh, b_hh, h0, c0 (inputs 1-5), fc_w, fc_b.
    head_needs = ctx.needs_input_grad[ctx.head_at:ctx.head_at + 2] if ctx.has_head else (False, False)
    needs = ctx.needs_input_grad[1:6] + tuple(head_needs)
    wanted = [i for i, need in enumerate(needs) if need]
    with torch.enable_grad():
        xp = input_projection(x, w_ih, b_ih)
        inputs = (xp, w_hh, b_hh, h0, c0, fc_w, fc_b)
        results = stock.recurrence_unrolled(ctx.cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=ctx.reverse,
                                            store_out=not ctx.has_head)
        if ctx.has_head:   # the first output is y = fc(h_n), as the forward's
            h_n = results[1]
            results = (F.linear(h_n, fc_w.to(h_n.dtype), None if fc_b is None else fc_b.to(h_n.dtype)),
                       *results[1:])
        outputs, grad_outputs = [], []
        for result, grad in zip(results, (dout, dh_n, dc_n)):
            if result is not None and grad is not None:
                outputs.append(result)
                grad_outputs.append(grad.to(result.dtype))
        grads = torch.autograd.grad(outputs, [inputs[i] for i in wanted], grad_outputs, create_graph=True,
                                    allow_unused=True)
    gradients = [None] * 7
    for i, grad in zip(wanted, grads):
        gradients[i] = grad
    return tuple(gradients)


def _setup_context(ctx, inputs, output):
    cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, allow_tf32, _, _, plain, fc_w, fc_b = inputs
    save_for_backward(ctx, cell, xp, w_hh, b_hh, h0, c0, lengths, output[3], output[4], reverse, allow_tf32,
                      head=None if fc_w is None else (fc_w, fc_b, output[1]), head_at=_OP_FC_W_AT)
    # hs says whether the states were saved (aux may be empty with them: Elman kernels). Noted here: backward
    # reads ctx.saved_tensors once (torch.utils.checkpoint(use_reentrant=False) refuses a second unpack).
    ctx.plain, ctx.states_saved = plain, output[3].dim() == 3


def _op_backward(ctx, dout, dh_n, dc_n, _dhs, _daux):
    if not ctx.states_saved:
        raise RuntimeError("fused_rnn::recurrence was called with store_saved=False and cannot be differentiated")
    grads = backward(ctx, _present(dout), dh_n, _present(dc_n), functools.partial(_op_sweep, plain=ctx.plain),
                     differentiable=plain_math_backward(dout, dh_n, dc_n))
    # In the op's argument order: cell, the five tensors, lengths and the five flags, then fc_w and fc_b.
    return None, *grads[:5], None, None, None, None, None, None, *grads[5:]


recurrence_op.register_autograd(_op_backward, setup_context=_setup_context)
# fc_w's place among the op's inputs (fc_b's the next): which head gradients needs_input_grad asks for.
_OP_FC_W_AT = [arg.name for arg in torch.ops.fused_rnn.recurrence.default._schema.arguments].index("fc_w")


class _RecurrenceFunction(torch.autograd.Function):
    """The kernels' forward and backward (eager), in the registered op's argument order (less ``plain``), then
    x, w_ih, b_ih.

    Returns (out or None, h_n, c_n or None); with fc_w (a fused head) y in out's place. Its backward
    is differentiable (double backward) when autograd asks for a graph (create_graph=True).
    """

    @staticmethod
    def forward(ctx, cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, allow_tf32, store_out, fc_w, fc_b, x, w_ih,
                b_ih):
        # x, w_ih, b_ih: what xp was computed from, kept for double backward only
        # (their gradients reach them through xp's own graph).
        out, h_n, c_n, hs, aux = kernel_module(cell).recurrence_fwd(
            cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse, allow_tf32=allow_tf32, store_out=store_out,
            store_saved=True, head=_head(fc_w, fc_b))
        save_for_backward(ctx, cell, xp, w_hh, b_hh, h0, c0, lengths, hs, aux, reverse, allow_tf32,
                          (x, w_ih, b_ih), head=None if fc_w is None else (fc_w, fc_b, h_n),
                          head_at=_FUNCTION_FC_W_AT)
        # An unused output's gradient arrives as None instead of a zero tensor.
        ctx.set_materialize_grads(False)
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n):
        grads = backward(ctx, dout, dh_n, dc_n, kernel_module(ctx.cell).recurrence_bwd,
                         differentiable=plain_math_backward(dout, dh_n, dc_n))
        # cell, the five tensors, lengths, reverse, allow_tf32, store_out, fc_w, fc_b, then x, w_ih, b_ih.
        return None, *grads[:5], None, None, None, None, *grads[5:], None, None, None

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError("fused_rnn's Triton path has no forward-mode AD (torch.func.jvp, torch.autograd."
                           "forward_ad); use backend='auto' or 'torch'")


# fc_w's place among the Function's inputs (forward's parameters less ctx), as _OP_FC_W_AT for the op.
_FUNCTION_FC_W_AT = list(inspect.signature(_RecurrenceFunction.forward).parameters).index("fc_w") - 1


# --- both directions in one launch (Elman) --------------------------------------------------------------------
#
# A bidirectional Elman layer on the kernel path runs as one input GEMM (both
# directions' W_ih stacked, [2·H, I]), one forward launch and one backward
# launch (kernels/elman.py's bidirectional_fwd / _bwd, grid axis 1 = direction),
# and one batched GEMM per weight gradient; under torch.compile one
# fused_rnn::bidirectional_recurrence per layer instead of two fused_rnn::recurrence.

def fuses_directions(cell, backend):
    """Whether a bidirectional layer of this cell runs both directions in one launch on this backend."""
    if backend != "triton":
        return False
    module = kernel_module(cell)
    return not isinstance(module, str) and hasattr(module, "bidirectional_fwd")


def _fill_bidirectional(xp, out, h_n, hs, aux):
    wide = stock.wide_dtype(xp.dtype)
    return (out if out is not None else _empty(xp), h_n, hs if hs is not None else _empty(xp, wide),
            aux if aux is not None else _empty(xp, wide))


@torch.library.custom_op("fused_rnn::bidirectional_recurrence_torch", mutates_args=())
def bidirectional_torch_op(
    cell: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor], h0: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor], store_out: bool, store_saved: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """recurrence_stock.bidirectional_fwd with empty tensors for the absent results."""
    return _fill_bidirectional(xp, *stock.bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths, store_out=store_out,
                                                            store_saved=store_saved))


@bidirectional_torch_op.register_fake
def _(cell, xp, w_hh, b_hh, h0, lengths, store_out, store_saved):
    B, T, _ = xp.shape
    H = w_hh.shape[-1]
    wide = stock.wide_dtype(xp.dtype)
    saved = (2, B, T, H) if store_saved else (0,)
    return (xp.new_empty(B, T, 2 * H) if store_out else _empty(xp), xp.new_empty(2, B, H),
            xp.new_empty(saved, dtype=wide), xp.new_empty(saved, dtype=wide))


@torch.library.custom_op("fused_rnn::bidirectional_recurrence_bwd_torch", mutates_args=())
def bidirectional_bwd_torch_op(
    cell: str, hs: torch.Tensor, aux: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], dout: Optional[torch.Tensor], dh_n: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """recurrence_stock.bidirectional_bwd: (dxp [B, T, 2·H], dh0 [2, B, H])."""
    return stock.bidirectional_bwd(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths)


@bidirectional_bwd_torch_op.register_fake
def _(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths):
    _, B, T, H = hs.shape
    return hs.new_empty(B, T, 2 * H), hs.new_empty(2, B, H)


@fused_op("fused_rnn::bidirectional_recurrence")
def bidirectional_op(
    cell: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor], h0: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor], allow_tf32: bool, store_out: bool, store_saved: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both directions of a bidirectional layer (the kernels' bidirectional_fwd).

    xp [B, T, 2·H], w_hh [2, H, H], b_hh [2, H] or None, h0 [2, B, H] or None.
    Returns (out [B, T, 2·H], h_n [2, B, H], hs [2, B, T, H], aux), an empty
    tensor for each absent one (out without store_out; hs and aux without
    store_saved; aux always on CUDA, where the kernels' backward reads the states alone).
    """
    if xp.device.type == "cuda":
        out, h_n, _, hs, _ = _cuda_kernels(cell).bidirectional_fwd(
            cell, xp, w_hh, b_hh, h0, lengths, allow_tf32=allow_tf32, store_out=store_out, store_saved=store_saved,
            wrap=wrap_triton)
        return _fill_bidirectional(xp, out, h_n, hs, None)
    return bidirectional_torch_op(cell, xp, w_hh, b_hh, h0, lengths, store_out, store_saved)


@fused_op("fused_rnn::bidirectional_recurrence_bwd")
def bidirectional_bwd_op(
    cell: str, hs: torch.Tensor, aux: torch.Tensor, w_hh: torch.Tensor, b_hh: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], dout: Optional[torch.Tensor], dh_n: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor], allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions' backward sweeps (the kernels' bidirectional_bwd): (dxp = dgh [B, T, 2·H], dh0 [2, B, H])."""
    if hs.device.type == "cuda":
        dxp, _, dh0, _ = _cuda_kernels(cell).bidirectional_bwd(cell, hs, w_hh, dout, dh_n, lengths,
                                                               allow_tf32=allow_tf32, wrap=wrap_triton)
        return dxp, dh0
    return bidirectional_bwd_torch_op(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths)


def _kernel_bidirectional_sweep(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths, *, allow_tf32):
    dxp, _, dh0, _ = kernel_module(cell).bidirectional_bwd(cell, hs, w_hh, dout, dh_n, lengths,
                                                           allow_tf32=allow_tf32)
    return dxp, dh0


def _op_bidirectional_sweep(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths, *, allow_tf32):
    return bidirectional_bwd_op(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths, allow_tf32)


def save_for_backward_bidirectional(ctx, cell, xp, w_hh, b_hh, h0, lengths, hs, aux, allow_tf32, projection=None):
    """As save_for_backward, for both directions' stacked tensors (eager Function and op alike)."""
    ctx.save_for_backward(w_hh, b_hh, h0, lengths, hs, aux, *(projection or (None, None, None)))
    ctx.cell, ctx.allow_tf32, ctx.xp_dtype = cell, allow_tf32, xp.dtype


def backward_bidirectional(ctx, dout, dh_n, sweep, differentiable=False):
    """Gradients of (xp, w_hh, b_hh, h0) of both directions, None where not needed.

    One sweep for both directions; dW_hh [2, H, H] = Σ_t dgh_tᵀ h_{t-1} per
    direction as one batched product over all B·T steps, db_hh [2, H] = Σ_t dgh_t, in fp32.
    differentiable: as backward's (the plain loop per direction, differentiated).
    """
    if differentiable:
        return _differentiable_backward_bidirectional(ctx, dout, dh_n)
    w_hh, b_hh, h0, lengths, hs, aux = ctx.saved_tensors[:6]
    need_xp, need_w_hh, need_b_hh, need_h0 = ctx.needs_input_grad[1:5]
    dxp, dh0 = sweep(ctx.cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths, allow_tf32=ctx.allow_tf32)
    _, B, T, H = hs.shape
    dgh = dxp.reshape(B * T, 2, H)   # Elman: ∂L/∂gh = ∂L/∂xp
    dw_hh = db_hh = None
    if need_w_hh:
        before = torch.stack([states_before(hs[d], h0[d] if h0 is not None else None, lengths, d == 1)
                              for d in (0, 1)])
        dw_hh = torch.bmm(dgh.permute(1, 2, 0), before.reshape(2, B * T, H)).to(w_hh.dtype)
    if need_b_hh and b_hh is not None:
        db_hh = dgh.sum(0).to(b_hh.dtype)
    return (dxp.to(ctx.xp_dtype) if need_xp else None, dw_hh, db_hh, dh0.to(h0.dtype) if need_h0 else None)


def _differentiable_backward_bidirectional(ctx, dout, dh_n):
    """backward_bidirectional's gradients as differentiable functions (see _differentiable_backward)."""
    w_hh, b_hh, h0, lengths, _, _, x, w_ih, b_ih = ctx.saved_tensors
    if x is None:
        raise RuntimeError("double backward (create_graph=True) does not go through "
                           "fused_rnn::bidirectional_recurrence, the op torch.compile calls (compiled graphs have "
                           "no double backward either); run the model eagerly for higher-order gradients")
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[1:5]) if need]
    H = w_hh.shape[-1]
    with torch.enable_grad():
        xp = input_projection(x, w_ih, b_ih)
        inputs = (xp, w_hh, b_hh, h0)
        results = [stock.recurrence_unrolled(ctx.cell, xp[..., d * H:(d + 1) * H], w_hh[d],
                                             b_hh[d] if b_hh is not None else None,
                                             h0[d] if h0 is not None else None, None, lengths, reverse=d == 1)
                   for d in (0, 1)]
        outputs, grad_outputs = [], []
        if dout is not None:
            outputs.append(torch.cat([r[0] for r in results], dim=2))
            grad_outputs.append(dout.to(outputs[-1].dtype))
        if dh_n is not None:
            outputs.append(torch.stack([r[1] for r in results]))
            grad_outputs.append(dh_n.to(outputs[-1].dtype))
        grads = torch.autograd.grad(outputs, [inputs[i] for i in wanted], grad_outputs, create_graph=True,
                                    allow_unused=True)
    gradients = [None] * 4
    for i, grad in zip(wanted, grads):
        gradients[i] = grad
    return tuple(gradients)


def _setup_context_bidirectional(ctx, inputs, output):
    cell, xp, w_hh, b_hh, h0, lengths, allow_tf32, _, _ = inputs
    save_for_backward_bidirectional(ctx, cell, xp, w_hh, b_hh, h0, lengths, output[2], output[3], allow_tf32)
    # Whether the states were saved, noted here: backward reads ctx.saved_tensors once (as _setup_context).
    ctx.states_saved = output[2].dim() == 4


def _op_backward_bidirectional(ctx, dout, dh_n, _dhs, _daux):
    if not ctx.states_saved:
        raise RuntimeError("fused_rnn::bidirectional_recurrence was called with store_saved=False and cannot be "
                           "differentiated")
    grads = backward_bidirectional(ctx, _present(dout), dh_n, _op_bidirectional_sweep,
                                   differentiable=plain_math_backward(dout, dh_n))
    # In the op's argument order: cell, then the four tensors; lengths and the flags get none.
    return None, *grads, None, None, None, None


bidirectional_op.register_autograd(_op_backward_bidirectional, setup_context=_setup_context_bidirectional)


class _BidirectionalFunction(torch.autograd.Function):
    """Both directions' kernels, forward and backward (eager), in the op's argument order, then x, w_ih, b_ih.

    Returns (out [B, T, 2·H] or None, h_n [2, B, H]).
    """

    @staticmethod
    def forward(ctx, cell, xp, w_hh, b_hh, h0, lengths, allow_tf32, store_out, x, w_ih, b_ih):
        out, h_n, _, hs, _ = kernel_module(cell).bidirectional_fwd(
            cell, xp, w_hh, b_hh, h0, lengths, allow_tf32=allow_tf32, store_out=store_out, store_saved=True)
        save_for_backward_bidirectional(ctx, cell, xp, w_hh, b_hh, h0, lengths, hs, None, allow_tf32,
                                        (x, w_ih, b_ih))
        ctx.set_materialize_grads(False)
        return out, h_n

    @staticmethod
    def backward(ctx, dout, dh_n):
        grads = backward_bidirectional(ctx, dout, dh_n, _kernel_bidirectional_sweep,
                                       differentiable=plain_math_backward(dout, dh_n))
        return None, *grads, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError("fused_rnn's Triton path has no forward-mode AD (torch.func.jvp, torch.autograd."
                           "forward_ad); use backend='auto' or 'torch'")


def bidirectional_layer(cell, x, forward_weights, reverse_weights, h0, lengths, *, allow_tf32, store_out=True):
    """Both directions of one layer on the kernels: (out [B, T, 2·H] or None, h_n [2, B, H]), x's dtype.

    x: [B, T, I] any strides; forward_weights, reverse_weights: (w_ih, w_hh, b_ih, b_hh), biases
    both None or both given; h0: [2, B, H] or None; lengths: [B] int64 on x's device or None.
    """
    (w_ih_f, w_hh_f, b_ih_f, b_hh_f), (w_ih_r, w_hh_r, b_ih_r, b_hh_r) = forward_weights, reverse_weights
    w_ih = torch.cat([w_ih_f, w_ih_r])                                   # [2·H, I]: one GEMM, both directions
    b_ih = torch.cat([b_ih_f, b_ih_r]) if b_ih_f is not None else None
    w_hh = torch.stack([w_hh_f, w_hh_r])                                 # [2, H, H], contiguous
    b_hh = torch.stack([b_hh_f, b_hh_r]) if b_hh_f is not None else None
    h0 = h0.contiguous() if h0 is not None else None
    if lengths is not None:   # what the kernels read; no copy when run_layers already made it so
        lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous()
    xp = input_projection(x, w_ih, b_ih)
    needs_grad = _needs_grad(xp, w_hh, b_hh, h0)
    if shape_only(xp) or is_compiling():
        out, h_n, _, _ = bidirectional_op(cell, xp, w_hh, b_hh, h0, lengths, allow_tf32, store_out, needs_grad)
        return (out if store_out else None), h_n
    if needs_grad:
        return _BidirectionalFunction.apply(cell, xp, w_hh, b_hh, h0, lengths, allow_tf32, store_out, x, w_ih, b_ih)
    out, h_n, _, _, _ = kernel_module(cell).bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths,
                                                              allow_tf32=allow_tf32, store_out=store_out)
    return out, h_n


# --- one layer, and the stack ---------------------------------------------------------------------------------

def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def recurrence(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, allow_tf32, backend, store_out=True,
               projection, head=None):
    """One layer's recurrence in one direction, with autograd: (out or None, h_n, c_n or None) in xp's dtype.

    backend: "triton" or "torch", as select_layer_backend chose. The kernels read
    a contiguous w_hh, b_hh, h0, c0 and int64 lengths on xp's device.
    projection: (x, w_ih, b_ih) with xp = input_projection(x, w_ih, b_ih), for double backward.
    head: (fc_w, fc_b), a Linear on h_n fused after the loop (store_out False; see fuses_head):
    the first result is then y = h_n fc_wᵀ + fc_b.
    """
    spec = get_cell(cell)
    allow_tf32 = resolve_allow_tf32(allow_tf32)
    fc_w, fc_b = head if head is not None else (None, None)
    # Under torch.compile the registered op keeps the graph whole and T symbolic,
    # for either backend; meta and fake tensors take it too, for its shape-only fake.
    use_op = shape_only(xp) or is_compiling()
    if backend == "torch" and not use_op:
        with torch.autocast(xp.device.type, enabled=False):   # the state stays wide, as in the kernels
            out, h_n, c_n, _ = stock.recurrence_unrolled(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                                         store_out=store_out)
        out, h_n, c_n = (t.to(xp.dtype) if t is not None else None for t in (out, h_n, c_n))
        return (F.linear(h_n, fc_w, fc_b) if head is not None else out), h_n, c_n
    needs_grad = _needs_grad(xp, w_hh, b_hh, h0, c0, fc_w, fc_b)
    if use_op:
        # plain only where the choice was made on a CUDA tensor: a program exported on
        # CPU (where "auto" is always "torch") still runs the kernels on CUDA.
        plain = backend == "torch" and xp.device.type == "cuda"
        first, h_n, c_n, _, _ = recurrence_op(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, allow_tf32,
                                              store_out, needs_grad, plain, fc_w, fc_b)
        return (first if store_out or head is not None else None), h_n, (c_n if spec.has_cell_state else None)
    if needs_grad:
        return _RecurrenceFunction.apply(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, allow_tf32, store_out,
                                         fc_w, fc_b, *projection)
    # Inference: no autograd node, no saved states.
    first, h_n, c_n, _, _ = kernel_module(cell).recurrence_fwd(
        cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse, allow_tf32=allow_tf32, store_out=store_out,
        head=head)
    return first, h_n, c_n


def fuses_head(cell, backend, dtype, hidden_size, output_size, allow_tf32):
    """Whether ``layer`` on ``backend`` ("triton" or "torch") takes a ``head`` of ``output_size`` outputs.

    The plain path (and its op) computes any head as F.linear on h_n; the kernels fuse it
    after their time loop where the cell's kernel module has a head (GRU, LSTM: the Elman
    layer with its head is rnn_linear) and it fits (kernels/rnn_linear.head_unsupported_reason).
    """
    if backend != "triton":
        return True
    module = kernel_module(cell)
    return not isinstance(module, str) and triton_backend.kernels().head_unsupported_reason(
        module, cell, dtype, hidden_size, output_size, allow_tf32) is None


def input_projection(x, w_ih, b_ih):
    """xp = x W_ihᵀ + b_ih for x [B, T, I], one GEMM over all steps.

    A time-major x (a [B, T, I] view of [T, B, I] storage, batch_first=False)
    is multiplied in its own layout and xp returned as the same kind of view:
    F.linear on the view would first copy x.
    """
    if not x.is_contiguous() and x.transpose(0, 1).is_contiguous():
        return F.linear(x.transpose(0, 1), w_ih, b_ih).transpose(0, 1)
    return F.linear(x, w_ih, b_ih)


def layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, *, reverse, allow_tf32, backend, store_out=True,
          head=None):
    """One layer in one direction: (out [B, T, H] or None, h_n [B, H], c_n [B, H] or None), x's dtype.

    x: [B, T, I], any strides; w_ih: [G·H, I], w_hh: [G·H, H], b_ih, b_hh: [G·H] or None;
    h0, c0: [B, H] or None (zeros); lengths: [B] integers in [1, T] (checked by the caller) or None;
    backend: "auto", "triton" or "torch" (see select_layer_backend).
    head: (fc_w [O, H], fc_b [O] or None), a Linear on h_n run with the layer (store_out False), where
    fuses_head says the chosen backend takes it: the first result is then y [B, O] = fc(h_n).
    """
    dtype = autocast_dtype(cell, x, h0)
    if dtype is not None:
        # As run_layers: one dtype for the layer, autocast off inside (fc's products too, as autocast runs them).
        x, w_ih, w_hh, b_ih, b_hh, h0, c0 = cast_floating(dtype, x, w_ih, w_hh, b_ih, b_hh, h0, c0)
        head = None if head is None else tuple(cast_floating(dtype, *head))
        with torch.autocast(x.device.type, enabled=False):
            return layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse=reverse, allow_tf32=allow_tf32,
                         backend=backend, store_out=store_out, head=head)
    check_state_like("h0", h0, x)
    check_state_like("c0", c0, x)
    if head is not None:
        check_head(head, w_hh.shape[1])
        if _needs_grad(*head) and not _needs_grad(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
            # A frozen layer under a head that trains (a linear probe): fc's gradients need h_n alone, so
            # the layer runs its inference kernel, saving none of the [B, T, 6H] fp32 states a backward
            # sweep would read, and fc runs on h_n under autograd.
            _, h_n, c_n = layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse=reverse,
                                allow_tf32=allow_tf32, backend=backend, store_out=False)
            return F.linear(h_n, *head), h_n, c_n
    allow_tf32 = resolve_allow_tf32(allow_tf32)
    chosen = select_layer_backend(cell, x, w_hh.shape[1], backend=backend, allow_tf32=allow_tf32,
                                  needs_grad=_needs_grad(x, w_ih, w_hh, b_ih, b_hh, h0, c0, *(head or ())))
    if lengths is not None:   # what the kernels read; no copy when run_layers already made it so
        lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous()
    if head is not None and not fuses_head(cell, chosen, x.dtype, w_hh.shape[1], head[0].shape[0], allow_tf32):
        raise ValueError(f"the {chosen} layer kernels of cell {cell!r} take no head of {head[0].shape[0]} outputs "
                         "here (see fuses_head)")
    if chosen == "triton":
        w_hh, b_hh, h0, c0 = (t.contiguous() if t is not None else None for t in (w_hh, b_hh, h0, c0))
        head = None if head is None else tuple(t.contiguous() if t is not None else None for t in head)
    xp = input_projection(x, w_ih, b_ih)
    return recurrence(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse, allow_tf32=allow_tf32,
                      backend=chosen, store_out=store_out, projection=(x, w_ih, b_ih), head=head)


# The cells torch.nn's modules run in the low dtype under autocast, per device, so that ours return
# what theirs return: on CUDA every cell (cuDNN's RNN is on autocast's lower-precision list); on CPU
# RNN and LSTM (torch 2.13: their CPU kernels are on the CPU list), not GRU (see autocast_dtype).
AUTOCAST_CELLS = {"cuda": ("rnn_tanh", "rnn_relu", "gru", "lstm"), "cpu": ("rnn_tanh", "rnn_relu", "lstm")}


def autocast_dtype(cell, x, h0):
    """The one dtype a layer of ``cell`` runs in under autocast, as torch.nn's module would return it; None
    when autocast is off for x's device or x is float64 (which autocast leaves as it is).

    For the cells on AUTOCAST_CELLS the autocast dtype. For the others (the GRU on CPU) stock's
    inner products are autocast, but its state keeps h0's dtype (x's without h0), and its outputs
    with it: float32 state from float32 input, bfloat16 from bfloat16 input with float32 weights.
    That dtype then (here with full-precision products where stock's are autocast's).
    """
    low_dtype = autocast_low_dtype(x)
    if low_dtype is None or cell in AUTOCAST_CELLS[x.device.type]:
        return low_dtype
    return (h0 if h0 is not None else x).dtype


def _check_state(name, state, expected, x):
    if state is None:
        return
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(state).__name__}")
    if tuple(state.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (num_layers * num_directions, batch, hidden_size), "
                         f"got {tuple(state.shape)}")
    check_state_like(name, state, x)


def check_state_like(name, state, x):
    """A TypeError unless the state (None: zeros) has x's dtype and device, as torch.nn's modules require."""
    if state is not None and (state.dtype != x.dtype or state.device != x.device):
        raise TypeError(f"{name} is {state.dtype} on {state.device} but x is {x.dtype} on {x.device}")


def check_head(head, hidden_size):
    """A ValueError unless ``head`` is (fc_w [O, hidden_size], fc_b [O] or None): the kernels read fc_w with
    a row stride of hidden_size and O of fc_b's values."""
    fc_w, fc_b = head
    if fc_w.dim() != 2 or fc_w.shape[1] != hidden_size:
        raise ValueError(f"a head's fc_w must have shape (output_size, hidden_size={hidden_size}), got "
                         f"{tuple(fc_w.shape)}")
    if fc_b is not None and tuple(fc_b.shape) != (fc_w.shape[0],):
        raise ValueError(f"a head's fc_b must have shape ({fc_w.shape[0]},) (fc_w's rows), got {tuple(fc_b.shape)}")


def zero_padding(x, lengths):
    """x [B, T, I] with 0 at the steps t >= lengths[b] (whatever they held, NaN included).

    The layers compute every step's input projection in one GEMM, padding included; its weight
    gradient Σ_t g_tᵀ x_t takes g_t = 0 there, and 0 · NaN would be NaN where torch.nn's packed
    sequences never read the padding. x's gradient is 0 there, as torch.nn's.
    """
    steps = torch.arange(x.shape[1], device=x.device)
    return torch.where((steps[None, :] < lengths.to(x.device)[:, None])[:, :, None], x, 0)


def _check_arguments(spec, x, weights, h0, c0, num_layers, directions):
    """Shapes the layers depend on; a ValueError/TypeError naming expected and actual, before anything runs."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 3:
        raise TypeError(f"x must be a 3-D floating-point tensor, got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    per_layer = len(weights) // (num_layers * directions) if num_layers >= 1 else 0
    if per_layer not in (2, 4) or len(weights) != per_layer * num_layers * directions:
        raise ValueError(f"weights must hold 2 or 4 tensors per layer and direction (w_ih, w_hh[, b_ih, b_hh]) "
                         f"for num_layers={num_layers} × {directions} directions, got {len(weights)}")
    if not isinstance(weights[1], torch.Tensor) or weights[1].dim() != 2:
        raise ValueError(f"weights[1] must be the first weight_hh, a 2-D tensor, got "
                         f"{tuple(weights[1].shape) if isinstance(weights[1], torch.Tensor) else weights[1]!r}")
    H = weights[1].shape[1]
    if weights[1].shape[0] != spec.gates * H:
        raise ValueError(f"{spec.name} has {spec.gates} gates: weight_hh must be ({spec.gates * H}, {H}), "
                         f"got {tuple(weights[1].shape)}")
    if c0 is not None and not spec.has_cell_state:
        raise ValueError(f"c0 is for cells with a cell state (lstm), got one for {spec.name!r}")
    B = x.shape[0]
    _check_state("h0", h0, (num_layers * directions, B, H), x)
    _check_state("c0", c0, (num_layers * directions, B, H), x)
    return per_layer, H


def run_layers(cell, x, weights, h0, c0, lengths, *, num_layers, bidirectional, batch_first, dropout, training,
               allow_tf32, backend, store_last_output=True):
    """The whole stack, as torch.nn.RNN / GRU / LSTM compute it: (out or None, h_n, c_n or None).

    x: padded [B, T, I] (batch_first) or [T, B, I]; weights: the module's flat
    weights in ATen's order (per layer, per direction: w_ih, w_hh[, b_ih, b_hh]);
    h0, c0: [L·D, B, H] or None (zeros); lengths: [B] integers in [1, T] (any
    device) or None: sequence b ends at step lengths[b], as a PackedSequence.
    Each layer's input is the previous layer's output ([fwd, rev] on the
    feature dim when bidirectional), with F.dropout(p=dropout) between layers
    in training. Returns out [B, T, D·H] (or [T, B, D·H]), contiguous, 0 past each
    length, None without store_last_output,
    h_n [L·D, B, H] and, for lstm, c_n [L·D, B, H] (each sequence's state at its last step).
    """
    spec = get_cell(cell)
    dtype = autocast_dtype(cell, x, h0)
    if dtype is not None:
        # The whole stack in that dtype (fp32 state inside the kernels); the casts are autograd ops,
        # so fp32 parameters get fp32 gradients.
        x, h0, c0, *weights = cast_floating(dtype, x, h0, c0, *weights)
        with torch.autocast(x.device.type, enabled=False):
            return run_layers(cell, x, weights, h0, c0, lengths, num_layers=num_layers,
                              bidirectional=bidirectional, batch_first=batch_first, dropout=dropout,
                              training=training, allow_tf32=allow_tf32, backend=backend,
                              store_last_output=store_last_output)
    directions = 2 if bidirectional else 1
    time_major = not batch_first
    if isinstance(x, torch.Tensor) and x.dim() == 3 and time_major:
        x = x.transpose(0, 1)   # [B, T, I] from here on, a view
    per_layer, H = _check_arguments(spec, x, weights, h0, c0, num_layers, directions)
    if lengths is not None:
        lengths = check_lengths(lengths, x).to(device=x.device, dtype=torch.int64)
        x = zero_padding(x, lengths)
    allow_tf32 = resolve_allow_tf32(allow_tf32)
    needs_grad = _needs_grad(x, h0, c0, *weights)
    chosen = select_layer_backend(cell, x, H, backend=backend, needs_grad=needs_grad, allow_tf32=allow_tf32)
    if x.shape[0] == 0:
        chosen, lengths = "torch", None   # no sequences: nothing to launch

    h_n, c_n = [], []
    layer_input = x
    fused = directions == 2 and fuses_directions(cell, chosen)
    for index in range(num_layers):
        last = index == num_layers - 1
        store_out = store_last_output or not last
        if fused:
            # Both directions in one launch; out [B, T, 2·H] as the kernel writes it.
            both = [(list(weights[k * per_layer:(k + 1) * per_layer]) + [None, None])[:4]
                    for k in (2 * index, 2 * index + 1)]
            layer_input, h = bidirectional_layer(
                cell, layer_input, *both, h0[2 * index:2 * index + 2] if h0 is not None else None, lengths,
                allow_tf32=allow_tf32, store_out=store_out)
            h_n.extend(h.unbind(0))
            c_n.extend((None, None))
        else:
            outs = []
            for direction in range(directions):
                k = index * directions + direction
                w_ih, w_hh, b_ih, b_hh = (list(weights[k * per_layer:(k + 1) * per_layer]) + [None, None])[:4]
                out, h, c = layer(cell, layer_input, w_ih, w_hh, b_ih, b_hh,
                                  h0[k] if h0 is not None else None, c0[k] if c0 is not None else None, lengths,
                                  reverse=direction == 1, allow_tf32=allow_tf32, backend=chosen, store_out=store_out)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            if not store_out:
                layer_input = None
            elif directions == 1:
                layer_input = outs[0]
            elif time_major:
                # Concatenated in [T, B] order: the next GEMM and the caller read it there, no copy.
                layer_input = torch.cat([o.transpose(0, 1) for o in outs], dim=2).transpose(0, 1)
            else:
                layer_input = torch.cat(outs, dim=2)
        if not last and training and dropout > 0:
            # Drawn over the [T, B, D·H] layout torch.nn's RNNs draw it in, so that one
            # seed gives the same mask on CPU (a copy when the layer wrote [B, T]).
            time_major_input = layer_input.transpose(0, 1).contiguous()
            layer_input = F.dropout(time_major_input, dropout, training=True).transpose(0, 1)
    out = layer_input
    if out is not None and time_major:
        # Contiguous [T, B, D·H], as torch.nn returns it (callers view it as [T·B, ·]): free after a
        # bidirectional layer's cat, one copy after a single direction's [B, T, H] or both directions'
        # [B, T, 2·H] from one launch.
        out = out.transpose(0, 1).contiguous()
    return out, torch.stack(h_n), (torch.stack(c_n) if spec.has_cell_state else None)
