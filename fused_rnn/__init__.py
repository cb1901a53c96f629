"""fused_rnn: recurrent networks as fused GPU kernels (Triton), with the stock path on CPU."""

from .convert import convert
from .module import SimpleRNN
from .rnn import GRU, LSTM, RNN
from .ops import rnn_linear
from . import library  # noqa: F401,E402  registers torch.ops.fused_rnn.*

__all__ = ["GRU", "LSTM", "RNN", "SimpleRNN", "convert", "rnn_linear"]
__version__ = "0.1.0"
