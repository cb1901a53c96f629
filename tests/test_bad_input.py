"""Bad input is refused with a clear ValueError/TypeError before any kernel runs."""

import pytest
import torch

from conftest import kernels
from fused_rnn import SimpleRNN, rnn_linear
from helpers import DEVICE, make_params

B, T, I, H, O = 4, 5, 10, 20, 1


@pytest.fixture(autouse=True)
def no_kernel_launch(monkeypatch):
    """Any launch in this file is a bug: the checks must stop the call first."""
    def fail(*args, **kwargs):
        raise AssertionError("a kernel was launched for bad input")
    monkeypatch.setattr(kernels, "rnn_linear_fwd", fail)


def call(x=None, params=None, h0=None, **kwargs):
    x = torch.randn(B, T, I, device=DEVICE) if x is None else x
    params = list(make_params(I, H, O)) if params is None else params
    return rnn_linear(x, *params, h0, backend="triton", **kwargs)


@pytest.mark.parametrize("x, error, message", [
    (torch.randn(T, I), ValueError, r"x must be 3-D \[batch, time, input_size\], got a 2-D tensor of shape \(5, 10\)"),
    (torch.randn(1, B, T, I), ValueError, "got a 4-D tensor"),
    (torch.randn(B, T, 7), ValueError, r"x has input_size 7 .* expects input_size 10"),
    (torch.randint(0, 5, (B, T, I)), TypeError, "floating-point tensor, got dtype torch.int64"),
    (torch.randn(B, 0, I), ValueError, r"time size ≥ 1, got shape \(4, 0, 10\)"),
    ([[[1.0]]], TypeError, "x must be a torch.Tensor, got list"),
])
def test_bad_x(x, error, message):
    if isinstance(x, torch.Tensor):
        x = x.to(DEVICE)
    with pytest.raises(error, match=message):
        call(x)


def test_mixed_dtypes():
    params = list(make_params(I, H, O))
    params[1] = params[1].double()
    with pytest.raises(TypeError, match="weight_hh has dtype torch.float64 but x has torch.float32"):
        call(params=params)
    with pytest.raises(TypeError, match="h0 has dtype torch.float16"):
        call(h0=torch.zeros(B, H, device=DEVICE, dtype=torch.float16))


def test_mixed_devices():
    other = "meta"  # a second device every machine has; on a GPU machine CPU vs CUDA is checked below
    params = list(make_params(I, H, O))
    params[4] = params[4].to(other)
    with pytest.raises(ValueError, match="fc_weight is on meta but x is on"):
        call(params=params)
    if DEVICE == "cuda":
        params = list(make_params(I, H, O, device="cpu"))
        with pytest.raises(ValueError, match="weight_ih is on cpu but x is on cuda"):
            call(params=params)


@pytest.mark.parametrize("shape", [(B, H + 1), (2, B, H), (1, B + 1, H), (H,), (1, 1, B, H)])
def test_bad_h0_shape(shape):
    with pytest.raises(ValueError, match=rf"h0 must have shape \(1, {B}, {H}\) or \({B}, {H}\)"):
        call(h0=torch.zeros(shape, device=DEVICE))


def test_inconsistent_weights():
    w_ih, w_hh, b_ih, b_hh, fc_w, fc_b = make_params(I, H, O)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \(20, 20\)"):
        call(params=[w_ih, w_hh[:, :5], b_ih, b_hh, fc_w, fc_b])
    with pytest.raises(ValueError, match=r"bias_hh must have shape \(20,\)"):
        call(params=[w_ih, w_hh, b_ih, b_hh[:3], fc_w, fc_b])
    with pytest.raises(ValueError, match=r"fc_weight must have shape \(output_size, hidden_size=20\)"):
        call(params=[w_ih, w_hh, b_ih, b_hh, fc_w[:, :4], fc_b])
    with pytest.raises(ValueError, match=r"fc_bias must have shape \(1,\)"):
        call(params=[w_ih, w_hh, b_ih, b_hh, fc_w, torch.zeros(3, device=DEVICE)])
    with pytest.raises(ValueError, match="both be given or both be None"):
        call(params=[w_ih, w_hh, b_ih, None, fc_w, fc_b])


def test_bad_options():
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        call(nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="backend must be one of"):
        rnn_linear(torch.randn(B, T, I), *make_params(I, H, O, device="cpu"), backend="cuda-ish")


def test_module_reports_wrong_feature_size():
    model = SimpleRNN(I, H, O).to(DEVICE)
    with pytest.raises(ValueError, match="x has input_size 3"):
        model(torch.randn(B, T, 3, device=DEVICE))
