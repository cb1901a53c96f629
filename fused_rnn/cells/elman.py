"""The Elman cell (torch.nn.RNN): h_t = act(xp_t + gh_t), one gate (G = 1).

xp_t = W_ih x_t + b_ih and gh_t = W_hh h_{t-1} + b_hh (see fused_rnn.cells).
∂L/∂xp_t = ∂L/∂gh_t = ∂L/∂h_t ⊙ act'(h_t), with tanh' = 1 - h_t² and relu'
= [h_t > 0] read from the output alone, so the backward needs only the states.
"""

import torch
from torch import _VF


def step_tanh(xp_t, gh_t, h, c):
    return torch.tanh(xp_t + gh_t), None


def step_relu(xp_t, gh_t, h, c):
    return torch.relu(xp_t + gh_t), None


def step_backward_tanh(xp_t, gh_t, h, c, dh, dc):
    """(∂L/∂xp_t, ∂L/∂gh_t, ∂L/∂h through the step's direct use of h, ∂L/∂c): see fused_rnn.cells."""
    h_new = torch.tanh(xp_t + gh_t)
    da = dh * (1 - h_new * h_new)
    return da, da, torch.zeros_like(h), None


def step_backward_relu(xp_t, gh_t, h, c, dh, dc):
    da = torch.where(xp_t + gh_t > 0, dh, 0)   # relu'(0) = 0, as torch.relu's backward
    return da, da, torch.zeros_like(h), None


stock_tanh = _VF.rnn_tanh
stock_relu = _VF.rnn_relu
