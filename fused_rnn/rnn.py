"""``fused_rnn.RNN``, ``GRU`` and ``LSTM``: torch.nn's recurrent modules as modules torch.compile can trace.

Each class has its torch.nn namesake's constructor (with the same checks and
messages), parameter names, shapes and registration order (so
``torch.manual_seed`` gives the same initial weights and state_dicts load both
ways), attributes, ``repr`` and forward contract: ``forward(input, hx=None)``
returns ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM;
PackedSequence in, PackedSequence out (with the input's batch_sizes and
indices); unbatched 2-D input; inter-layer dropout in training.

Which path runs (``backend_for`` tells):

* the stock ATen call torch.nn makes (``Cell.stock``: ``torch._VF.rnn_tanh``,
  ``rnn_relu``, ``gru``, ``lstm``), bit-identical to torch.nn, with
  ``backend="torch"``; with ``"auto"`` on non-CUDA tensors outside
  torch.compile; and for an LSTM with ``proj_size > 0``, which the kernels do
  not implement (valid, so no error);
* otherwise fused_rnn's layer driver (``fused_rnn.recurrence.run_layers``):
  one fused time loop per layer and direction, when
  ``recurrence.select_layer_backend`` picks the kernels ("auto" on CUDA where
  they support the configuration; "triton" always, or a RuntimeError saying
  why not). Under torch.compile the driver's registered ops run on every
  device, so the graph stays whole (Dynamo refuses nn.RNN/GRU/LSTM instances:
  "Attempted to wrap RNN, GRU, or LSTM").

The classes hold no cached list of weights (torch.nn keeps ``_flat_weights``
in sync through ``__setattr__``): every forward reads the parameters by name,
so weight reparametrizations, ``load_state_dict(assign=True)``,
``functional_call`` and compiled code all see the current tensors.
"""

import math
import numbers
import warnings

import torch
from torch import nn
from torch.nn import init
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .backends.request import check_allow_tf32, resolve_allow_tf32
from .cells import BY_MODE, cell as cell_named

LAYER_BACKENDS = ("auto", "triton", "torch")
NONLINEARITY_CELLS = {"tanh": "rnn_tanh", "relu": "rnn_relu"}

_RECURRENCE = None


def _fx_proxy(input, hx):
    """The first fx.Proxy among the arguments (torch.fx is tracing this call symbolically), or None."""
    states = hx if isinstance(hx, (tuple, list)) else (hx,)
    return next((t for t in (input, *states) if isinstance(t, torch.fx.Proxy)), None)


def _recurrence():
    """fused_rnn.recurrence, imported on first use (it is only needed off the stock path).

    A plain global rather than functools.lru_cache, which torch.compile warns about; read
    outside torch.compile only: Dynamo would guard on the empty cache, and the store it traced
    would fail that guard on the next call, compiling it again (as backends.triton.kernels()).
    """
    if torch.compiler.is_compiling():
        from . import recurrence
        return recurrence
    global _RECURRENCE
    if _RECURRENCE is None:
        from . import recurrence
        _RECURRENCE = recurrence
    return _RECURRENCE


def pad_packed(packed, batch_first):
    """pad_packed_sequence(packed, batch_first=...), which torch.compile runs eagerly (a graph break).

    torch <= 2.11's Dynamo traces into pad_packed_sequence, whose _VF call then meets a fake batch_sizes
    and fails ("its data is not allocated yet", a TorchRuntimeError rather than a graph break): every
    compiled call on a PackedSequence failed, fullgraph or not. torch 2.13 skips the function itself
    (pytorch/pytorch#162374). Disabled here at the call: at import it would import torch._dynamo (~1 s).
    """
    if torch.compiler.is_compiling():
        return torch.compiler.disable(pad_packed_sequence)(packed, batch_first=batch_first)
    return pad_packed_sequence(packed, batch_first=batch_first)


def pack_like(output, lengths, template, batch_first):
    """The padded output [B, T, H] (or [T, B, H]) as a PackedSequence with template's exact structure.

    pack_padded_sequence(enforce_sorted=False) would sort the lengths again and
    could order equal lengths differently from the input's sorted_indices; here
    the rows are put in the input's order first and packed as they stand.
    """
    batch_sizes, sorted_indices, unsorted_indices = (template.batch_sizes, template.sorted_indices,
                                                     template.unsorted_indices)
    if sorted_indices is not None:
        output = output.index_select(0 if batch_first else 1, sorted_indices)
        lengths = lengths.index_select(0, sorted_indices.to(lengths.device))
    data, _ = torch._VF._pack_padded_sequence(output, lengths.cpu(), batch_first)
    return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)


class RNNBase(nn.Module):
    """torch.nn.RNNBase's constructor and contract for any cell of ``fused_rnn.cells`` (see the module docstring).

    cell: "rnn_tanh", "rnn_relu", "gru" or "lstm". proj_size: LSTM only (it
    runs the stock path). backend: "auto", "triton" or "torch".
    allow_tf32: None (default) follows ``torch.backends.cudnn.allow_tf32`` at
    call time, as torch.nn's modules do on cuDNN; True or False overrides it.
    """

    __constants__ = ["mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "proj_size"]

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, backend="auto", allow_tf32=None):
        super().__init__()
        spec = cell_named(cell)
        if proj_size and not spec.has_cell_state:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if backend not in LAYER_BACKENDS:
            raise ValueError(f"backend must be one of {LAYER_BACKENDS}, got {backend!r}")
        # The attributes, then the same checks in the same order with the same messages, as nn.RNNBase.
        self.mode = spec.mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend
        check_allow_tf32(allow_tf32)
        self.allow_tf32 = allow_tf32
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=3)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        factory = {"device": device, "dtype": dtype}
        gate_size = spec.gates * hidden_size
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(directions):
                layer_input = input_size if layer == 0 else real_hidden_size * directions
                # Created in nn.RNNBase's order (w_ih, w_hh, b_ih, b_hh, w_hr, then registered),
                # so reset_parameters draws the same numbers for the same seed.
                w_ih = nn.Parameter(torch.empty((gate_size, layer_input), **factory))
                w_hh = nn.Parameter(torch.empty((gate_size, real_hidden_size), **factory))
                b_ih = nn.Parameter(torch.empty(gate_size, **factory))
                b_hh = nn.Parameter(torch.empty(gate_size, **factory))
                params = [w_ih, w_hh] + ([b_ih, b_hh] if bias else [])
                names = ["weight_ih_l{}{}", "weight_hh_l{}{}"] + (["bias_ih_l{}{}", "bias_hh_l{}{}"] if bias else [])
                if proj_size > 0:
                    params.append(nn.Parameter(torch.empty((proj_size, hidden_size), **factory)))
                    names.append("weight_hr_l{}{}")
                suffix = "_reverse" if direction == 1 else ""
                names = [n.format(layer, suffix) for n in names]
                for name, param in zip(names, params):
                    setattr(self, name, param)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.flatten_parameters()
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def cell(self):
        """The fused_rnn.cells.Cell this module runs, read from ``mode`` (so it follows a changed mode)."""
        return BY_MODE[self.mode]

    @property
    def _flat_weights(self):
        """The weights in ATen's order, read now (torch.nn keeps a cached copy of this list)."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @_flat_weights.setter
    def _flat_weights(self, weights):
        # Code written for torch.nn refreshes its cached list after replacing a weight (AWD-LSTM's
        # WeightDrop sets weight_hh_l0 to a dropped tensor, then assigns this list). The weights are read
        # by name here, so such a list changes nothing; one that names other tensors would be ignored
        # silently, so it is refused.
        current = self._flat_weights
        if len(weights) != len(current) or any(w is not c for w, c in zip(weights, current)):
            names = ", ".join(self._flat_weights_names)
            raise ValueError(f"{type(self).__name__} reads its weights by name ({names}); set those attributes "
                             f"instead of assigning _flat_weights a list of other tensors")

    def _init_flat_weights(self):
        """torch.nn rebuilds its cached weight list here; there is none to rebuild."""

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self):
        """As torch.nn: put the weights in one cuDNN buffer when on a GPU with cuDNN; otherwise nothing."""
        nn.RNNBase.flatten_parameters(self)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()   # as nn.RNNBase._apply, after .to() / .cuda()
        return result

    def extra_repr(self):
        s = nn.RNNBase.extra_repr(self)     # exactly torch.nn's for the default backend
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        if self.allow_tf32 is not None:
            s += f", allow_tf32={self.allow_tf32}"
        return s

    # --- which path runs -----------------------------------------------------------------------------

    def _allow_tf32(self):
        return resolve_allow_tf32(self.allow_tf32)

    def _needs_grad(self, *tensors):
        if not torch.is_grad_enabled():
            return False
        return any(t is not None and t.requires_grad for t in (*tensors, *self._flat_weights))

    def _path(self, x, states, batch_sizes=None):
        """(stock, backend): stock True for the stock _VF call; otherwise the backend to hand ``run_layers``.

        x: the padded (or packed data) input tensor; states: h0 (and c0) or none; batch_sizes: a
        PackedSequence's, or None. The stock
        path's cases are decided first, from attributes alone: on CPU it costs what nn.RNN's does.
        Under torch.compile the driver runs whatever select_layer_backend picks ("torch" included:
        its registered ops keep T dynamic, where the traced _VF call recompiles for every T and an
        LSTM's mkldnn_rnn_layer on CPU fails in AOTAutograd).
        """
        if self.proj_size > 0 or x.numel() == 0:
            return True, "torch"
        compiling = torch.compiler.is_compiling()
        if not compiling and (self.backend == "torch" or (self.backend == "auto" and not x.is_cuda)):
            return True, "torch"
        # "auto" under torch.func transforms is "torch" (the kernels' autograd has no functorch rules).
        # B and T only matter to "auto" outside torch.compile (see backends.triton); under it a packed
        # batch's int() would be a graph break.
        needs_grad = self._needs_grad(x, *states)
        batch = steps = None
        if not compiling:
            if batch_sizes is not None:
                batch, steps = int(batch_sizes[0]), len(batch_sizes)
            else:
                batch, steps = (x.size(0), x.size(1)) if self.batch_first else (x.size(1), x.size(0))
            batch, steps = self._auto_sizes(batch, steps, needs_grad)
        chosen = _recurrence().select_layer_backend(self.cell.name, x, self.hidden_size, backend=self.backend,
                                                    needs_grad=needs_grad, allow_tf32=self._allow_tf32(),
                                                    batch_size=batch, steps=steps)
        return chosen == "torch" and not compiling, chosen

    def _auto_sizes(self, batch, steps, needs_grad):
        """(B, T) as select_layer_backend takes them from a caller whose stock path is this module's _VF
        call, or (None, None) where "auto" must not leave the call to it: cuDNN's backward refuses a
        forward run with train=False ("cudnn RNN backward can only be called in training mode"), which
        the _VF call gets in eval mode; the kernels' backward does not depend on the mode."""
        return (batch, steps) if self.training or not needs_grad else (None, None)

    def _layer_backend(self, x, states, batch_sizes=None):
        """"torch" (the stock _VF call, or under compile the driver's plain ops) or "triton" (the kernels)."""
        return self._path(x, states, batch_sizes)[1]

    def backend_for(self, input, hx=None):
        """Which path ``forward(input, hx)`` takes: "triton" (the fused layers) or "torch" (the stock _VF call).

        Under torch.compile the driver's registered ops run whatever this says.
        """
        packed = isinstance(input, PackedSequence)
        x = input.data if packed else input
        if not packed and x.dim() == 2:
            x = x.unsqueeze(0 if self.batch_first else 1)   # unbatched: one sequence, as forward makes it
        return self._layer_backend(x, hx if isinstance(hx, (tuple, list)) else (hx,),
                                   input.batch_sizes if packed else None)

    # --- forward -------------------------------------------------------------------------------------

    def forward(self, input, hx=None):
        """As torch.nn's ``forward(input, hx=None)``: (output, h_n), or (output, (h_n, c_n)) for the LSTM."""
        proxy = _fx_proxy(input, hx)
        if proxy is not None:
            return self._fx_call_module(proxy.tracer, input, hx)
        spec = self.cell
        lstm = spec.has_cell_state
        template = input if isinstance(input, PackedSequence) else None
        batched = True
        batch_dim = 0 if self.batch_first else 1
        if lstm and hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"LSTM hx must be a tuple (h_0, c_0) or None, got {type(hx).__name__}")
        if template is not None:
            x, batch_sizes, sorted_indices, unsorted_indices = template
        else:
            x, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
            if x.dim() not in (2, 3):
                # torch.nn's words: "RNN: ... 3D tensor instead", "GRU: ... 3D instead", "LSTM: ... 3D instead".
                name = {"GRU": "GRU", "LSTM": "LSTM"}.get(self.mode, "RNN")
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {x.dim()}D"
                                 f"{' tensor' if name == 'RNN' else ''} instead")
            batched = x.dim() == 3
            if not batched:
                x = x.unsqueeze(batch_dim)
            hx = self._hx_dims(hx, batched)
        if hx is not None:
            self.check_forward_args(x, hx, batch_sizes)
        else:
            self.check_input(x, batch_sizes)
        stock, chosen = self._path(x, (hx if lstm else (hx,)) if hx is not None else (), batch_sizes)
        if stock:
            output, hidden = self._forward_stock(spec, x, hx, batch_sizes, sorted_indices, unsorted_indices)
        else:
            output, hidden = self._forward_layers(spec, x, hx, template, chosen)
        if template is not None:
            return output, hidden
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = tuple(h.squeeze(1) for h in hidden) if lstm else hidden.squeeze(1)
        return output, hidden

    def _fx_call_module(self, tracer, input, hx):
        """Under torch.fx's symbolic tracing: one call_module node, as FX records torch.nn's RNNs.

        FX keeps the modules of torch.nn as leaves and traces into any other; this forward branches
        on its input's shape, which a symbolic trace cannot follow ("symbolically traced variables
        cannot be used as inputs to control flow"), so it records itself as FX would a leaf: the
        traced graph calls this module, FX graph mode quantization and graph passes see one node.
        """
        path = tracer.path_of_module(self)
        if not path:
            # The root is traced into, never recorded as a node (a call_module of path "" would name no
            # submodule); torch.nn's RNNs fail there too, on their forward's branches.
            raise torch.fx.proxy.TraceError(
                f"torch.fx.symbolic_trace cannot trace fused_rnn.{type(self).__name__} as the root module (nor "
                f"can it torch.nn's, whose forward branches on its input): trace a model that holds it")
        args = (input,) if hx is None else (input, hx)
        return tracer.create_proxy("call_module", path, args, {})

    def _hx_dims(self, hx, batched):
        """torch.nn's checks of hx's dimensions; for unbatched input, hx with the batch dimension added."""
        if hx is None:
            return None
        if self.cell.has_cell_state:
            want = 3 if batched else 2
            if hx[0].dim() != want or hx[1].dim() != want:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            return tuple(hx) if batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if not batched:
            if hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
            return hx.unsqueeze(1)
        if hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
        return hx

    def _forward_stock(self, spec, x, hx, batch_sizes, sorted_indices, unsorted_indices):
        """The ATen call torch.nn makes, with its zeros and permutations: bit-identical results."""
        lstm = spec.has_cell_state
        if hx is None:
            rows = batch_sizes[0] if batch_sizes is not None else x.size(0 if self.batch_first else 1)
            L = self.num_layers * (2 if self.bidirectional else 1)
            h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
            h = torch.zeros(L, rows, h_size, dtype=x.dtype, device=x.device)
            hx = (h, torch.zeros(L, rows, self.hidden_size, dtype=x.dtype, device=x.device)) if lstm else h
        elif sorted_indices is not None:
            hx = tuple(h.index_select(1, sorted_indices) for h in hx) if lstm else hx.index_select(1, sorted_indices)
        weights = self._flat_weights
        if batch_sizes is None:
            result = spec.stock(x, hx, weights, self.bias, self.num_layers, self.dropout, self.training,
                                self.bidirectional, self.batch_first)
        else:
            result = spec.stock(x, batch_sizes, hx, weights, self.bias, self.num_layers, self.dropout,
                                self.training, self.bidirectional)
        output, hidden = result[0], (tuple(result[1:]) if lstm else result[1])
        if batch_sizes is not None:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                hidden = (tuple(h.index_select(1, unsorted_indices) for h in hidden) if lstm
                          else hidden.index_select(1, unsorted_indices))
        return output, hidden

    def _forward_layers(self, spec, x, hx, template, backend):
        """fused_rnn's layer driver: padded input with lengths in, the input's structure out."""
        lengths = None
        if template is not None:
            # In the caller's batch order, as hx is: no permutation of the states needed.
            x, lengths = pad_packed(template, self.batch_first)
        h0, c0 = (hx if spec.has_cell_state else (hx, None)) if hx is not None else (None, None)
        # Under autocast run_layers runs in the dtype torch.nn's RNNs return (recurrence.autocast_dtype).
        output, h_n, c_n = _recurrence().run_layers(
            spec.name, x, self._flat_weights, h0, c0, lengths, num_layers=self.num_layers, bidirectional=self.bidirectional,
            batch_first=self.batch_first, dropout=self.dropout, training=self.training,
            allow_tf32=self._allow_tf32(), backend=backend)
        if template is not None:
            output = pack_like(output, lengths, template, self.batch_first)
        return output, ((h_n, c_n) if spec.has_cell_state else h_n)

    # --- torch.nn's argument checks, with its messages ----------------------------------------------

    def check_input(self, input, batch_sizes):
        weight = getattr(self, self._flat_weights_names[0])
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                             f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")

    def get_expected_hidden_size(self, input, batch_sizes):
        """(num_layers · directions, batch, proj_size or hidden_size): h_0's shape for ``input``."""
        return self._expected_state_size(input, batch_sizes, self.proj_size if self.proj_size > 0 else self.hidden_size)

    def get_expected_cell_size(self, input, batch_sizes):
        """(num_layers · directions, batch, hidden_size): the LSTM's c_0 shape for ``input``."""
        return self._expected_state_size(input, batch_sizes, self.hidden_size)

    def _expected_state_size(self, input, batch_sizes, size):
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * (2 if self.bidirectional else 1), mini_batch, size)

    def check_hidden_size(self, hx, expected_hidden_size, msg="Expected hidden size {}, got {}"):
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input, hidden, batch_sizes):
        """``hidden``: h_0, or (h_0, c_0) for the LSTM."""
        self.check_input(input, batch_sizes)
        if self.cell.has_cell_state:
            self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                                   "Expected hidden[0] size {}, got {}")
            self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                                   "Expected hidden[1] size {}, got {}")
        else:
            self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx, permutation):
        """hx (or the LSTM's (h, c)) with its batch dimension (1) reordered by ``permutation`` (None: as is)."""
        if permutation is None:
            return hx
        if self.cell.has_cell_state:
            return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)
        return hx.index_select(1, permutation)


class RNN(RNNBase):
    """An Elman RNN with ``torch.nn.RNN``'s exact interface (see the module docstring).

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend="auto", allow_tf32=None)``
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if nonlinearity not in NONLINEARITY_CELLS:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(NONLINEARITY_CELLS[nonlinearity], *args, **kwargs)
        self.nonlinearity = nonlinearity


class GRU(RNNBase):
    """A GRU with ``torch.nn.GRU``'s exact interface (gates r, z, n; see the module docstring).

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None, *, backend="auto", allow_tf32=None)``
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("gru", *args, **kwargs)


class LSTM(RNNBase):
    """An LSTM with ``torch.nn.LSTM``'s exact interface (gates i, f, g, o; see the module docstring).

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None, *, backend="auto", allow_tf32=None)``.
    forward returns ``(output, (h_n, c_n))``. ``proj_size > 0`` runs the stock path on every device.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("lstm", *args, **kwargs)
