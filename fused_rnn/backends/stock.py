"""The stock backend: what ``nn.RNN(batch_first=True)`` followed by ``nn.Linear`` computes.

``rnn_linear_stock`` makes the same ATen call nn.RNN makes, so on CPU it
matches the seed model bit for bit. ``rnn_states_stock`` and
``rnn_bwd_sweep_loop`` are the stock math the registered ops
(fused_rnn/library.py) run off CUDA: traceable with fake tensors, so
torch.compile and torch.export work on CPU. ``rnn_linear_unrolled`` is the
differentiable loop double backward differentiates.
"""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

NAME = "torch"


def unsupported_reason(request, *, auto=False):
    """None: the stock path runs every call (any device, dtype and size; rnn_linear or layers), for "auto" too."""
    return None


def rnn_linear_stock(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0=None,
                     lengths=None, nonlinearity="tanh", training=False):
    """The seed model's math: nn.RNN(batch_first=True), then nn.Linear on out[:, -1].

    x: [B, T, I]; h0: [B, H] or None; lengths: [B] or None. With lengths the
    sequences run packed (as nn.RNN runs a PackedSequence) and the Linear reads
    each one's last valid state. Returns (y [B, O], h_n [B, H]).
    """
    B = x.shape[0]
    H = weight_hh.shape[0]
    hx = x.new_zeros(1, B, H) if h0 is None else h0.unsqueeze(0)
    has_bias = bias_ih is not None
    weights = [weight_ih, weight_hh] + ([bias_ih, bias_hh] if has_bias else [])
    rnn = torch._VF.rnn_tanh if nonlinearity == "tanh" else torch._VF.rnn_relu
    # The positional call nn.RNN.forward makes: (input, hx, params, has_biases,
    # num_layers, dropout, train, bidirectional, batch_first).
    if lengths is None:
        out, h_n = rnn(x, hx, weights, has_bias, 1, 0.0, training, False, True)
        return F.linear(out[:, -1, :], fc_weight, fc_bias), h_n[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    hx = hx.index_select(1, packed.sorted_indices)
    _, h_n = rnn(packed.data, packed.batch_sizes, hx, weights, has_bias, 1, 0.0, training, False)
    h_n = h_n[0].index_select(0, packed.unsorted_indices)
    return F.linear(h_n, fc_weight, fc_bias), h_n


def rnn_states_stock(x, weight_ih, weight_hh, bias_ih, bias_hh, h0=None, lengths=None, nonlinearity="tanh"):
    """States h_1..h_T, [B, T, H], with each sequence's state held after its last valid step.

    Stock math with no packing, so it traces with fake tensors (torch.compile,
    torch.export): all T steps run, and padding after a sequence's end only
    changes states that the gather below replaces by the state at its end.
    """
    B, T, _ = x.shape
    H = weight_hh.shape[0]
    hx = x.new_zeros(1, B, H) if h0 is None else h0.unsqueeze(0)
    has_bias = bias_ih is not None
    weights = [weight_ih, weight_hh] + ([bias_ih, bias_hh] if has_bias else [])
    rnn = torch._VF.rnn_tanh if nonlinearity == "tanh" else torch._VF.rnn_relu
    out, _ = rnn(x, hx, weights, has_bias, 1, 0.0, torch.is_grad_enabled(), False, True)
    if lengths is None:
        return out
    last = lengths.to(x.device)[:, None] - 1
    steps = torch.minimum(torch.arange(T, device=x.device)[None, :], last)
    return out.gather(1, steps[:, :, None].expand(B, T, H))


def rnn_bwd_sweep_loop(hs, weight_hh, fc_weight, dy, dh_n=None, lengths=None, nonlinearity="tanh"):
    """The reverse-time sweep of the backward, as a plain loop in fp32.

    hs: [B, T, H] states (held after each length); dy: [B, O]; dh_n: [B, H] or None.
    Returns (g [B, T, H], dh0 [B, H]) with g_t = ∂L/∂(pre-activation at step t).
    """
    B, T, H = hs.shape
    w_hh = weight_hh.float()
    dh = dy.float() @ fc_weight.float()
    if dh_n is not None:
        dh = dh + dh_n.float()
    gs = []
    for t in reversed(range(T)):
        h_t = hs[:, t].float()
        g = dh * (1 - h_t * h_t) if nonlinearity == "tanh" else torch.where(h_t <= 0, 0.0, dh)
        if lengths is None:
            dh = g @ w_hh
        else:
            valid = (t < lengths.to(hs.device))[:, None]
            g = torch.where(valid, g, 0.0)
            dh = torch.where(valid, g @ w_hh, dh)
        gs.append(g)
    return torch.stack(gs[::-1], dim=1), dh


def rnn_linear_unrolled(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0, lengths, relu):
    """rnn_linear as a loop of differentiable ops (any order of derivative); (y [B, O], h_n [B, H]) in x's dtype.

    With lengths only the sequences still running step, so padding (even NaN)
    reaches neither the outputs nor any gradient, as with a PackedSequence.
    """
    B, T, _ = x.shape
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    w_ih, w_hh, fc_w = weight_ih.to(wide), weight_hh.to(wide), fc_weight.to(wide)
    bias = (bias_ih.to(wide) + bias_hh.to(wide)) if bias_ih is not None else None
    h = h0.to(wide) if h0 is not None else x.new_zeros(B, weight_hh.shape[0], dtype=wide)

    def step(x_t, h):
        pre = x_t.to(wide) @ w_ih.T + h @ w_hh.T
        if bias is not None:
            pre = pre + bias
        return torch.relu(pre) if relu else torch.tanh(pre)

    for t in range(T):
        if lengths is None:
            h = step(x[:, t], h)
        else:
            rows = torch.nonzero(t < lengths).flatten()
            h = h.index_put((rows,), step(x[rows, t], h[rows]))
    y = h @ fc_w.T
    if fc_bias is not None:
        y = y + fc_bias.to(wide)
    return y.to(x.dtype), h.to(x.dtype)
