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


stock = _VF.lstm
