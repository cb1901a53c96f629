"""Gradients through the fused kernels against float64 autograd of the reference loop."""

import pytest
import torch

import seed_model
from conftest import kernels
from fused_rnn import SimpleRNN, rnn_linear
from helpers import DEVICE, make_params, rnn_linear_loop

NAMES = ["x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "fc_weight", "fc_bias", "h0"]

# Relative to the largest entry of each reference gradient: gradients are sums
# over B·T terms, so an absolute tolerance alone would scale with the shape.
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def grads_vs_float64(B, T, I, H, O, *, dtype=torch.float32, with_h0=True, lengths=None,
                     nonlinearity="tanh", use_h_n=True, seed=0):
    params = make_params(I, H, O, dtype=dtype, seed=seed, nonlinearity=nonlinearity)
    x = torch.randn(B, T, I, device=DEVICE, dtype=dtype)
    h0 = (torch.randn(B, H, device=DEVICE, dtype=dtype) * 0.5) if with_h0 else None
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, *params, h0)]
    y, h_n = rnn_linear(*leaves[:7], leaves[7], lengths=lengths, nonlinearity=nonlinearity,
                        return_hidden=True, backend="triton")
    dy = torch.randn_like(y)
    dh_n = torch.randn_like(h_n) if use_h_n else torch.zeros_like(h_n)
    torch.autograd.backward([y, h_n] if use_h_n else [y], [dy, dh_n] if use_h_n else [dy])

    ref = [t.detach().double().requires_grad_() if t is not None else None for t in leaves]
    y_ref, h_ref = rnn_linear_loop(*ref[:7], ref[7], lengths=lengths, nonlinearity=nonlinearity)
    ((y_ref * dy.double()).sum() + (h_ref * dh_n[0].double()).sum()).backward()

    for name, got, want in zip(NAMES, leaves, ref):
        if got is None:
            continue
        assert got.grad is not None and got.grad.dtype == dtype, name
        assert_grad_close(name, got.grad, want.grad, dtype)


def assert_grad_close(name, got, want, dtype):
    """got (returned in dtype) against the float64 gradient want, to GRAD_TOL[dtype] of want's largest entry."""
    tol = GRAD_TOL[dtype]
    # The absolute tolerance scales with the gradient, down to what the kernels can hold: after T
    # contracting steps dh0 can be ~1e-75 in float64 (T = 256), and the H200 run of 2026-11-26 failed
    # fp32's and bf16's dh0 only so. The kernels compute in fp32, which may flush below its smallest
    # normal (2^-126), and return values below the dtype's smallest normal at the spacing of its
    # subnormals (tiny·eps: 2^-24 for fp16, whose smallest normal, 6.1e-5, is no floor for gradients).
    scale = want.abs().max().item() or 1.0
    finfo = torch.finfo(dtype)
    atol = max(tol * scale, torch.finfo(torch.float32).tiny, finfo.tiny * finfo.eps)
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=tol, msg=lambda m: f"d{name}: {m}")


def test_gradient_tolerance_floor_admits_only_what_the_dtype_cannot_hold():
    """The absolute floor lets through a gradient below what the dtype holds (fp32 dh0 ~1e-75, fp16 ~1e-30,
    returned as 0), not a wrong one the dtype holds: 1e-3 is a normal fp16 number, 5 % off it must fail."""
    want = torch.linspace(0.5, 1.0, 5, dtype=torch.float64) * 1e-3
    assert_grad_close("h0", torch.zeros(5, dtype=torch.float32), want * 1e-72, torch.float32)
    assert_grad_close("h0", torch.zeros(5, dtype=torch.float16), want * 1e-27, torch.float16)
    assert_grad_close("h0", (want * 1.005).half(), want, torch.float16)        # within fp16's 1e-2
    with pytest.raises(AssertionError):
        assert_grad_close("h0", (want * 1.05).half(), want, torch.float16)


@pytest.mark.parametrize("B,T,I,H,O", [
    (32, 5, 10, 20, 1),    # the seed
    (1, 1, 1, 1, 1),
    (7, 33, 3, 70, 5),
    (40, 9, 10, 20, 1),    # several batch tiles
    (5, 6, 4, 37, 3),      # odd H: tile_io.load_pairs reads each unit on its own
    (3, 4, 16, 128, 2),    # H = 128: wgmma, fp32 on 8 warps
])
@pytest.mark.parametrize("with_h0", [True, False])
def test_gradients_fp32(B, T, I, H, O, with_h0):
    grads_vs_float64(B, T, I, H, O, with_h0=with_h0, seed=B + T)


def test_gradients_y_only():
    """Only y used: h_n's gradient is None inside backward, not a zero tensor."""
    grads_vs_float64(6, 7, 5, 20, 3, use_h_n=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("H", [40, 256])
def test_gradients_low_precision(dtype, H):
    grads_vs_float64(9, 12, 6, H, 3, dtype=dtype, seed=5)


def test_only_required_gradients():
    """Frozen weights and an x without grad get none, and their products are skipped."""
    w_ih, w_hh, b_ih, b_hh, fc_w, fc_b = make_params(5, 20, 2)
    fc_w.requires_grad_()
    x = torch.randn(3, 4, 5, device=DEVICE)
    rnn_linear(x, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b, backend="triton").sum().backward()
    assert fc_w.grad is not None
    assert all(t.grad is None for t in (x, w_ih, w_hh, b_ih, b_hh, fc_b))


def test_deterministic():
    def run():
        torch.manual_seed(0)
        model = SimpleRNN(7, 30, 2, backend="triton").to(DEVICE)
        x = torch.randn(20, 11, 7, device=DEVICE, requires_grad=True)
        model(x).square().sum().backward()
        return [x.grad] + [p.grad for p in model.parameters()]
    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


def test_inference_keeps_no_sequence(monkeypatch):
    """Without grad no [B, T, H] buffer is allocated: memory is O(B·H) whatever T is."""
    shapes = []
    real = kernels.new_empty
    monkeypatch.setattr(kernels, "new_empty", lambda shape, **kw: shapes.append(tuple(shape)) or real(shape, **kw))
    model = SimpleRNN(4, 20, 2, backend="triton").to(DEVICE)
    by_length = []
    for T in (50, 100):
        shapes.clear()
        with torch.no_grad():
            model(torch.randn(3, T, 4, device=DEVICE))
        by_length.append(list(shapes))
    # y, and for 3xTF32 products the weights' split (two buffers of their size): nothing with T in it.
    assert by_length[0] == by_length[1] and (3, 2) in by_length[0], by_length
    x = torch.randn(3, 50, 4, device=DEVICE)
    shapes.clear()
    model(x).sum().backward()
    assert (3, 50, 20) in shapes                       # training keeps h_1..h_T


def test_training_follows_stock():
    """Same init, same data, SGD: the fused module's loss curve follows the seed model's."""
    torch.manual_seed(0)
    stock = seed_model.SimpleRNN(10, 20, 1).to(DEVICE)
    fused = SimpleRNN(10, 20, 1, backend="triton").to(DEVICE)
    fused.load_state_dict(stock.state_dict())
    # lr 0.03 keeps this run stable (the loss falls every step); at 0.05 it turns
    # unstable after ~37 steps and amplifies rounding differences of 1e-7.
    opt_s = torch.optim.SGD(stock.parameters(), lr=0.03)
    opt_f = torch.optim.SGD(fused.parameters(), lr=0.03)
    x = torch.randn(64, 5, 10, device=DEVICE)
    target = x.sum(dim=(1, 2))[:, None] / 5
    losses_s, losses_f = [], []
    for _ in range(60):
        for model, opt, losses in ((stock, opt_s, losses_s), (fused, opt_f, losses_f)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(b <= a for a, b in zip(losses_s, losses_s[1:])), "stock run left the stable regime"
    assert losses_f[-1] < 0.1 * losses_f[0]
    torch.testing.assert_close(torch.tensor(losses_f), torch.tensor(losses_s), atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("B,T,I,H,O,dtype", [
    (256, 256, 64, 128, 10, torch.float32),
    (64, 128, 128, 256, 10, torch.bfloat16),
    (1000, 100, 33, 65, 3, torch.float16),
    (64, 256, 64, 128, 1, torch.bfloat16),     # the long case's training; ptxas 12.8 miscompiled its sweep
])
def test_gradients_gpu_large(B, T, I, H, O, dtype):
    grads_vs_float64(B, T, I, H, O, dtype=dtype)


@pytest.mark.parametrize("in_registers", [True, False], ids=["registers", "shared"])
@pytest.mark.parametrize("H", [20, 37])
def test_weight_placements(monkeypatch, in_registers, H):
    """W_hh and W_ih reordered in registers (where a launch holds them for the loop) or gathered
    straight into shared memory: the same gradients. Forced here (the launch's choice is
    kernels.rnn_linear.weights_in_registers'), so that the interpreter runs both."""
    from fused_rnn.kernels import rnn_linear as kernels
    monkeypatch.setattr(kernels, "weights_in_registers",
                        lambda prec, warps, *tiles, **kwargs: (in_registers,) * len(tiles))
    grads_vs_float64(7, 6, 10, H, 3, seed=9)
