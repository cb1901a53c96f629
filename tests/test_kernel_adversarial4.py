"""Adversarial checks of the kernel path's numbers, fourth round: fused_rnn.RNN/GRU/LSTM with backend="triton"
(the Triton kernels, through the interpreter on CPU) against torch.nn with the same weights on CPU, forward and
every gradient, on inputs users send.

Each test is one defect: a value, or the position of a NaN/inf, that differs from stock's (the project's rule:
non-finite values behave as stock). Each docstring says what a user sees, what stock (and the float64 truth)
gives, and the failing input. Tiny shapes: the interpreter runs the kernels.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_rnn

STOCK = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


def pair(cls, I, H, **kwargs):
    """(stock, fused) with the same weights; fused forced onto the kernels with fp32-accurate products."""
    torch.manual_seed(0)
    stock = STOCK[cls](I, H, batch_first=True, **kwargs)
    fused = getattr(fused_rnn, cls)(I, H, batch_first=True, backend="triton", allow_tf32=False, **kwargs)
    fused.load_state_dict(stock.state_dict())
    return stock, fused


def assert_same_non_finite_and_close(actual, expected, name):
    """Same NaN, +inf and -inf positions as stock; the finite rest within fp32 tolerance."""
    assert actual is not None and expected is not None, name
    for what, mask in (("NaN", torch.isnan), ("+inf", lambda t: t == float("inf")),
                       ("-inf", lambda t: t == -float("inf"))):
        assert torch.equal(mask(actual), mask(expected)), (
            f"{name}: {what} at {mask(actual).nonzero().tolist()}, stock at {mask(expected).nonzero().tolist()}")
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual[finite], expected[finite], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_relu_non_finite_state_at_a_short_sequences_last_step_stays_out_of_weight_hh_grad(bidirectional, value):
    """nn.RNN(nonlinearity="relu") on a PackedSequence, lengths [1, 2, 2], with a NaN (or inf) in sequence
    0's only step (x[0, 0, 0]). Stock: that sequence's state is NaN (or inf in some units); relu's derivative
    at NaN is 0 (NaN > 0 is False), and that state is never anyone's h_{t-1}, so weight_hh_l0.grad is finite
    (every entry). fused_rnn.RNN(backend="triton"): weight_hh_l0.grad is NaN in every entry (inf: NaN in the
    columns of the infinite units); the other gradients match.

    Cause (guess): recurrence.states_before (fused_rnn/recurrence.py:221-222) builds h_{t-1} for the forward
    direction as cat([h0, hs[:, :-1]]), assuming it is 0 past a length ("hs is 0 past a length, and so is
    this"); but at t = len_b it is hs[:, len_b - 1], the sequence's last valid state (NaN/inf here),
    and dgh = 0 there enters dW_hh = dghᵀ·before as 0 · NaN (0 · inf) = NaN. The reverse branch masks with
    a where."""
    I, H, T = 4, 5, 2
    stock, fused = pair("RNN", I, H, nonlinearity="relu", bidirectional=bidirectional)
    x = torch.randn(3, T, I)
    x[0, 0, 0] = value
    lengths = torch.tensor([1, 2, 2])
    grads = []
    for module in (stock, fused):
        xx = x.clone().requires_grad_()
        out, h_n = module(pack_padded_sequence(xx, lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        (out.sum() + h_n.sum()).backward()
        grads.append({"x": xx.grad, **{n: p.grad for n, p in module.named_parameters()}})
    for name in grads[0]:
        assert_same_non_finite_and_close(grads[1][name], grads[0][name], name)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_lstm_infinite_c0_gives_stocks_infinite_gradients_not_nan(sign):
    """nn.LSTM(3, 2) with c0[0, 0, 1] = ±inf (h0, x finite, T = 1) and loss out + 2·h_n + 3·c_n. Forward
    matches (c_n[.., 1] = ±inf, h finite: tanh(±inf) = ±1). Backward, stock: the forget gate's pre-activation
    gradient is dc·c_{t-1}·f(1-f) = ±inf (the float64 truth too), so bias_ih_l0.grad[3] (unit 1 of gate f) is
    ±inf, x.grad and h0.grad are ±inf. fused_rnn.LSTM(backend="triton"): NaN in all of these.

    Cause (guess): fused_rnn/kernels/lstm.py:499 writes f(1-f)·c_{t-1} as dc_f·(c_prev - c_prev·f),
    which is inf - inf = NaN for an infinite c_{t-1}; stock's c_prev·f·(1-f) keeps the inf."""
    stock, fused = pair("LSTM", 3, 2)
    x, h0, c0 = torch.randn(1, 1, 3), torch.randn(1, 1, 2), torch.randn(1, 1, 2)
    c0[0, 0, 1] = sign * float("inf")
    results = []
    for module in (stock, fused):
        xx, hh, cc = (t.clone().requires_grad_() for t in (x, h0, c0))
        out, (h_n, c_n) = module(xx, (hh, cc))
        (out.sum() + 2 * h_n.sum() + 3 * c_n.sum()).backward()
        results.append({"out": out.detach(), "c_n": c_n.detach(), "x": xx.grad, "h0": hh.grad, "c0": cc.grad,
                        **{n: p.grad for n, p in module.named_parameters()}})
    for name in results[0]:
        assert_same_non_finite_and_close(results[1][name], results[0][name], name)


def test_gru_infinite_h0_of_a_short_sequence_stays_out_of_weight_hh_grad():
    """nn.GRU(3, 4) on a PackedSequence, lengths [1, 2] (T = 2), h0[0, 0, 0] = inf. Stock: weight_hh_l0.grad
    is NaN/±inf only where g_0ᵀ·h0 puts them (column 0, and the rows the inf state's NaN gates reach);
    fused_rnn.GRU(backend="triton"): more entries NaN (with torch.manual_seed(0) weights, columns 2 and 3 of
    rows 5 and 9, which stock leaves finite); out, h_n and every other gradient as stock. The same cause as
    the relu test: sequence 0's state after its only step (NaN in units 0, 2, 3) is held at t = 1,
    where dgh = 0 meets it as 0 · NaN (fused_rnn/recurrence.py:221-222)."""
    I, H, T = 3, 4, 2
    stock, fused = pair("GRU", I, H)
    x, h0 = torch.randn(2, T, I), torch.randn(1, 2, H)
    h0[0, 0, 0] = float("inf")
    lengths = torch.tensor([1, 2])
    results = []
    for module in (stock, fused):
        xx, hh = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h_n = module(pack_padded_sequence(xx, lengths, batch_first=True, enforce_sorted=False), hh)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g)).sum() + (h_n * torch.randn(h_n.shape, generator=g)).sum()
        loss.backward()
        results.append({"out": out.detach(), "h_n": h_n.detach(), "x": xx.grad, "h0": hh.grad,
                        **{n: p.grad for n, p in module.named_parameters()}})
    for name in results[0]:
        assert_same_non_finite_and_close(results[1][name], results[0][name], name)


def test_bidirectional_relu_simple_rnn_with_h_n_keeps_stocks_infinite_weight_ih_reverse_grad():
    """fused_rnn.SimpleRNN(4, 5, 2, bidirectional=True, nonlinearity="relu", backend="triton") called with
    return_hidden=True on x [1, 1, 4] with x[0, 0, 0] = -inf, and a loss that reads y and h_n (here
    y.sum() - 2·(h_n[1] · fc.weight[:, H:].sum(0)).sum(), so h_n's reverse half pulls against y's). The
    truth, the seed's composition (nn.RNN + nn.Linear on out[:, -1]): weight_ih_l0_reverse.grad[:, 0] is
    (g_y + g_hn)·x = ±inf in every unit the relu lets through. SimpleRNN: NaN there.

    Cause (guess): fused_rnn/module.py:222-233 runs the reverse direction's step at position T - 1 twice, once
    for y (h_rev_first) and once for h_n (h_rev), each with its own input projection, so weight_ih_reverse's
    gradient is g_yᵀx + g_hnᵀx = (+inf) + (-inf) = NaN where stock sums the gradients first: (g_y + g_hn)ᵀx.
    Only an infinite input tells them apart (finite inputs agree to rounding)."""
    I, H, O = 4, 5, 2
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, bidirectional=True, nonlinearity="relu", backend="triton",
                                allow_tf32=False)
    rnn = nn.RNN(I, H, bidirectional=True, nonlinearity="relu", batch_first=True)
    rnn.load_state_dict(model.rnn.state_dict())
    fc = nn.Linear(2 * H, O)
    fc.load_state_dict(model.fc.state_dict())
    x = torch.randn(1, 1, I)
    x[0, 0, 0] = -float("inf")
    pull = -2 * fc.weight[:, H:].detach().sum(0)

    out, h_stock = rnn(x)
    (fc(out[:, -1]).sum() + (h_stock[1] * pull).sum()).backward()
    y, h_fused = model(x, return_hidden=True)
    (y.sum() + (h_fused[1] * pull).sum()).backward()

    assert torch.isinf(rnn.weight_ih_l0_reverse.grad).any()          # a unit the relu lets through
    for name in ("weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "weight_ih_l0"):
        assert_same_non_finite_and_close(getattr(model.rnn, name).grad, getattr(rnn, name).grad, name)


@pytest.mark.parametrize("cell, layers, bidirectional", [("lstm", 1, True), ("gru", 1, True), ("rnn", 2, False)])
def test_nan_weight_state_held_past_a_length_stays_out_of_weight_hh_grad(cell, layers, bidirectional):
    """README (Training): "With lengths, ... a NaN state held after a NaN weight, reaches no gradient".
    fused_rnn.SimpleRNN(3, 2, 2, cell=cell, backend="triton") (bidirectional GRU/LSTM, or a 2-layer relu
    RNN: the layer path) with rnn.bias_ih_l0[1] = NaN, x [2, 2, 3] and lengths [1, 1] (padding at t = 1), a
    loss reading y and h_n. The truth, the seed's composition (torch.nn's module on a PackedSequence, fc on
    each sequence's last output): weight_hh_l0.grad is NaN only in the rows the NaN reaches through g (rows
    1, 3, 5, 7 for the LSTM; none for relu, whose derivative at NaN is 0); every valid step reads h0, which
    is finite, so column 1 is finite in the other rows. SimpleRNN: column 1 NaN in every row. The NaN state
    held at t = 1, the padding, meets dgh = 0 there as 0 · NaN (fused_rnn/recurrence.py:221-222). (With
    a sequence longer than 1, stock's column goes NaN too, which is why the plain modules rarely show it.)"""
    I, H, O, T = 3, 2, 2, 2
    torch.manual_seed(0)
    kwargs = dict(nonlinearity="relu") if cell == "rnn" else {}
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional,
                                backend="triton", allow_tf32=False, **kwargs)
    rnn = STOCK[cell.upper()](I, H, num_layers=layers, bidirectional=bidirectional, batch_first=True, **kwargs)
    rnn.load_state_dict(model.rnn.state_dict())
    fc = nn.Linear(H * (2 if bidirectional else 1), O)
    fc.load_state_dict(model.fc.state_dict())
    with torch.no_grad():
        model.rnn.bias_ih_l0[1] = rnn.bias_ih_l0[1] = float("nan")
    x = torch.randn(2, T, I)
    lengths = torch.tensor([1, 1])
    g = torch.Generator().manual_seed(2)
    dy, dh = torch.randn(2, O, generator=g), torch.randn(layers * (2 if bidirectional else 1), 2, H, generator=g)

    out, h_stock = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    out, out_lengths = pad_packed_sequence(out, batch_first=True)
    h_stock = h_stock[0] if cell == "lstm" else h_stock
    ((fc(out[torch.arange(2), out_lengths - 1]) * dy).sum() + (h_stock * dh).sum()).backward()
    y, h_fused = model(x, lengths=lengths, return_hidden=True)
    h_fused = h_fused[0] if cell == "lstm" else h_fused
    ((y * dy).sum() + (h_fused * dh).sum()).backward()

    assert_same_non_finite_and_close(model.rnn.weight_hh_l0.grad, rnn.weight_hh_l0.grad, "weight_hh_l0")
