"""``SimpleRNN``: the seed model as a drop-in module backed by the fused kernel."""

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .ops import BACKENDS, check_lengths, check_x, rnn_linear, select_backend
from .rnn import RNN


def _has_hooks(m):
    """Whether calling m runs hooks (forward, pre-forward, backward): weight_norm, spectral_norm, prune, torchinfo."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks():
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


class SimpleRNN(nn.Module):
    """``nn.RNN(batch_first=True)`` + ``nn.Linear`` on the last step, run as one fused kernel.

    A drop-in for the seed's ``SimpleRNN``: the same submodules (``rnn``, a
    :class:`fused_rnn.RNN` with ``nn.RNN``'s contract, and ``fc``, an ``nn.Linear``)
    created in the same order, so ``torch.manual_seed(s)`` gives the same weights
    and state_dicts load both ways.

    ``forward`` runs the fused ``rnn_linear`` when ``rnn`` is a one-layer,
    one-direction, batch_first :class:`fused_rnn.RNN`, ``fc`` an ``nn.Linear``, and
    neither has hooks (weight_norm, spectral_norm, prune, torchinfo and
    parametrizations all use hooks or subclasses). Anything else (a replaced
    ``rnn``, a stock ``nn.RNN``, hooks) runs the seed's computation through the
    submodules: ``out, h_n = self.rnn(x, h0); y = self.fc(out[:, -1])``. So does
    ``backend="auto"`` on CPU tensors outside torch.compile: that is the stock
    path, bit for bit the seed's.

    backend: as in :func:`fused_rnn.rnn_linear`. allow_tf32: None (default)
    follows ``torch.backends.cudnn.allow_tf32`` at call time, as nn.RNN does.
    """

    def __init__(self, input_size, hidden_size, output_size, *, nonlinearity="tanh",
                 backend="auto", allow_tf32=None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.hidden_size = hidden_size
        self.rnn = RNN(input_size, hidden_size, num_layers=1, batch_first=True, nonlinearity=nonlinearity)
        self.fc = nn.Linear(hidden_size, output_size)
        self.backend = backend
        self.allow_tf32 = allow_tf32

    def forward(self, x, h0=None, *, lengths=None, return_hidden=False):
        """x: [B, T, I], or a PackedSequence; h0: [1, B, H] or [B, H].

        lengths: [B] valid steps per sequence (the Linear reads step lengths[b]).
        Returns y: [B, O], or (y, h_n [1, B, H]) with ``return_hidden=True``.
        """
        backend = self.backend
        # The CPU stock path first and with the fewest checks: it should cost what the seed costs.
        # (Under torch.compile "auto" takes the registered op instead, which keeps T dynamic.)
        on_cpu_auto = backend == "auto" and not getattr(x, "is_cuda", False) and not torch.compiler.is_compiling()
        if backend == "torch" or on_cpu_auto:
            return self._forward_submodules(x, h0, lengths, return_hidden)
        rnn, fc = self.rnn, self.fc
        kind = self._fused_kind(rnn, fc)
        if kind is None:
            return self._forward_submodules(x, h0, lengths, return_hidden)
        if isinstance(x, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when x is a PackedSequence (it carries its own)")
            x, lengths = pad_packed_sequence(x, batch_first=True)
        biases = (rnn.bias_ih_l0, rnn.bias_hh_l0) if rnn.bias else (None, None)
        return rnn_linear(x, rnn.weight_ih_l0, rnn.weight_hh_l0, *biases, fc.weight, fc.bias, h0,
                          lengths=lengths, nonlinearity=kind, return_hidden=return_hidden,
                          allow_tf32=self.allow_tf32, backend=backend)

    @staticmethod
    def _fused_kind(rnn, fc):
        """The activation ("tanh" or "relu") when rnn_linear computes exactly what the submodules would, else None.

        A few dict and attribute reads (~1 µs): no per-call walk over the modules.
        """
        if type(rnn) is not RNN or type(fc) is not nn.Linear:   # parametrize swaps the class too
            return None
        if _has_hooks(rnn) or _has_hooks(fc) or _global_hooks():
            return None
        return rnn.fused_kind()

    def _forward_submodules(self, x, h0, lengths, return_hidden):
        """The seed's computation through self.rnn and self.fc, so hooks run and any rnn works."""
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
        if h0 is not None and h0.dim() == 2:
            h0 = h0.unsqueeze(0)        # [B, H] → [1, B, H], as rnn_linear accepts it
        if packed is None:
            out, h_n = rnn(x, h0)
            y = self.fc(out[:, -1, :])
        else:
            out, h_n = rnn(packed, h0)
            out, out_lengths = pad_packed_sequence(out, batch_first=True)
            y = self.fc(out[torch.arange(out.shape[0]), out_lengths - 1])
        return (y, h_n) if return_hidden else y

    def backend_for(self, x):
        """The backend forward takes for input x [B, T, I]: "triton", "cuda" or "torch"."""
        if self._fused_kind(self.rnn, self.fc) is None:
            return "torch"
        return select_backend(self.backend, x, self.hidden_size, self.fc.out_features,
                              allow_tf32=self.allow_tf32)

    def extra_repr(self):
        return f"backend={self.backend!r}"
