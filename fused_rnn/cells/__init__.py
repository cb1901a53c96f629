"""Recurrent cells: what differs between the Elman RNN, the GRU and the LSTM, one file each.

A :class:`Cell` names a cell's gate count ``G`` (its weights stack G blocks of
H rows: ``weight_ih`` is ``[G·H, I]``, ``weight_hh`` ``[G·H, H]``), whether it
carries a cell state ``c`` (LSTM), the stock ATen call torch.nn makes, and its
one-step math in plain PyTorch with that step's derivatives (``step_backward``,
written out: a custom op's body runs without autograd). Everything else (the modules, the autograd
driver, the registered ops, backend choice) is written once for all cells.

The layer contract
------------------
One layer in one direction is split the way cuDNN splits it:

* the input projection over all steps is one GEMM, done by the caller::

      xp = x @ weight_ihᵀ + bias_ih                       # [B, T, G·H]

* the recurrence, the only sequential part, is the backend's ``forward``::

      gh_t = h_{t-1} @ weight_hhᵀ + bias_hh               # [B, G·H]
      h_t, c_t = cell.step(xp_t, gh_t, h_{t-1}, c_{t-1})

  taking ``xp`` (any strides), ``weight_hh``, ``bias_hh`` (or None), ``h0`` and
  ``c0`` (``[B, H]`` or None: zeros), ``lengths`` (``[B]`` int64 or None) and
  ``reverse`` (walk t = len_b - 1 … 0: the backward direction of a
  bidirectional layer), and returning ``out`` ``[B, T, H]`` in xp's dtype (0
  at steps t ≥ lengths[b], as pad_packed_sequence gives), ``h_n`` and ``c_n``
  ``[B, H]`` (c_n None without a cell state; with lengths, the state at each
  sequence's last valid step), and what its backward needs.

* the forward may also take a ``head`` (``fc_w`` ``[O, H]``, ``fc_b`` ``[O]`` or
  None) with ``store_out`` False: its first result is then ``y = h_n @ fc_wᵀ + fc_b``
  (``[B, O]``, xp's dtype), SimpleRNN's Linear on the last layer's final state, which
  the GRU and LSTM kernels compute after their time loop (``FUSED_HEAD``); its
  gradients are the caller's (``∂L/∂h_n += ∂L/∂y · fc_w`` before the backward).

* the backward's sequential part gives ``dxp = ∂L/∂xp`` and ``dgh = ∂L/∂gh``
  (``[B, T, G·H]`` fp32, 0 at steps past a length; the same tensor for cells
  where they are equal, Elman and LSTM) and ``dh0``, ``dc0``. The weight
  gradients are then GEMMs over all steps: ``dW_hh = Σ_t dgh_tᵀ h_{t-1}``,
  ``db_hh = Σ_t dgh_t``, and autograd differentiates the caller's GEMM for
  ``dx``, ``dW_ih`` and ``db_ih``.
"""

from dataclasses import dataclass
from typing import Callable

from . import elman, gru, lstm


@dataclass(frozen=True)
class Cell:
    """One recurrent cell. ``name`` is what the registered ops take (a string, so torch.compile can guard on it)."""

    name: str            # "rnn_tanh", "rnn_relu", "gru", "lstm"
    mode: str            # torch.nn.RNNBase.mode: "RNN_TANH", "RNN_RELU", "GRU", "LSTM"
    gates: int           # G: weight_ih is [G·H, I], weight_hh [G·H, H]
    has_cell_state: bool # LSTM's c
    step: Callable       # (xp_t, gh_t, h, c) -> (h, c): one step in plain PyTorch, any dtype
    step_backward: Callable   # (xp_t, gh_t, h, c, dh, dc) -> (dxp_t, dgh_t, dh direct, dc): its derivatives
    stock: Callable      # the torch._VF function nn.RNN / nn.GRU / nn.LSTM call


CELLS = {
    "rnn_tanh": Cell("rnn_tanh", "RNN_TANH", 1, False, elman.step_tanh, elman.step_backward_tanh, elman.stock_tanh),
    "rnn_relu": Cell("rnn_relu", "RNN_RELU", 1, False, elman.step_relu, elman.step_backward_relu, elman.stock_relu),
    "gru": Cell("gru", "GRU", 3, False, gru.step, gru.step_backward, gru.stock),
    "lstm": Cell("lstm", "LSTM", 4, True, lstm.step, lstm.step_backward, lstm.stock),
}

# torch.nn.RNNBase.mode -> Cell
BY_MODE = {cell.mode: cell for cell in CELLS.values()}


def cell(name):
    """The Cell called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {name!r}") from None
