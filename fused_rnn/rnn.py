"""``fused_rnn.RNN``: torch.nn.RNN's contract in a module torch.compile can trace.

Dynamo refuses ``nn.RNN``/``GRU``/``LSTM`` instances ("Attempted to wrap RNN,
GRU, or LSTM"), so a model holding one cannot compile with ``fullgraph=True``
nor read the RNN's live parameters. This class is a plain ``nn.Module`` with
nn.RNN's constructor, parameter names, attributes, registration order (so
``torch.manual_seed`` gives the same initial weights) and forward contract:
``forward(input, hx=None) -> (output, h_n)``, PackedSequence in and out,
unbatched 2-D input. Its forward runs the same ATen call nn.RNN.forward makes
(``torch._VF.rnn_tanh`` / ``rnn_relu``), so results are bit-identical.

It holds no cached list of weights (nn.RNN keeps ``_flat_weights`` in sync
through ``__setattr__``): every forward reads the parameters by name, so weight
reparametrizations, ``load_state_dict(assign=True)``, ``functional_call`` and
compiled code all see the current tensors.

``fused_kind`` says whether fused_rnn's kernels implement a configuration;
``SimpleRNN`` uses it to decide whether to run its fused path.
"""

import math
import numbers
import warnings

import torch
from torch import _VF, nn
from torch.nn import init
from torch.nn.utils.rnn import PackedSequence

MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}


class RNN(nn.Module):
    """An Elman RNN with ``torch.nn.RNN``'s exact interface and results (see the module docstring)."""

    __constants__ = ["mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "proj_size"]

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__()
        if nonlinearity not in MODES:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        # The same checks, in the same order, with the same messages as nn.RNNBase.
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
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
        self.nonlinearity = nonlinearity
        self.mode = MODES[nonlinearity]
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        self._flat_weights_names = []
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(directions):
                layer_input = input_size if layer == 0 else hidden_size * directions
                suffix = "_reverse" if direction == 1 else ""
                # Created in nn.RNNBase's order (w_ih, w_hh, b_ih, b_hh, then registered),
                # so reset_parameters draws the same numbers for the same seed.
                tensors = [nn.Parameter(torch.empty((hidden_size, layer_input), **factory)),
                           nn.Parameter(torch.empty((hidden_size, hidden_size), **factory)),
                           nn.Parameter(torch.empty(hidden_size, **factory)),
                           nn.Parameter(torch.empty(hidden_size, **factory))]
                names = ["weight_ih_l{}{}", "weight_hh_l{}{}"] + (["bias_ih_l{}{}", "bias_hh_l{}{}"] if bias else [])
                names = [n.format(layer, suffix) for n in names]
                for name, param in zip(names, tensors):
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
    def _flat_weights(self):
        """The weights in ATen's order, read now (nn.RNN keeps a cached copy of this list)."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self):
        """As nn.RNN: put the weights in one cuDNN buffer when on a GPU with cuDNN; otherwise nothing."""
        nn.RNNBase.flatten_parameters(self)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()   # as nn.RNNBase._apply, after .to() / .cuda()
        return result

    def fused_kind(self):
        """The configuration fused_rnn's kernels run ("tanh" or "relu"), or None.

        Today: one layer, one direction, batch_first, with or without biases, any
        dropout (it only acts between layers). Read as attributes so torch.compile guards on them.
        """
        if self.num_layers == 1 and not self.bidirectional and self.batch_first and self.proj_size == 0:
            return "tanh" if self.mode == "RNN_TANH" else "relu" if self.mode == "RNN_RELU" else None
        return None

    def extra_repr(self):
        return nn.RNNBase.extra_repr(self)

    def forward(self, input, hx=None):
        """As ``torch.nn.RNN.forward``: (output, h_n); PackedSequence in, PackedSequence out."""
        directions = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        batched = True
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = batch_sizes[0]
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = torch.zeros(self.num_layers * directions, max_batch_size, self.hidden_size,
                             dtype=input.dtype, device=input.device)
        elif sorted_indices is not None:
            hx = hx.index_select(1, sorted_indices)
        weights = self._flat_weights
        self._check_forward_args(input, hx, batch_sizes, weights[0])
        rnn = _VF.rnn_tanh if self.mode == "RNN_TANH" else _VF.rnn_relu
        if batch_sizes is None:
            output, hidden = rnn(input, hx, weights, self.bias, self.num_layers, self.dropout, self.training,
                                 self.bidirectional, self.batch_first)
        else:
            output, hidden = rnn(input, batch_sizes, hx, weights, self.bias, self.num_layers, self.dropout,
                                 self.training, self.bidirectional)
        if packed:
            if unsorted_indices is not None:
                hidden = hidden.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), hidden
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = hidden.squeeze(1)
        return output, hidden

    def _check_forward_args(self, input, hx, batch_sizes, weight):
        # nn.RNNBase.check_forward_args's checks and messages.
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                             f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        expected = (self.num_layers * (2 if self.bidirectional else 1), mini_batch, self.hidden_size)
        if hx.size() != expected:
            raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.size())}")
