"""Non-finite values, tiny activations and the precision modes, kernel against the float64 loop.

Stock nn.RNN propagates NaN through relu, keeps ±inf finite through tanh, and
computes tanh to fp32 accuracy near 0; the kernel must do the same.
"""

import pytest
import torch

from conftest import DEVICE, TOL, as_float64, kernels, make_params
from fused_rnn import rnn_linear
from fused_rnn.reference import rnn_linear_loop


def kernel_and_loop(x, params, h0=None, nonlinearity="tanh", **kwargs):
    y, h_n = rnn_linear(x, *params, h0, nonlinearity=nonlinearity, return_hidden=True, backend="triton",
                        **kwargs)
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params), None if h0 is None else h0.double(),
                                   nonlinearity=nonlinearity)
    return y, h_n[0], y_ref, h_ref


@pytest.mark.parametrize("where", ["x", "h0", "bias_ih", "weight_hh"])
def test_relu_propagates_nan(where):
    """tl.maximum(pre, 0) turns NaN into 0; stock relu keeps it."""
    B, T, I, H, O = 5, 4, 3, 20, 2
    params = list(make_params(I, H, O, seed=40, nonlinearity="relu"))
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = torch.rand(B, H, device=DEVICE)
    if where == "x":
        x[2, 1, 0] = float("nan")
    elif where == "h0":
        h0[2, 3] = float("nan")
    elif where == "bias_ih":
        params[2] = params[2].clone()
        params[2][5] = float("nan")
    else:
        params[1] = params[1].clone()
        params[1][4, 6] = float("nan")
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, h0, nonlinearity="relu")
    assert torch.isnan(y_ref).any()
    torch.testing.assert_close(y.double(), y_ref, equal_nan=True, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, equal_nan=True, **TOL[torch.float32])


@pytest.mark.parametrize("where", ["x", "h0"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_infinity_with_padded_hidden_stays_finite(where, sign):
    """H = 20 pads to 32: inf times a padded zero weight is NaN, which must not reach real units."""
    B, T, I, H, O = 4, 3, 5, 20, 3
    params = make_params(I, H, O, seed=41)
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = torch.randn(B, H, device=DEVICE) * 0.5
    if where == "x":
        x[1, 1, 2] = sign * float("inf")
    else:
        h0[1, 7] = sign * float("inf")
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, h0)
    assert torch.isfinite(y_ref).all()
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_infinite_input_with_tf32_exact_weights(allow_tf32):
    """A weight whose low mantissa bits are 0 (0.5): its TF32 remainder is 0, and 0·inf must not be NaN."""
    B, T, I, H, O = 2, 2, 16, 16, 1
    w_ih = torch.full((H, I), 0.5, device=DEVICE)
    w_hh = torch.full((H, H), 0.25, device=DEVICE)
    params = (w_ih, w_hh, None, None, torch.ones(O, H, device=DEVICE), None)
    x = torch.zeros(B, T, I, device=DEVICE)
    x[0, 0, 3] = float("inf")
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, allow_tf32=allow_tf32)
    assert torch.isfinite(y_ref).all()
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])


def test_tanh_relative_accuracy_near_zero():
    """(1 - e)/(1 + e) cancels near 0: 5e-4 relative error at 1e-4; stock tanh is exact to fp32 rounding."""
    B, T, I, H, O = 6, 3, 4, 24, 2
    params = [p * 1e-4 for p in make_params(I, H, O, seed=42)]
    x = torch.randn(B, T, I, device=DEVICE)
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params)
    # h ~ 1e-4: products exact to 2^-21 (3xTF32) and tanh to ~1e-7 relative give
    # errors ~1e-11; the cancelling (1 - e)/(1 + e) gave 5e-4 relative, i.e. ~5e-8.
    torch.testing.assert_close(h_n.double(), h_ref, atol=2e-11, rtol=2e-6)


def test_tanh_accuracy_across_the_switch():
    """Inputs on both sides of the series/exp switch at |x| = 1/8, and far into saturation."""
    B, T, I, H, O = 1, 1, 16, 16, 1
    pre = torch.cat([torch.linspace(-0.3, 0.3, 200), torch.tensor([0.125, -0.125, 0.1249999, 9.0, -30.0])])
    x = pre.reshape(-1, 1, 1).expand(-1, T, I).contiguous() / I  # every unit's pre-activation is pre
    params = (torch.ones(H, I, device=DEVICE), torch.zeros(H, H, device=DEVICE), None, None,
              torch.eye(O, H, device=DEVICE), None)
    y, h_n, y_ref, h_ref = kernel_and_loop(x.to(DEVICE), params)
    torch.testing.assert_close(h_n.double(), h_ref, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("allow_tf32,rtol", [(False, 2e-5), (True, 2e-2)])
def test_fp32_precision_modes(allow_tf32, rtol):
    """allow_tf32=False: three TF32 passes, fp32-level; True: one pass, TF32's ~1e-3."""
    B, T, I, H, O = 9, 12, 33, 64, 4
    params = make_params(I, H, O, seed=43)
    x = torch.randn(B, T, I, device=DEVICE)
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, allow_tf32=allow_tf32)
    torch.testing.assert_close(y.double(), y_ref, atol=rtol, rtol=rtol)


def test_split_tf32_is_exact():
    w = torch.randn(1000) * 10.0 ** torch.randint(-20, 20, (1000,))
    w[:4] = torch.tensor([0.5, -0.25, 0.0, 3.0])            # TF32-exact, and zero
    hi, lo = kernels.split_tf32(w)
    assert torch.equal(hi.view(torch.int32) & 0x1FFF, torch.zeros(1000, dtype=torch.int32))
    assert torch.equal(hi[4:] + lo[4:], w[4:])
    assert (lo[4:].abs() <= w[4:].abs() * 2.0 ** -10).all()
    # A nonzero TF32-exact weight keeps a nonzero remainder of its own sign; zero stays zero.
    assert torch.equal(hi[:4], w[:4])
    assert lo[:4].tolist() == [2.0 ** -126, -(2.0 ** -126), 0.0, 2.0 ** -126]


@pytest.mark.gpu
def test_backward_sweep_offsets_past_int32():
    """(T - 1)·H past 2³¹: the sweep must start at the last step, not at a wrapped-around address."""
    B, T, H, O = 1, (1 << 31) // 128 + 2, 128, 1
    hs = torch.full((B, T, H), 0.5, device="cuda")
    w_hh = torch.randn(H, H, device="cuda") * 0.05
    fc_w = torch.randn(O, H, device="cuda")
    dy = torch.randn(B, O, device="cuda")
    g, dh0 = kernels.rnn_linear_bwd_sweep(hs, w_hh, fc_w, dy)
    torch.testing.assert_close(g[:, -1], (dy @ fc_w) * (1 - 0.25), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(dh0).all()
