"""``SimpleRNN``: the seed model as a drop-in module backed by the fused kernel."""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .ops import BACKENDS, rnn_linear, select_backend


class SimpleRNN(nn.Module):
    """``nn.RNN(batch_first=True)`` + ``nn.Linear`` on the last step, run as one fused kernel.

    A drop-in for the seed's ``SimpleRNN``: same submodules (``rnn``, ``fc``)
    created in the same order, so ``torch.manual_seed(s)`` gives the same weights
    and state_dicts load both ways. ``backend`` is as in :func:`fused_rnn.rnn_linear`.
    """

    def __init__(self, input_size, hidden_size, output_size, *, nonlinearity="tanh",
                 backend="auto", allow_tf32=False):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.hidden_size = hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, num_layers=1, batch_first=True,
                          nonlinearity=nonlinearity)
        self.fc = nn.Linear(hidden_size, output_size)
        self.backend = backend
        self.allow_tf32 = allow_tf32
        self._read_rnn()

    def _read_rnn(self):
        # torch.compile refuses to touch an nn.RNN module at all ("Attempted to
        # wrap RNN, GRU, or LSTM"), even to read its parameters, so compiled code
        # reads this plain copy of what rnn_linear needs from it: the same
        # Parameter objects and the nonlinearity. Eager calls refresh it; .to(),
        # load_state_dict and optimizers keep the Parameter objects themselves.
        rnn = self.rnn
        self._rnn_weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        self._rnn_nonlinearity = rnn.nonlinearity

    def forward(self, x, h0=None, *, lengths=None, return_hidden=False):
        """x: [B, T, I], or a PackedSequence; h0: [1, B, H] or [B, H].

        lengths: [B] valid steps per sequence (the Linear reads step lengths[b]).
        Returns y: [B, O], or (y, h_n [1, B, H]) with ``return_hidden=True``.
        """
        if isinstance(x, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when x is a PackedSequence (it carries its own)")
            x, lengths = pad_packed_sequence(x, batch_first=True)
        if not torch.compiler.is_compiling():
            self._read_rnn()
        return rnn_linear(
            x, *self._rnn_weights, self.fc.weight, self.fc.bias, h0, lengths=lengths,
            nonlinearity=self._rnn_nonlinearity, return_hidden=return_hidden, allow_tf32=self.allow_tf32,
            backend=self.backend)

    def backend_for(self, x):
        """The backend forward takes for input x [B, T, I]: "triton", "cuda" or "torch"."""
        return select_backend(self.backend, x, self.hidden_size, self.fc.out_features)

    def extra_repr(self):
        return f"backend={self.backend!r}"
