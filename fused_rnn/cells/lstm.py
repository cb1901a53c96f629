"""The LSTM cell (torch.nn.LSTM), gates i, f, g, o in that order (G = 4)::

    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)      a = xp_t + gh_t
    c_t = f ⊙ c_{t-1} + i ⊙ g        h_t = o ⊙ tanh(c_t)

∂L/∂xp = ∂L/∂gh = ∂L/∂a. The cell state c is fp32 in the kernels, as h is.
"""

import torch
from torch import _VF


def step(xp_t, gh_t, h, c):
    i, f, g, o = (xp_t + gh_t).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def step_backward(xp_t, gh_t, h, c, dh, dc):
    """(∂L/∂xp_t, ∂L/∂gh_t, ∂L/∂h through the step's direct use of h, ∂L/∂c): see fused_rnn.cells."""
    a_i, a_f, a_g, a_o = (xp_t + gh_t).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    tanh_c = torch.tanh(f * c + i * g)
    dc_new = dc + dh * o * (1 - tanh_c * tanh_c)
    da = torch.cat([dc_new * g * i * (1 - i), dc_new * c * f * (1 - f), dc_new * i * (1 - g * g),
                    dh * tanh_c * o * (1 - o)], -1)
    return da, da, torch.zeros_like(h), dc_new * f


stock = _VF.lstm
