"""The GRU cell (torch.nn.GRU), gates r, z, n in that order (G = 3)::

    r = σ(xp_r + gh_r)          z = σ(xp_z + gh_z)
    n = tanh(xp_n + r ⊙ gh_n)   h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

gh_n = W_hn h_{t-1} + b_hn sits inside the reset product, so ∂L/∂gh differs
from ∂L/∂xp in the n block (by the factor r): the backward returns both.
"""

import torch
from torch import _VF


def step(xp_t, gh_t, h, c):
    xr, xz, xn = xp_t.chunk(3, dim=-1)
    hr, hz, hn = gh_t.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None


def step_backward(xp_t, gh_t, h, c, dh, dc):
    """(∂L/∂xp_t, ∂L/∂gh_t, ∂L/∂h through the step's direct use of h, ∂L/∂c): see fused_rnn.cells."""
    xr, xz, xn = xp_t.chunk(3, dim=-1)
    hr, hz, hn = gh_t.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    da_n = dh * (1 - z) * (1 - n * n)
    da_z = dh * (h - n) * z * (1 - z)
    da_r = da_n * hn * r * (1 - r)
    # gh_n enters through r ⊙ gh_n: ∂L/∂gh differs from ∂L/∂xp by the factor r in the n block.
    return torch.cat([da_r, da_z, da_n], -1), torch.cat([da_r, da_z, da_n * r], -1), dh * z, None


stock = _VF.gru
