"""The fused forward kernel against a float64 loop (helpers.rnn_linear_loop)."""

import pytest
import torch

from fused_rnn import rnn_linear
from helpers import DEVICE, TOL, as_float64, make_params, rnn_linear_loop

# (B, T, I, H, O)
SHAPES = [
    (32, 5, 10, 20, 1),    # the seed
    (1, 1, 1, 1, 1),       # every size 1
    (1, 1, 10, 20, 1),     # B = T = 1
    (7, 33, 3, 70, 5),     # odd sizes, none a power of two
    (5, 3, 1, 20, 1),      # I = 1
    (40, 4, 10, 20, 1),    # B over more than one 16-row tile, last tile partial
    (3, 4, 16, 128, 2),    # H = 128: wgmma, fp32 on 8 warps
    (17, 6, 33, 60, 17),   # I and O past 32
]
# H = 256, the largest the kernel holds, fits in shared memory in 16-bit dtypes only.
H256 = (3, 4, 16, 256, 2)


def check_forward(x, params, h0=None, lengths=None, nonlinearity="tanh", **kwargs):
    y, h_n = rnn_linear(x, *params, h0, lengths=lengths, nonlinearity=nonlinearity,
                        return_hidden=True, backend="triton", **kwargs)
    h0_ref = None if h0 is None else h0.double().reshape(x.shape[0], -1)  # [1, B, H] → [B, H]
    y_ref, h_ref = rnn_linear_loop(*as_float64(x, *params), h0_ref, lengths=lengths,
                                   nonlinearity=nonlinearity)
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    assert h_n.shape == (1, *h_ref.shape)
    tol = TOL[x.dtype]
    torch.testing.assert_close(y.double(), y_ref, **tol)
    torch.testing.assert_close(h_n[0].double(), h_ref, **tol)
    return y


@pytest.mark.parametrize("B,T,I,H,O", SHAPES)
@pytest.mark.parametrize("h0_shape", [None, "1BH", "BH"])
def test_forward_fp32(B, T, I, H, O, h0_shape):
    params = make_params(I, H, O, seed=B * T + H)
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = None
    if h0_shape is not None:
        h0 = torch.randn(1, B, H, device=DEVICE) * 0.5
        h0 = h0 if h0_shape == "1BH" else h0[0]
    check_forward(x, params, h0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,T,I,H,O", [SHAPES[0], SHAPES[3], (17, 6, 33, 100, 17), H256])
def test_forward_low_precision(B, T, I, H, O, dtype):
    params = make_params(I, H, O, dtype=dtype, seed=H)
    x = torch.randn(B, T, I, device=DEVICE, dtype=dtype)
    h0 = torch.randn(B, H, device=DEVICE, dtype=dtype) * 0.5
    check_forward(x, params, h0)


def test_forward_long_sequence():
    """T = 2000: the state must neither drift nor saturate wrongly over many steps."""
    params = make_params(4, 24, 3, seed=1)
    check_forward(torch.randn(3, 2000, 4, device=DEVICE), params)


@pytest.mark.parametrize("layout", ["time_major", "strided_features", "expanded_batch"])
def test_forward_non_contiguous(layout):
    B, T, I, H, O = 6, 7, 5, 20, 2
    params = make_params(I, H, O, seed=3)
    if layout == "time_major":
        x = torch.randn(T, B, I, device=DEVICE).transpose(0, 1)     # strides (I, B·I, 1)
    elif layout == "strided_features":
        x = torch.randn(B, T, 2 * I, device=DEVICE)[:, :, ::2]       # feature stride 2
    else:
        x = torch.randn(1, T, I, device=DEVICE).expand(B, T, I)      # batch stride 0
    assert not x.is_contiguous()
    y = check_forward(x, params)
    torch.testing.assert_close(y, rnn_linear(x.contiguous(), *params, backend="triton"), atol=0, rtol=0)


def test_no_bias():
    """nn.RNN(bias=False) and nn.Linear(bias=False) weights."""
    w_ih, w_hh, _, _, fc_w, _ = make_params(6, 20, 2, seed=5)
    check_forward(torch.randn(4, 5, 6, device=DEVICE), (w_ih, w_hh, None, None, fc_w, None))


def test_nan_stays_in_its_sequence():
    B, T, I, H, O = 20, 6, 4, 20, 2
    params = make_params(I, H, O, seed=6)
    x = torch.randn(B, T, I, device=DEVICE)
    x[3, 2, 1] = float("nan")
    y = rnn_linear(x, *params, backend="triton")
    assert torch.isnan(y[3]).all()
    others = torch.arange(B) != 3
    assert not torch.isnan(y[others]).any()
    y_ref, _ = rnn_linear_loop(*as_float64(x[others], *params))
    torch.testing.assert_close(y[others].double(), y_ref, **TOL[torch.float32])


def test_auto_and_torch_backends_agree():
    params = make_params(10, 20, 1, seed=7)
    x = torch.randn(32, 5, 10, device=DEVICE)
    y_auto = rnn_linear(x, *params)
    y_torch = rnn_linear(x, *params, backend="torch")
    y_triton = rnn_linear(x, *params, backend="triton")
    torch.testing.assert_close(y_triton, y_torch, **TOL[torch.float32])
    expected = y_triton if DEVICE == "cuda" else y_torch  # auto: kernel on CUDA, stock on CPU
    torch.testing.assert_close(y_auto, expected, atol=0, rtol=0)


def test_float64_runs_the_stock_path():
    """float64 is valid for nn.RNN but not a kernel dtype: auto falls back, triton says why."""
    params = make_params(3, 8, 2, dtype=torch.float64, seed=8)
    x = torch.randn(2, 4, 3, device=DEVICE, dtype=torch.float64)
    y_ref, _ = rnn_linear_loop(x, *params)
    torch.testing.assert_close(rnn_linear(x, *params), y_ref)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16, got torch.float64"):
        rnn_linear(x, *params, backend="triton")


def test_large_hidden_falls_back():
    params = make_params(3, 300, 2, seed=9)
    x = torch.randn(2, 3, 3, device=DEVICE)
    y_ref, _ = rnn_linear_loop(*as_float64(x, *params))
    torch.testing.assert_close(rnn_linear(x, *params).double(), y_ref, **TOL[torch.float32])
    with pytest.raises(RuntimeError, match="hidden_size=300"):
        rnn_linear(x, *params, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,I,H,O,dtype", [
    (4096, 64, 32, 64, 1, torch.float32),
    (64, 1024, 64, 128, 10, torch.float32),
    (64, 512, 128, 256, 10, torch.bfloat16),
    (300, 257, 100, 200, 9, torch.float16),
])
def test_forward_gpu_large(B, T, I, H, O, dtype):
    params = make_params(I, H, O, dtype=dtype, seed=10)
    check_forward(torch.randn(B, T, I, device=DEVICE, dtype=dtype), params)


@pytest.mark.gpu
def test_tf32_is_opt_in():
    """Default fp32 is IEEE (tight to float64); allow_tf32 stays within TF32's 2^-11 rounding."""
    params = make_params(64, 128, 4, seed=11)
    x = torch.randn(64, 64, 64, device=DEVICE)
    check_forward(x, params)
    y_tf32 = rnn_linear(x, *params, allow_tf32=True, backend="triton")
    y_ref, _ = rnn_linear_loop(*as_float64(x, *params))
    torch.testing.assert_close(y_tf32.double(), y_ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
def test_auto_keeps_large_hidden_on_stock():
    """H = 200 runs on backend="triton" but auto leaves it to cuDNN (see AUTO_MAX_BLOCK).

    In bf16: fp32 weight tiles padded to 256 do not fit in shared memory.
    """
    params = make_params(8, 200, 2, seed=12, dtype=torch.bfloat16)
    x = torch.randn(4, 6, 8, device=DEVICE, dtype=torch.bfloat16)
    assert torch.equal(rnn_linear(x, *params), rnn_linear(x, *params, backend="torch"))
    check_forward(x, params)
