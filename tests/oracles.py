"""Float64 loop oracles for the layer contract (fused_rnn/cells/__init__.py), one cell each.

Written from the cells' equations as in the torch.nn docs, sharing no code with
fused_rnn: the truth the kernels and the driver are tested against. Everything
here is differentiable, so autograd on it gives the reference gradients.
"""

import torch


def _sigmoid(v):
    return 1 / (1 + torch.exp(-v))


def elman_tanh(xp_t, gh_t, h, c):
    return torch.tanh(xp_t + gh_t), c


def elman_relu(xp_t, gh_t, h, c):
    return torch.clamp(xp_t + gh_t, min=0), c


def gru(xp_t, gh_t, h, c):
    H = h.shape[-1]
    r = _sigmoid(xp_t[:, :H] + gh_t[:, :H])
    z = _sigmoid(xp_t[:, H:2 * H] + gh_t[:, H:2 * H])
    n = torch.tanh(xp_t[:, 2 * H:] + r * gh_t[:, 2 * H:])
    return (1 - z) * n + z * h, c


def lstm(xp_t, gh_t, h, c):
    H = h.shape[-1]
    a = xp_t + gh_t
    i, f = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H])
    g, o = torch.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
    c = f * c + i * g
    return o * torch.tanh(c), c


STEPS = {"rnn_tanh": elman_tanh, "rnn_relu": elman_relu, "gru": gru, "lstm": lstm}
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def recurrence_loop(cell, xp, w_hh, b_hh=None, h0=None, c0=None, lengths=None, reverse=False):
    """One layer, one direction, from the precomputed input projection; float64 (or xp's dtype).

    xp: [B, T, G·H]; w_hh: [G·H, H]; b_hh: [G·H] or None; h0, c0: [B, H] or None;
    lengths: [B] or None; reverse: walk t = len_b - 1 … 0.
    Returns (out [B, T, H], zeros at t ≥ lengths[b]; h_n [B, H]; c_n [B, H], zeros for cells without c).
    """
    B, T, _ = xp.shape
    H = w_hh.shape[1]
    step = STEPS[cell]
    lengths = [T] * B if lengths is None else [int(n) for n in lengths]
    outs, h_ns, c_ns = [], [], []
    for b in range(B):     # one sequence at a time: padding is never read
        h = xp.new_zeros(1, H) if h0 is None else h0[b:b + 1]
        c = xp.new_zeros(1, H) if c0 is None else c0[b:b + 1]
        n = lengths[b]
        out_b = [xp.new_zeros(1, H) for _ in range(T)]
        for t in (reversed(range(n)) if reverse else range(n)):
            gh = h @ w_hh.T
            if b_hh is not None:
                gh = gh + b_hh
            h, c = step(xp[b:b + 1, t], gh, h, c)
            out_b[t] = h
        outs.append(torch.cat(out_b, 0))
        h_ns.append(h)
        c_ns.append(c)
    return torch.stack(outs), torch.cat(h_ns), torch.cat(c_ns)
