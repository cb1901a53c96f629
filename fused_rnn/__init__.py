"""fused_rnn: recurrent networks as fused GPU kernels (Triton), with the stock path on CPU."""

from .module import SimpleRNN
from .ops import rnn_linear

__all__ = ["SimpleRNN", "rnn_linear"]
__version__ = "0.1.0"
