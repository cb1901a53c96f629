"""The plain-PyTorch truth for ``rnn_linear``, for the tests.

``rnn_linear_loop`` is an explicit Python loop, written from the equations and
sharing no code with the kernels or with nn.RNN: the tests run it in float64.
The stock path is in fused_rnn/backends/stock.py.
"""

import torch


def rnn_linear_loop(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0=None,
                    lengths=None, nonlinearity="tanh"):
    """y[b] = fc(h_{len_b}[b]) for h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh).

    x: [B, T, I]; h0: [B, H] or None (zeros); lengths: [B] or None (all T).
    Returns (y [B, O], h_n [B, H]); h_n is each sequence's state at its last valid step.
    """
    B, T, _ = x.shape
    H = weight_hh.shape[0]
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = x.new_zeros(B, H) if h0 is None else h0

    def step(x_t, h):
        pre = x_t @ weight_ih.T + h @ weight_hh.T
        if bias_ih is not None:
            pre = pre + bias_ih
        if bias_hh is not None:
            pre = pre + bias_hh
        return act(pre)

    for t in range(T):
        if lengths is None:
            h = step(x[:, t], h)
        else:
            # Only the sequences still running step; the others' states are held
            # and their padding is never read, by the outputs or by any gradient
            # (a torch.where over all rows would send 0 · NaN back through them).
            rows = torch.nonzero(t < lengths.to(x.device)).flatten()
            h = h.index_put((rows,), step(x[rows, t], h[rows]))
    y = h @ fc_weight.T
    if fc_bias is not None:
        y = y + fc_bias
    return y, h
