"""``SimpleRNN``: the seed model, generalized (layers, directions, cells), as a drop-in backed by fused kernels."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from . import backends
from .backends import RnnLinearRequest
from .ops import (BACKENDS, autocast_low_dtype, check_lengths, check_x, resolve_allow_tf32, rnn_linear,
                  select_backend)
from .rnn import GRU, LSTM, RNN, _fx_proxy, _recurrence, pad_packed

CELL_CLASSES = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
ELMAN_ACTIVATIONS = {"rnn_tanh": "tanh", "rnn_relu": "relu"}


def _has_hooks(m):
    """Whether calling m runs hooks (forward, pre-forward, backward): weight_norm, spectral_norm, prune, torchinfo."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks():
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


def _batched_state(h0):
    """h0 [B, H] (or an LSTM's (h0, c0) pair of them) as [1, B, H], as rnn_linear accepts it."""
    if isinstance(h0, (tuple, list)):
        return tuple(h.unsqueeze(0) if h.dim() == 2 else h for h in h0)
    return h0.unsqueeze(0) if h0 is not None and h0.dim() == 2 else h0


class SimpleRNN(nn.Module):
    """A recurrent network (``rnn``, batch_first) + ``nn.Linear`` (``fc``) on each sequence's last step.

    A drop-in for the user model::

        self.rnn = nn.RNN / nn.GRU / nn.LSTM(input_size, hidden_size, num_layers=..., batch_first=True,
                                             bidirectional=...)
        self.fc = nn.Linear(hidden_size * num_directions, output_size)
        out, _ = self.rnn(x, h0); y = self.fc(out[:, -1])

    with the same submodules created in the same order (``rnn`` is a
    :class:`fused_rnn.RNN`, ``GRU`` or ``LSTM``), so ``torch.manual_seed(s)``
    gives the same weights and state_dicts load both ways. ``cell``: "rnn"
    (with ``nonlinearity`` "tanh" or "relu"), "gru" or "lstm".

    ``forward`` runs the fused path when ``rnn`` is one of fused_rnn's
    batch_first modules without projections, ``fc`` an ``nn.Linear`` of
    matching width, and neither has hooks (weight_norm, spectral_norm, prune,
    torchinfo and parametrizations all use hooks or subclasses) nor a
    ``forward`` replaced on the instance (accelerate's add_hook_to_module):

    * a one-layer, one-direction Elman RNN is one ``rnn_linear`` kernel (the
      time loop and the head fused);
    * otherwise the first L-1 layers run through ``recurrence.run_layers`` and
      the last layer never writes its [B, T, D·H] output: one direction gives
      its h_n to the head, which the GRU and LSTM kernels run after their time
      loop, from the fp32 state (an Elman last layer is again ``rnn_linear``,
      with the previous layer's output as its input); with two, ``out[:, -1]`` is
      the forward state at each sequence's last step next to the reverse
      direction's state after its first step (one step from its h0 at that
      position), computed as a one-step layer.

    Anything else (a replaced ``rnn``, a stock ``nn.RNN``, hooks) runs the
    seed's computation through the submodules:
    ``out, h_n = self.rnn(x, h0); y = self.fc(out[:, -1])``. So does
    ``backend="auto"`` on CPU tensors outside torch.compile: the stock path,
    bit for bit the user model's.

    backend: as in :func:`fused_rnn.rnn_linear` ("cuda" only for the
    one-layer, one-direction Elman RNN). It picks the fused path's backend;
    ``rnn`` is built with "torch" when it is "torch" (stock everywhere) and
    with "auto" otherwise, so ``model.rnn(x)`` behaves as a user's module
    would (the stock path on CPU). allow_tf32: None (default) follows
    ``torch.backends.cudnn.allow_tf32`` at call time, as torch.nn does; ``rnn``
    gets it too.
    """

    def __init__(self, input_size, hidden_size, output_size, *, num_layers=1, bidirectional=False,
                 nonlinearity="tanh", cell="rnn", backend="auto", allow_tf32=None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if cell not in CELL_CLASSES:
            raise ValueError(f"cell must be one of {tuple(CELL_CLASSES)}, got {cell!r}")
        if cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to cell='rnn' only, got nonlinearity={nonlinearity!r} with "
                             f"cell={cell!r}")
        if backend == "cuda" and (cell != "rnn" or num_layers != 1 or bidirectional):
            raise ValueError("backend='cuda' runs only the one-layer, one-direction Elman RNN (cell='rnn'), got "
                             f"cell={cell!r}, num_layers={num_layers}, bidirectional={bidirectional}; use "
                             "'auto', 'triton' or 'torch'")
        self.hidden_size = hidden_size
        options = dict(num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                       backend="torch" if backend == "torch" else "auto", allow_tf32=allow_tf32)
        if cell == "rnn":
            options["nonlinearity"] = nonlinearity
        self.rnn = CELL_CLASSES[cell](input_size, hidden_size, **options)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), output_size)
        self.backend = backend
        self.allow_tf32 = allow_tf32

    def forward(self, x, h0=None, *, lengths=None, return_hidden=False):
        """x: [B, T, I], or a PackedSequence; h0: [L·D, B, H] (or [B, H] for one layer and direction);
        an LSTM's h0 is the pair (h0, c0), as nn.LSTM takes it, or None.

        lengths: [B] valid steps per sequence (the Linear reads step lengths[b]).
        Returns y: [B, O], or with ``return_hidden=True`` (y, h_n [L·D, B, H]), for an LSTM
        (y, (h_n, c_n)).
        """
        if _fx_proxy(x, h0) is not None:
            return self._fx_trace(x, h0, lengths, return_hidden)
        backend = self.backend
        # The CPU stock path first and with the fewest checks: it should cost what the seed costs.
        # (Under torch.compile "auto" takes the registered ops instead, which keep T dynamic.)
        on_cpu_auto = backend == "auto" and not getattr(x, "is_cuda", False) and not torch.compiler.is_compiling()
        if backend == "torch" or on_cpu_auto:
            return self._forward_submodules(x, h0, lengths, return_hidden)
        rnn, fc = self.rnn, self.fc
        if not self._fusable(rnn, fc):
            return self._forward_submodules(x, h0, lengths, return_hidden)
        if isinstance(x, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when x is a PackedSequence (it carries its own)")
            x, lengths = pad_packed(x, batch_first=True)
        activation = ELMAN_ACTIVATIONS.get(rnn.cell.name)
        if activation is not None and rnn.num_layers == 1 and not rnn.bidirectional:
            biases = (rnn.bias_ih_l0, rnn.bias_hh_l0) if rnn.bias else (None, None)
            return rnn_linear(x, rnn.weight_ih_l0, rnn.weight_hh_l0, *biases, fc.weight, fc.bias, h0,
                              lengths=lengths, nonlinearity=activation, return_hidden=return_hidden,
                              allow_tf32=self.allow_tf32, backend=backend)
        return self._forward_layers(x, h0, lengths, return_hidden)

    @staticmethod
    def _fusable(rnn, fc):
        """Whether the fused path computes exactly what the submodules would.

        A few dict and attribute reads (~1 µs): no per-call walk over the modules.
        """
        if type(rnn) not in (RNN, GRU, LSTM) or type(fc) is not nn.Linear:   # parametrize swaps the class too
            return False
        if _has_hooks(rnn) or _has_hooks(fc) or _global_hooks():
            return False
        if "forward" in rnn.__dict__ or "forward" in fc.__dict__:   # replaced on the instance (accelerate's hooks)
            return False
        directions = 2 if rnn.bidirectional else 1
        return rnn.batch_first and rnn.proj_size == 0 and fc.in_features == rnn.hidden_size * directions

    def _forward_layers(self, x, h0, lengths, return_hidden):
        """Layers 1..L-1 through run_layers, the last one into the head without writing its output."""
        rnn, fc = self.rnn, self.fc
        spec = rnn.cell
        check_x(x, rnn.input_size)
        if lengths is not None:
            lengths = check_lengths(lengths, x)
        hx = _batched_state(h0)
        if hx is not None:
            if spec.has_cell_state and not isinstance(hx, tuple):
                raise TypeError(f"an LSTM's h0 must be a tuple (h0, c0) or None, got {type(h0).__name__}")
            rnn.check_forward_args(x, hx, None)
        else:
            rnn.check_input(x, None)
        h0, c0 = (hx if spec.has_cell_state else (hx, None)) if hx is not None else (None, None)
        allow_tf32 = resolve_allow_tf32(self.allow_tf32)
        tensors = (x, h0, c0, *rnn._flat_weights, fc.weight, fc.bias)
        needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        recurrence = _recurrence()
        batch, steps = rnn._auto_sizes(x.shape[0], x.shape[1], needs_grad)
        # "auto" under torch.func transforms is "torch" (the kernels' autograd has no functorch rules).
        chosen = recurrence.select_layer_backend(spec.name, x, rnn.hidden_size, backend=self.backend,
                                                 needs_grad=needs_grad, allow_tf32=allow_tf32, batch_size=batch,
                                                 steps=steps)
        if x.shape[0] == 0 or (chosen == "torch" and not torch.compiler.is_compiling()):
            return self._forward_submodules(x, hx, lengths, return_hidden)

        L, D = rnn.num_layers, 2 if rnn.bidirectional else 1
        weights = rnn._flat_weights
        per_direction = len(weights) // (L * D)      # w_ih, w_hh[, b_ih, b_hh]
        common = dict(allow_tf32=allow_tf32, backend=chosen)
        h_ns, c_ns = [], []
        # The last layer reads x itself with one layer; deeper, run_layers zeroes its padding.
        inp = x if lengths is None or L > 1 else recurrence.zero_padding(x, lengths)
        if L > 1:
            below = (L - 1) * D
            inp, h_n, c_n = recurrence.run_layers(
                spec.name, x, weights[:below * per_direction], None if h0 is None else h0[:below],
                None if c0 is None else c0[:below], lengths, num_layers=L - 1, bidirectional=rnn.bidirectional,
                batch_first=True, dropout=rnn.dropout, training=rnn.training, **common)
            # nn.RNN's dropout acts after every layer but the last, so also after layer L-1. Drawn over
            # the [T, B, D·H] layout torch.nn's RNNs (and run_layers) draw it in: on CPU one seed gives
            # the submodules' mask.
            if rnn.training and rnn.dropout > 0:
                inp = F.dropout(inp.transpose(0, 1).contiguous(), rnn.dropout, True).transpose(0, 1)
            h_ns.append(h_n)
            c_ns.append(c_n)

        def last_layer(direction):
            i = (L - 1) * D + direction
            w = weights[i * per_direction:(i + 1) * per_direction]
            biases = (w[2], w[3]) if per_direction == 4 else (None, None)
            return (w[0], w[1], *biases, None if h0 is None else h0[i], None if c0 is None else c0[i])

        activation = ELMAN_ACTIVATIONS.get(spec.name)
        if D == 1 and activation is not None and self._head_kernel_launches(inp, chosen, needs_grad, allow_tf32):
            # The fused head again: rnn_linear with the previous layer's output as its input.
            w_ih, w_hh, b_ih, b_hh, h_first, _ = last_layer(0)
            y, h_last = rnn_linear(inp, w_ih, w_hh, b_ih, b_hh, fc.weight, fc.bias, h_first, lengths=lengths,
                                   nonlinearity=activation, return_hidden=True, allow_tf32=allow_tf32,
                                   backend=chosen)
            h_ns.append(h_last)
        else:
            # One direction: fc on h_n, fused after the last layer's loop where its kernel takes it
            # (GRU, LSTM; recurrence.fuses_head); two: fc reads both directions' states, below.
            head = None
            layer_dtype = recurrence.autocast_dtype(spec.name, inp, h0) or inp.dtype
            if (D == 1 and self._head_shapes_fit() and self._head_dtype(inp) == layer_dtype
                    and recurrence.fuses_head(spec.name, chosen, layer_dtype, rnn.hidden_size, fc.weight.shape[0],
                                              allow_tf32)):
                head = (fc.weight, fc.bias)
            first, h_fwd, c_fwd = recurrence.layer(spec.name, inp, *last_layer(0), lengths, reverse=False,
                                                   store_out=False, head=head, **common)
            h_ns.append(h_fwd[None])
            c_ns.append(None if c_fwd is None else c_fwd[None])
            if D == 1:
                y = first if head is not None else fc(h_fwd)
            else:
                # out[:, len_b - 1]'s reverse half: that direction's first step, from its h0, at position
                # len_b - 1. With h_n asked for, the whole reverse pass runs anyway: its output there, so
                # that the step runs once and its gradients add up before they meet x, as in torch.nn
                # (two runs of it would meet x twice: +inf + -inf = NaN from an infinite input).
                last = -1 if lengths is None else lengths.to(inp.device) - 1
                rows = torch.arange(inp.shape[0], device=inp.device)
                if return_hidden:
                    out_rev, h_rev, c_rev = recurrence.layer(spec.name, inp, *last_layer(1), lengths, reverse=True,
                                                             store_out=True, **common)
                    h_rev_first = out_rev[rows, last]
                    h_ns.append(h_rev[None])
                    c_ns.append(None if c_rev is None else c_rev[None])
                else:
                    _, h_rev_first, _ = recurrence.layer(spec.name, inp[rows, last][:, None], *last_layer(1), None,
                                                         reverse=True, store_out=False, **common)
                y = fc(torch.cat([h_fwd, h_rev_first], dim=-1))
        if not return_hidden:
            return y
        h_n = torch.cat(h_ns)
        return (y, (h_n, torch.cat(c_ns))) if spec.has_cell_state else (y, h_n)

    def _head_dtype(self, inp):
        """The dtype ``fc`` computes in on the last layer's h_n, or None where its weight and bias differ
        (F.linear refuses that outside autocast). A fused head runs in the layer's dtype: only where the
        two agree (not for the GRU on CPU under autocast, whose state stays float32 while fc is autocast's)."""
        fc = self.fc
        low = autocast_low_dtype(inp)
        if low is not None:
            # Autocast casts no float64 tensor: a float64 fc meets the low h_n and F.linear refuses the mix.
            return None if torch.float64 in (fc.weight.dtype, getattr(fc.bias, "dtype", None)) else low
        if fc.bias is not None and fc.bias.dtype != fc.weight.dtype:
            return None
        return fc.weight.dtype

    def _head_shapes_fit(self):
        """Whether fc's weight is [O, H] and its bias None or [O], what a fused head reads. fc.in_features
        alone (_fusable) does not say so: a weight or bias replaced by one of another shape goes to fc,
        which refuses it (or broadcasts a [1, O] bias) as the user model's does."""
        weight, bias = self.fc.weight, self.fc.bias
        return (weight.dim() == 2 and weight.shape[1] == self.rnn.hidden_size
                and (bias is None or tuple(bias.shape) == (weight.shape[0],)))

    def _head_kernel_launches(self, inp, chosen, needs_grad, allow_tf32):
        """Whether rnn_linear can run the last Elman layer with the head where the layer kernels run.

        Its tiles hold W_ih and fc_W beside W_hh, so it may not fit where the
        layer kernel does: fp32 with 3xTF32 at H = 128 after a first layer
        needs 295,936 B, more than a block's 232,448. The last layer then runs
        as the layer kernel and fc. On the stock path (or its op under compile)
        rnn_linear computes the same as that.
        """
        if chosen != "triton":
            return True
        request = RnnLinearRequest.of(inp, self.rnn.hidden_size, self.fc.out_features, needs_grad=needs_grad,
                                      allow_tf32=allow_tf32)
        return backends.triton.unsupported_reason(request) is None

    def _fx_trace(self, x, h0, lengths, return_hidden):
        """Under torch.fx's symbolic tracing: the seed's graph, as FX traces the user's model: self.rnn (one
        call_module node: fused_rnn's RNNs record themselves as FX records torch.nn's) and self.fc on the
        last step. h0 is passed on as it is: [L·D, B, H] (a one-layer [B, H] h0 cannot be told apart while
        tracing, so the traced graph's rnn refuses it when it runs)."""
        if isinstance(lengths, torch.fx.Proxy) or isinstance(return_hidden, torch.fx.Proxy):
            # Tracing this module as the root: every argument, defaults included, is a placeholder.
            raise TypeError("torch.fx.symbolic_trace of SimpleRNN itself needs lengths and return_hidden fixed: "
                            "concrete_args={'lengths': None, 'return_hidden': False} (or True)")
        if lengths is not None:
            raise ValueError("lengths cannot be traced by torch.fx (which step is read depends on their values); "
                             "trace without lengths, or use torch.compile / torch.export")
        out, h_n = self.rnn(x, h0)
        y = self.fc(out[:, -1])
        return (y, h_n) if return_hidden else y

    def _forward_submodules(self, x, h0, lengths, return_hidden):
        """The user model's computation through self.rnn and self.fc, so hooks run and any rnn works."""
        rnn = self.rnn
        if isinstance(x, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when x is a PackedSequence (it carries its own)")
            packed = x
        else:
            check_x(x, getattr(rnn, "input_size", None))
            packed = None
            if lengths is not None and x.shape[0] > 0:
                lengths = check_lengths(lengths, x)
                packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h0 = _batched_state(h0)
        if packed is None:
            out, h_n = rnn(x, h0)
            y = self.fc(out[:, -1, :])
        else:
            out, h_n = rnn(packed, h0)
            out, out_lengths = pad_packed(out, batch_first=True)
            y = self.fc(out[torch.arange(out.shape[0]), out_lengths - 1])
        return (y, h_n) if return_hidden else y

    def backend_for(self, x):
        """The backend forward takes for input x [B, T, I]: "triton", "cuda" or "torch"."""
        rnn = self.rnn
        if not self._fusable(rnn, self.fc):
            return "torch"
        # As forward counts it (h0 aside): which kernels launch (a training forward saves its states, and
        # a backward follows), and so what they stream and whether "auto" takes them, can depend on it.
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if ELMAN_ACTIVATIONS.get(rnn.cell.name) and rnn.num_layers == 1 and not rnn.bidirectional:
            return select_backend(self.backend, x, self.hidden_size, self.fc.out_features, needs_grad=needs_grad,
                                  allow_tf32=self.allow_tf32)
        if self.backend == "torch" or (self.backend == "auto" and not x.is_cuda):
            return "torch"
        batch, steps = rnn._auto_sizes(x.shape[0], x.shape[1], needs_grad)
        return _recurrence().select_layer_backend(rnn.cell.name, x, rnn.hidden_size, backend=self.backend,
                                                  needs_grad=needs_grad, allow_tf32=resolve_allow_tf32(self.allow_tf32),
                                                  batch_size=batch, steps=steps)

    def extra_repr(self):
        return f"backend={self.backend!r}"
