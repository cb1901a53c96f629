"""``rnn_linear``: input checks, dispatch and autograd around the kernels.

Layers, from the bottom: ``fused_rnn.kernels`` (Triton kernels and their
launches) → ``_RNNLinearFunction`` (autograd) → ``rnn_linear`` (checks and
dispatch; this file) → ``fused_rnn.SimpleRNN`` (the drop-in module). Which
backend runs a call, and the stock path itself, are in ``fused_rnn.backends``.
"""

import torch
from torch._subclasses.fake_tensor import FakeTensor

from . import backends
from .backends import BACKENDS, KERNEL_DTYPES, RnnLinearRequest, resolve_allow_tf32  # noqa: F401  (re-exported)
from .backends.stock import rnn_linear_stock, rnn_linear_unrolled
from .backends.triton import kernels as _kernels

NONLINEARITIES = ("tanh", "relu")


def select_backend(backend, x, hidden_size, output_size, needs_grad=False, allow_tf32=None):
    """The backend that runs for input x [B, T, I]: "triton", "cuda" or "torch" (see backends.select_backend).

    Only x's device, dtype and shape are read. allow_tf32 is rnn_linear's (None
    follows torch.backends.cudnn.allow_tf32): with 3xTF32 the weight tiles take
    twice the shared memory.
    """
    request = RnnLinearRequest.of(x, hidden_size, output_size, needs_grad=needs_grad, allow_tf32=allow_tf32)
    return backends.select_backend(backend, request)


def _shape(t):
    return tuple(t.shape)


def _check_tensor(name, t, dim, x, *, optional=False):
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got a {t.dim()}-D tensor of shape {_shape(t)}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; put them on one device")
    if t.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; use one dtype")


def _check_size(name, t, expected):
    if t is not None and _shape(t) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {_shape(t)}")


def check_x(x, input_size=None):
    """x must be a floating-point [B, T, I] tensor with T ≥ 1 (B = 0 is allowed, as nn.RNN allows it)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D [batch, time, input_size], got a {x.dim()}-D tensor "
                         f"of shape {_shape(x)}")
    if x.shape[1] == 0:
        raise ValueError(f"x must have a time size ≥ 1, got shape {_shape(x)}")
    if input_size is not None and x.shape[2] != input_size:
        raise ValueError(f"x has input_size {x.shape[2]} (last dim of shape {_shape(x)}) but the RNN expects "
                         f"input_size {input_size}")


def check_lengths(lengths, x):
    """lengths as an integer tensor of shape [B], values checked against [1, T] where they can be read.

    Eager calls read the values and raise a ValueError naming them. Under
    torch.compile reading them would break the graph, so a runtime assert
    (torch._assert_async) goes into the graph instead: a RuntimeError.
    """
    B, T = x.shape[0], x.shape[1]
    if not isinstance(lengths, torch.Tensor):
        if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__len__"):
            raise TypeError(f"lengths must be a tensor or a sequence of integers, got {type(lengths).__name__}")
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"lengths must be a tensor or a sequence of integers, got {lengths!r} ({e})") from None
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if _shape(lengths) != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {_shape(lengths)}")
    if lengths.is_meta and not shape_only(x):
        raise ValueError("lengths is on meta, so its values cannot be read; pass them on the CPU or on x's device")
    if torch.compiler.is_compiling():
        torch._assert_async(((lengths >= 1) & (lengths <= T)).all(), "lengths must lie in [1, T]")
    elif not shape_only(x) and not shape_only(lengths) and B > 0:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got values from {lo} to {hi}")
    return lengths


def check_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths):
    """Validate shapes, dtypes and devices; return (h0 as [B, H] or None, lengths or None).

    x: [B, T, I]; weight_ih: [H, I]; weight_hh: [H, H]; bias_ih, bias_hh: [H] (both or
    neither); fc_weight: [O, H]; fc_bias: [O] or None; h0: [1, B, H] or [B, H];
    lengths: [B] integers in [1, T] (a tensor or a sequence).
    """
    check_x(x)
    B, T, I = x.shape
    _check_tensor("weight_hh", weight_hh, 2, x)
    H = weight_hh.shape[0]
    _check_size("weight_hh", weight_hh, (H, H))
    _check_tensor("weight_ih", weight_ih, 2, x)
    if weight_ih.shape[0] != H:
        raise ValueError(f"weight_ih must have shape (hidden_size={H}, input_size), got {_shape(weight_ih)}")
    if weight_ih.shape[1] != I:
        raise ValueError(f"x has input_size {I} (last dim of shape {_shape(x)}) but the RNN expects "
                         f"input_size {weight_ih.shape[1]} (weight_ih is {_shape(weight_ih)})")
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be given or both be None (as nn.RNN's bias=)")
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        _check_tensor(name, b, 1, x, optional=True)
        _check_size(name, b, (H,))
    _check_tensor("fc_weight", fc_weight, 2, x)
    if fc_weight.shape[1] != H:
        raise ValueError(f"fc_weight must have shape (output_size, hidden_size={H}), got {_shape(fc_weight)}")
    O = fc_weight.shape[0]
    _check_tensor("fc_bias", fc_bias, 1, x, optional=True)
    _check_size("fc_bias", fc_bias, (O,))

    if h0 is not None:
        if not isinstance(h0, torch.Tensor):
            raise TypeError(f"h0 must be a torch.Tensor or None, got {type(h0).__name__}")
        # Sizes compared one by one: Dynamo answers ``tuple in (tuples)`` False for
        # equal symbolic sizes (B and H become symbolic after compiles at other sizes).
        lead = h0.dim() - 2
        shape_ok = (h0.dim() in (2, 3) and (lead == 0 or h0.shape[0] == 1)
                    and h0.shape[lead] == B and h0.shape[lead + 1] == H)
        if not shape_ok:
            raise ValueError(f"h0 must have shape (1, {B}, {H}) or ({B}, {H}), got {_shape(h0)}")
        _check_tensor("h0", h0, h0.dim(), x)
        h0 = h0.reshape(B, H)

    if lengths is not None:
        lengths = check_lengths(lengths, x)
    return h0, lengths


def shape_only(t):
    """Whether ``t`` has no data to compute with: a meta tensor, or a FakeTensor (FakeTensorMode: memory
    estimators, tracing tools). Such calls take the registered ops, whose fakes give the shapes."""
    return t.is_meta or isinstance(t, FakeTensor)


def _under_functorch():
    """Whether a torch.func transform (grad, jvp, vmap, ...) is active around this eager call.

    Under torch.compile the registered op runs instead, and Dynamo handles the transforms itself.
    """
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


def plain_math_backward(*grads):
    """Whether an eager Function's backward must be made of torch ops, not the kernels' sweep: when autograd
    builds a graph of the gradients (create_graph=True: grad mode is on inside backward exactly then), or
    when the backward runs vmapped (``autograd.grad(..., is_grads_batched=True)`` and ``jacobian(...,
    vectorize=True)`` vmap it, a torch.func transform may too): ``grads`` then arrive as batched tensors,
    which have no storage a kernel could read."""
    return torch.is_grad_enabled() or _under_functorch() or any(_batched(g) for g in grads)


def _batched(t):
    functorch = torch._C._functorch
    return isinstance(t, torch.Tensor) and (functorch.is_batchedtensor(t) or functorch.is_legacy_batchedtensor(t))


def save_for_backward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, hs,
                      relu, allow_tf32):
    """Save on an autograd ctx what ``backward`` needs (eager Function and torch.library op alike)."""
    ctx.save_for_backward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, lengths, hs)
    ctx.relu, ctx.allow_tf32 = relu, allow_tf32


def backward(ctx, dy, dh_n, sweep, differentiable=False):
    """Gradients of (x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0).

    ``sweep`` runs the reverse-time sweep (the kernel launch, or the registered op)
    and gives g [B, T, H] and dh0 [B, H]; everything else is one product over all
    B·T steps, in fp32 (g and hs are fp32; low-precision weights and x are
    widened). Gradients not needed (ctx.needs_input_grad) are None, and so are
    fc's when y was not used (only h_n was), as with the stock modules.

    differentiable: build a graph of the gradients (autograd.grad with
    create_graph=True, i.e. double backward) by differentiating stock math
    instead; the kernels' products are not themselves differentiable.
    """
    if differentiable:
        return _differentiable_backward(ctx, dy, dh_n)
    x, h0, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, lengths, hs = ctx.saved_tensors
    B, T, I = x.shape
    H = weight_hh.shape[0]
    y_used = dy is not None
    if not y_used:  # only h_n was used: the sweep starts from dh_n alone
        dy = x.new_zeros(B, fc_weight.shape[0])
    g, dh0 = sweep(hs, weight_hh, fc_weight, dy, dh_n, lengths, relu=ctx.relu, allow_tf32=ctx.allow_tf32)
    need_x, need_w_ih, need_w_hh, need_b_ih, need_b_hh, need_fc_w, need_fc_b, need_h0 = ctx.needs_input_grad[:8]
    g2 = g.view(B * T, H)
    # g is 0 at the steps past each length, but 0 · NaN = NaN: what a product
    # meets there (NaN padding in x, a NaN state held from a NaN weight or bias,
    # a NaN in W_ih) is replaced by 0, so padding reaches no gradient, as with
    # a PackedSequence.
    valid = None
    if lengths is not None:
        valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None])[:, :, None]
    dx = dw_ih = dw_hh = db = dfc_w = dfc_b = dh0_out = None
    if need_x:
        dx = (g2 @ weight_ih.float()).view(B, T, I)
        dx = (dx if valid is None else torch.where(valid, dx, 0)).to(x.dtype)
    if need_w_ih:
        x_read = x if valid is None else torch.where(valid, x, 0)
        dw_ih = (g2.T @ x_read.reshape(B * T, I).float()).to(weight_ih.dtype)
    if need_w_hh:
        first = h0.float() if h0 is not None else hs.new_zeros(B, H)
        h_prev = torch.cat([first[:, None], hs[:, :-1]], dim=1)
        if valid is not None:
            h_prev = torch.where(valid, h_prev, 0)
        dw_hh = (g2.T @ h_prev.reshape(B * T, H)).to(weight_hh.dtype)
    if bias_ih is not None and (need_b_ih or need_b_hh):
        db = g2.sum(0).to(weight_hh.dtype)
    if need_fc_w and y_used:
        # hs[:, -1] is the final state; with lengths it was held at each
        # sequence's last valid step, so it is exactly what fc read.
        dfc_w = (dy.float().T @ hs[:, -1]).to(fc_weight.dtype)
    if fc_bias is not None and need_fc_b and y_used:
        dfc_b = dy.float().sum(0).to(fc_weight.dtype)
    if need_h0:
        dh0_out = dh0.to(h0.dtype)
    return (dx, dw_ih, dw_hh, db if need_b_ih else None, db if need_b_hh else None, dfc_w, dfc_b, dh0_out)


def _differentiable_backward(ctx, dy, dh_n):
    """backward's gradients as differentiable functions of the inputs and of dy, dh_n (double backward).

    Recomputes the forward with plain matmuls and activations (fp32, or
    float64 for float64) and differentiates it with create_graph=True: slower
    than the kernels, but every second-order gradient exists and is exact.
    cuDNN's RNN backward is not differentiable, so this does not call _VF.rnn_*.
    """
    x, h0, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, lengths, _ = ctx.saved_tensors
    inputs = (x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0)
    wanted = [i for i, need in enumerate(ctx.needs_input_grad[:8]) if need]
    with torch.enable_grad():
        y, h_n = rnn_linear_unrolled(*inputs, lengths, ctx.relu)
        outputs, grad_outputs = [], []
        for out, grad in ((y, dy), (h_n, dh_n)):
            if grad is not None:
                outputs.append(out)
                grad_outputs.append(grad)
        grads = torch.autograd.grad(outputs, [inputs[i] for i in wanted], grad_outputs, create_graph=True,
                                    allow_unused=True)
    result = [None] * 8
    for i, grad in zip(wanted, grads):
        result[i] = grad
    return tuple(result)


class _RNNLinearFunction(torch.autograd.Function):
    """Triton forward and backward (eager), in the registered op's argument order.

    Returns (y [B, O], h_n [B, H]). Its backward is differentiable (double
    backward) when autograd asks for a graph (create_graph=True).
    """

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0,
                lengths, relu, allow_tf32):
        # The [B, T, H] states are kept only on this path, i.e. when a gradient is needed.
        y, h_n, hs = _kernels().rnn_linear_fwd(
            x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths,
            relu=relu, allow_tf32=allow_tf32, store_hn=True, store_hs=True)
        save_for_backward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, hs,
                          relu, allow_tf32)
        # An unused output's gradient arrives as None instead of a zero tensor.
        ctx.set_materialize_grads(False)
        return y, h_n

    @staticmethod
    def backward(ctx, dy, dh_n):
        grads = backward(ctx, dy, dh_n, _kernels().rnn_linear_bwd_sweep,
                         differentiable=plain_math_backward(dy, dh_n))
        return *grads, None, None, None

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError("fused_rnn's Triton path has no forward-mode AD (torch.func.jvp, torch.autograd."
                           "forward_ad); use backend='auto' or 'torch'")



def cast_floating(dtype, *tensors):
    """The tensors, floating-point ones in ``dtype`` (None and integer tensors as they are)."""
    return [t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors]


# Device types torch.is_autocast_enabled can be asked about without raising (meta cannot).
AUTOCAST_DEVICES = ("cuda", "cpu")


def autocast_low_dtype(x):
    """The dtype autocast runs x's products in (its bf16 or fp16), or None: autocast off for x's device,
    or x float64, which autocast never casts (a float64 model runs in float64 there)."""
    if (isinstance(x, torch.Tensor) and x.device.type in AUTOCAST_DEVICES
            and torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64):
        return torch.get_autocast_dtype(x.device.type)
    return None


def rnn_linear(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0=None, *,
               lengths=None, nonlinearity="tanh", return_hidden=False, allow_tf32=None,
               backend="auto"):
    """A one-layer RNN over x followed by a Linear on each sequence's last step.

    Computes what ``nn.RNN(I, H, batch_first=True, nonlinearity=...)`` followed by
    ``nn.Linear(H, O)`` on ``out[:, -1]`` computes, with their parameters passed in.

    Args:
        x: [B, T, I] float32, float16 or bfloat16 (float64 runs the stock path); any strides.
            B = 0 gives empty outputs, as nn.RNN does.
        weight_ih: [H, I]; weight_hh: [H, H]; bias_ih, bias_hh: [H] or both None.
        fc_weight: [O, H]; fc_bias: [O] or None.
        h0: [1, B, H] (as nn.RNN takes it) or [B, H]; None means zeros.
        lengths: [B] integers in [1, T] (a tensor or a sequence): sequence b ends at
            step lengths[b], and the Linear reads its state there (steps after it are
            padding, never read). None: all T.
        nonlinearity: "tanh" or "relu".
        return_hidden: also return h_n, [1, B, H] (the state the Linear read).
        allow_tf32: whether fp32 products may use TF32 on the GPU (~1e-3 relative
            error). None (default) follows ``torch.backends.cudnn.allow_tf32`` at call
            time, as nn.RNN does; True or False overrides it.
        backend: "auto" (the Triton kernel on CUDA tensors where supported, else the
            stock path), "triton" (the kernel or an error saying why not; CPU tensors
            need TRITON_INTERPRET=1 set before triton is imported), "cuda" (the CUDA
            C++ cluster kernel for large H from csrc/, forward only, not yet proven on
            a GPU; auto never picks it) or "torch" (stock).

    Returns:
        y: [B, O] in x's dtype, or (y, h_n) with ``return_hidden=True``.
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    low_dtype = autocast_low_dtype(x)
    if low_dtype is not None:
        # Under autocast the whole op runs in the low dtype (fp32 accumulation
        # inside); the casts are autograd ops, so fp32 parameters get fp32 grads.
        x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0 = cast_floating(
            low_dtype, x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0)
    h0, lengths = check_inputs(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias,
                               h0, lengths)
    H, O = weight_hh.shape[0], fc_weight.shape[0]

    tensors = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    request = RnnLinearRequest.of(x, H, O, needs_grad=needs_grad, allow_tf32=allow_tf32, nonlinearity=nonlinearity)
    allow_tf32 = request.allow_tf32
    chosen = backends.select_backend(backend, request)
    if chosen != "torch" and _under_functorch():
        # The kernels' autograd.Function has no functorch rules (vmap, jvp) and
        # launches on unwrapped tensors only; the stock math supports every transform.
        if backend != "auto":
            raise RuntimeError(f"backend={backend!r} cannot run inside torch.func transforms (grad, jvp, vmap, "
                               "functional_call under them); use backend='auto' or 'torch', which run the stock "
                               "math there")
        chosen = "torch"
    if chosen != "torch" and torch.jit.is_tracing():
        # jit.trace records dispatcher ops only: an eager kernel launch would be missing from the trace
        # (its outputs recorded as constants).
        if backend != "auto":
            raise RuntimeError(f"backend={backend!r} cannot run under torch.jit.trace (the tracer does not record "
                               "kernel launches); use backend='auto' or 'torch', or torch.compile / torch.export")
        chosen = "torch"
    if x.shape[0] == 0:
        chosen = "torch"     # no sequences: nothing to launch; the stock math returns empty outputs
        lengths = None
    # Under torch.compile the registered op (fused_rnn/library.py) keeps the graph
    # whole: on CUDA it is the kernel, elsewhere the stock math without packing
    # (pack_padded_sequence reads lengths, which breaks a graph).
    # Meta and fake tensors take the op too: its shape-only fake needs no lengths values (packing does).
    compiling = torch.compiler.is_compiling()
    use_op = shape_only(x) or (compiling and (chosen == "triton" or x.device.type != "cuda"))
    if chosen == "torch" and x.device.type == "cuda" and x.shape[0] > 0 and (use_op or compiling):
        # On CUDA the op's body is the kernel, which declined this call (padded sizes over AUTO_MAX_BLOCK,
        # float64, ...): the layer's plain registered op and the Linear instead. Traced, the stock call
        # would pack lengths (a graph break: fullgraph failed) and fix T; shape-only tensors would reach the kernel.
        from .recurrence import layer
        _, h_n, _ = layer("rnn_" + nonlinearity, x, weight_ih, weight_hh, bias_ih, bias_hh, h0, None,
                          lengths, reverse=False, allow_tf32=allow_tf32, backend="torch", store_out=False)
        y = torch.nn.functional.linear(h_n, fc_weight, fc_bias)
    elif chosen == "torch" and not use_op:
        training = torch.is_grad_enabled()
        y, h_n = rnn_linear_stock(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias,
                                  h0, lengths, nonlinearity, training)
    else:
        # The kernels read contiguous weights and int64 lengths on x's device.
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous()
        weights = [w.contiguous() if w is not None else None
                   for w in (weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias)]
        relu = nonlinearity == "relu"
        if chosen == "cuda":
            from . import cuda
            h0 = h0.contiguous() if h0 is not None else None
            y, h_n = cuda.extension().rnn_linear_forward(x, *weights, h0, lengths, relu, return_hidden)
        elif use_op:
            y, h_n, _ = torch.ops.fused_rnn.rnn_linear(x, *weights, h0, lengths, relu, allow_tf32, needs_grad)
        elif needs_grad:
            y, h_n = _RNNLinearFunction.apply(x, *weights, h0, lengths, relu, allow_tf32)
        else:
            # Inference: no autograd node, no [B, T, H] buffer.
            y, h_n, _ = _kernels().rnn_linear_fwd(x, *weights, h0, lengths, relu=relu, allow_tf32=allow_tf32,
                                                  store_hn=return_hidden)
    if return_hidden:
        return y, h_n.unsqueeze(0)
    return y
