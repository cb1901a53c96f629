"""h_n, variable lengths, PackedSequence, relu and autocast, on every backend."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fused_rnn import SimpleRNN, rnn_linear
from helpers import DEVICE, TOL, as_float64, make_params, rnn_linear_loop
from test_backward import grads_vs_float64

BACKENDS = ["triton", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_lengths_forward(backend, nonlinearity):
    B, T, I, H, O = 21, 13, 5, 30, 3
    params = make_params(I, H, O, seed=20, nonlinearity=nonlinearity)
    x = torch.randn(B, T, I, device=DEVICE)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0], lengths[1] = 1, T                       # both ends of the range
    h0 = torch.randn(1, B, H, device=DEVICE) * 0.5
    y, h_n = rnn_linear(x, *params, h0, lengths=lengths, nonlinearity=nonlinearity,
                        return_hidden=True, backend=backend)
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params, h0[0]), lengths=lengths, nonlinearity=nonlinearity)
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n[0].double(), h_ref, **TOL[torch.float32])
    # Padding after a sequence's end must not matter: change it, get the same output.
    x2 = x.clone()
    for b, n in enumerate(lengths.tolist()):
        x2[b, n:] = torch.randn_like(x2[b, n:]) * 100
    torch.testing.assert_close(rnn_linear(x2, *params, h0, lengths=lengths, nonlinearity=nonlinearity,
                                          backend=backend), y, atol=0, rtol=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_lengths_and_relu_gradients(nonlinearity):
    lengths = torch.tensor([3, 9, 1, 7, 9, 2, 5])
    grads_vs_float64(7, 9, 4, 24, 3, lengths=lengths, nonlinearity=nonlinearity, seed=21)


def test_lengths_gradients_stock_path():
    B, T, I, H, O = 5, 6, 3, 12, 2
    params = [p.requires_grad_() for p in make_params(I, H, O, seed=22)]
    x = torch.randn(B, T, I, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([6, 1, 4, 2, 5])
    rnn_linear(x, *params, lengths=lengths, backend="torch").square().sum().backward()
    ref = [t.detach().double().requires_grad_() for t in (x, *params)]
    rnn_linear_loop(*ref, lengths=lengths)[0].square().sum().backward()
    for got, want in zip((x, *params), ref):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_sequence_matches_stock_rnn(backend):
    B, T, I, H, O = 6, 8, 4, 20, 2
    torch.manual_seed(23)
    model = SimpleRNN(I, H, O, backend=backend).to(DEVICE)
    x = torch.randn(B, T, I, device=DEVICE)
    lengths = torch.tensor([8, 3, 5, 1, 8, 2])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    y, h_n = model(packed, return_hidden=True)
    with torch.no_grad():
        _, h_stock = model.rnn(packed)                  # the stock nn.RNN on the same PackedSequence
        y_stock = model.fc(h_stock[0])
    torch.testing.assert_close(h_n, h_stock, **TOL[torch.float32])
    torch.testing.assert_close(y, y_stock, **TOL[torch.float32])
    torch.testing.assert_close(model(x, lengths=lengths), y, atol=0, rtol=0)
    with pytest.raises(ValueError, match="lengths must be None when x is a PackedSequence"):
        model(packed, lengths=lengths)


def test_h_n_matches_stock_and_is_differentiable():
    B, T, I, H, O = 4, 6, 3, 16, 2
    params = make_params(I, H, O, seed=24)
    x = torch.randn(B, T, I, device=DEVICE)
    y, h_n = rnn_linear(x, *params, return_hidden=True, backend="triton")
    y_s, h_s = rnn_linear(x, *params, return_hidden=True, backend="torch")
    assert h_n.shape == (1, B, H)
    torch.testing.assert_close(h_n, h_s, **TOL[torch.float32])
    grads_vs_float64(B, T, I, H, O, use_h_n=True, seed=24)


@pytest.mark.parametrize("lengths, error, message", [
    (torch.tensor([1, 2, 0]), ValueError, r"lengths must lie in \[1, T=5\], got values from 0 to 2"),
    (torch.tensor([1, 6, 2]), ValueError, r"lengths must lie in \[1, T=5\], got values from 1 to 6"),
    (torch.tensor([1, 2]), ValueError, r"lengths must have shape \(3,\)"),
    (torch.tensor([1.0, 2.0, 3.0]), TypeError, "lengths must be an integer tensor"),
])
def test_bad_lengths(lengths, error, message):
    params = make_params(4, 8, 1)
    with pytest.raises(error, match=message):
        rnn_linear(torch.randn(3, 5, 4, device=DEVICE), *params, lengths=lengths, backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_module_matches_nn_rnn(backend):
    torch.manual_seed(25)
    model = SimpleRNN(5, 20, 3, nonlinearity="relu", backend=backend).to(DEVICE)
    x = torch.randn(7, 9, 5, device=DEVICE)
    with torch.no_grad():
        out, _ = model.rnn(x)
        expected = model.fc(out[:, -1])
        torch.testing.assert_close(model(x), expected, **TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_runs_in_low_precision(backend):
    dtype = torch.bfloat16
    torch.manual_seed(26)
    model = SimpleRNN(6, 20, 2, backend=backend).to(DEVICE)
    x = torch.randn(5, 7, 6, device=DEVICE)
    with torch.autocast(DEVICE, dtype=dtype):
        y = model(x)
    assert y.dtype == dtype
    y.float().square().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        expected = model(x)                              # fp32
    torch.testing.assert_close(y.float(), expected, **TOL[dtype])
