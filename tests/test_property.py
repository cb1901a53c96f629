"""Property test: every backend against the float64 loop, forward and backward, over random cases.

Hypothesis draws the shapes, dtype, layout of x, h0, lengths, nonlinearity,
biases and (in the non-finite tests) where NaN/±Inf go; torch draws the values
from a drawn seed. Example counts are bounded (about 0.1 s per interpreted
example) so the file runs in well under a minute on two CPU cores.

Non-finite values must behave as the float64 loop does (NaN where it has NaN,
±Inf where it has ±Inf). Three kernel defects found this way (relu swallowing
NaN, ±Inf with padded H, tanh's cancellation near 0) have their own tests below.
"""

import pytest
import torch

from fused_rnn import rnn_linear
from helpers import DEVICE, TOL, rnn_linear_loop

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402

KERNEL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BACKENDS = ["auto", "triton", "torch"]
# Gradients are sums over B·T terms: tolerances relative to the largest reference entry.
GRAD_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# Backends that run the stock math (ATen's RNN, as nn.RNN) here. On CPU it keeps
# fp16/bf16 states and rounds every intermediate to the dtype: bf16 gradients off
# by 20-40% of their largest entry after 7 relu steps were seen, and a state that
# cancels to exactly 0 meets an Inf weight as 0 · Inf = NaN where the float64
# loop's state is not 0. That is nn.RNN's own precision, the same ATen call, so
# these backends are checked in float32 and float64 only; the kernels in all dtypes.
STOCK_ON_DEVICE = ("torch",) if DEVICE == "cuda" else ("torch", "auto")
STOCK_DTYPES = [torch.float32, torch.float64]
FWD_TOL = {**TOL, torch.float64: dict(atol=1e-10, rtol=1e-9)}
NAMES = ["x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "fc_weight", "fc_bias", "h0"]

# derandomize: the same examples on every run, so CI's verdict is reproducible. With fresh draws per run
# one CI run in several met a case the gradient tolerance does not model: fp32, x broadcast over the
# batch, so dW_ih = (Σ_b g_b) xᵀ cancels to ~1e-3 of its terms and the rounding of those terms exceeds
# a tolerance scaled by the (small) result (seed 13717891, H = 1, T = 1).
SETTINGS = dict(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The kernel's tanh (and everything else) on padded hidden lanes: H that is a power of two ≥ 16 pads nothing.
UNPADDED_H = [16, 32]


@st.composite
def cases(draw, backend, *, hidden=None, nonlinearity=None, nonfinite=(), require_nonfinite=False):
    dtypes = (KERNEL_DTYPES if backend == "triton" else STOCK_DTYPES if backend in STOCK_ON_DEVICE
              else KERNEL_DTYPES + [torch.float64])
    case = dict(
        B=draw(st.integers(1, 9)), T=draw(st.integers(1, 7)), I=draw(st.integers(1, 20)),
        H=draw(st.sampled_from(hidden) if hidden else st.integers(1, 40)), O=draw(st.integers(1, 6)),
        dtype=draw(st.sampled_from(dtypes)),
        layout=draw(st.sampled_from(["contiguous", "time_major", "strided_features", "broadcast_batch"])),
        h0=draw(st.sampled_from([None, "1BH", "BH"])),
        nonlinearity=nonlinearity or draw(st.sampled_from(["tanh", "relu"])),
        bias=draw(st.booleans()), fc_bias=draw(st.booleans()),
        use_lengths=draw(st.booleans()), use_h_n=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    case["lengths"] = (draw(st.lists(st.integers(1, case["T"]), min_size=case["B"], max_size=case["B"]))
                       if case["use_lengths"] else None)
    spots = []
    if nonfinite:
        targets = ["x", "x_padding", "bias_ih", "weight_ih", "weight_hh"] + (["h0"] if case["h0"] else [])
        n = draw(st.integers(1 if require_nonfinite else 0, 3))
        for _ in range(n):
            spots.append((draw(st.sampled_from(targets)), draw(st.sampled_from(nonfinite)),
                          draw(st.integers(0, 10**6))))
    case["nonfinite"] = spots
    return case


def build(case):
    """Leaves (x0, weights, h0) in the case's dtype, and x as the case's layout of x0."""
    g = torch.Generator().manual_seed(case["seed"])
    B, T, I, H, O, dtype = case["B"], case["T"], case["I"], case["H"], case["O"], case["dtype"]
    bound = H ** -0.5                                  # nn.RNN's and nn.Linear's init range

    def uniform(*shape):
        return ((torch.rand(*shape, generator=g) * 2 - 1) * bound)

    params = [uniform(H, I), uniform(H, H), uniform(H) if case["bias"] else None,
              uniform(H) if case["bias"] else None, uniform(O, H), uniform(O) if case["fc_bias"] else None]
    x0 = torch.randn((1 if case["layout"] == "broadcast_batch" else B, T, I), generator=g)
    h0 = torch.randn(B, H, generator=g) * 0.5 if case["h0"] else None
    lengths = torch.tensor(case["lengths"]) if case["lengths"] is not None else None
    for target, value, k in case["nonfinite"]:
        if target == "x_padding":
            if lengths is None or int(lengths.min()) == T:
                continue
            if case["layout"] == "broadcast_batch":
                continue                                # x0's one row is every sequence's: not padding for all
            b = int(torch.nonzero(lengths < T)[k % int((lengths < T).sum())])
            x0[b, int(lengths[b]) + k % (T - int(lengths[b])), k % I] = value
        elif target == "x":
            x0.view(-1)[k % x0.numel()] = value
        elif target == "h0":
            h0.view(-1)[k % h0.numel()] = value
        elif target == "bias_ih" and params[2] is not None:
            params[2][k % H] = value
        elif target == "weight_ih":
            params[0].view(-1)[k % (H * I)] = value
        elif target == "weight_hh":
            params[1].view(-1)[k % (H * H)] = value
    leaves = [t.to(DEVICE, dtype).requires_grad_() if t is not None else None for t in (x0, *params, h0)]
    return leaves, lengths


def layout(case, x0):
    """x [B, T, I] from the leaf x0, as the case's memory layout (a differentiable view or copy)."""
    B = case["B"]
    if case["layout"] == "time_major":
        return x0.transpose(0, 1).contiguous().transpose(0, 1)          # strides (I, B·I, 1)
    if case["layout"] == "strided_features":
        return torch.stack([x0, torch.zeros_like(x0)], dim=-1).flatten(-2)[..., ::2]
    if case["layout"] == "broadcast_batch":
        return x0.expand(B, -1, -1)                                     # batch stride 0
    return x0


# Unit roundoff of the products' operands, per dtype (the kernels round h and x to it every step).
ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def near_relu_kink(case, leaves, lengths):
    """Whether a relu pre-activation lies within its rounding error of 0 at some valid step.

    There relu's derivative (0 or 1) depends on the rounding, so the kernel, the
    stock path and the float64 loop may each take a different side: dx is then
    off by that step's whole contribution, in any implementation. Seen: fp16,
    |pre| = 1.7e-5 against a rounding bound of 2.5e-4. The bound is 4·u·Σ|terms|
    (u the dtype's unit roundoff, the terms x·W_ih, h·W_hh and the biases).
    """
    if case["nonlinearity"] != "relu":
        return False
    x0, w_ih, w_hh, b_ih, b_hh, _, _, h0 = [t.detach().double() if t is not None else None for t in leaves]
    x = layout(case, x0)
    B, T = x.shape[0], x.shape[1]
    h = h0 if h0 is not None else x.new_zeros(B, w_hh.shape[0])
    u = ROUNDOFF[case["dtype"]]
    for t in range(T):
        pre = x[:, t] @ w_ih.T + h @ w_hh.T
        size = x[:, t].abs() @ w_ih.abs().T + h.abs() @ w_hh.abs().T
        if b_ih is not None:
            pre, size = pre + b_ih + b_hh, size + b_ih.abs() + b_hh.abs()
        valid = torch.ones(B, dtype=torch.bool) if lengths is None else t < lengths
        near = (pre.abs() <= 4 * u * size) & torch.isfinite(size) & valid[:, None]
        if bool(near.any()):
            return True
        h = torch.where(valid[:, None], pre.clamp(min=0), h)
    return False


def check(case, backend):
    leaves, lengths = build(case)
    assume(not near_relu_kink(case, leaves, lengths))
    x0, *params, h0 = leaves
    h0_arg = h0.unsqueeze(0) if (h0 is not None and case["h0"] == "1BH") else h0
    y, h_n = rnn_linear(layout(case, x0), *params, h0_arg, lengths=lengths, nonlinearity=case["nonlinearity"],
                        return_hidden=True, backend=backend)
    ref = [t.detach().double().requires_grad_() if t is not None else None for t in leaves]
    y_ref, h_ref = rnn_linear_loop(layout(case, ref[0]), *ref[1:7], ref[7], lengths=lengths,
                                   nonlinearity=case["nonlinearity"])
    dtype = case["dtype"]
    assert y.dtype == dtype and y.shape == y_ref.shape and h_n.shape == (1, *h_ref.shape)
    torch.testing.assert_close(y.double(), y_ref, equal_nan=True, **FWD_TOL[dtype])
    torch.testing.assert_close(h_n[0].double(), h_ref, equal_nan=True, **FWD_TOL[dtype])

    g = torch.Generator().manual_seed(case["seed"] + 1)
    dy = torch.randn(y.shape, generator=g).to(DEVICE, dtype)
    dh_n = torch.randn(h_n.shape, generator=g).to(DEVICE, dtype)
    outputs, grads = ([y, h_n], [dy, dh_n]) if case["use_h_n"] else ([y], [dy])
    torch.autograd.backward(outputs, grads)
    ref_loss = (y_ref * dy.double()).sum() + ((h_ref * dh_n[0].double()).sum() if case["use_h_n"] else 0)
    ref_loss.backward()
    for name, got, want in zip(NAMES, leaves, ref):
        if got is None:
            continue
        assert got.grad is not None and got.grad.dtype == dtype, name
        finite = want.grad[torch.isfinite(want.grad)]
        scale = finite.abs().max().item() if finite.numel() else 1.0
        tol = GRAD_TOL[dtype]
        torch.testing.assert_close(got.grad.double(), want.grad, atol=tol * max(scale, 1e-3), rtol=tol,
                                   equal_nan=True, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_finite_cases(backend):
    @settings(max_examples=40, **SETTINGS)
    @given(cases(backend))
    def run(case):
        check(case, backend)
    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_tanh(backend):
    """NaN anywhere; ±Inf with an unpadded H (see test_inf_with_padded_hidden for the rest)."""
    inf = float("inf")

    @settings(max_examples=25, **SETTINGS)
    @given(st.one_of(
        cases(backend, nonlinearity="tanh", nonfinite=(float("nan"),), require_nonfinite=True),
        cases(backend, nonlinearity="tanh", hidden=UNPADDED_H, nonfinite=(float("nan"), inf, -inf),
              require_nonfinite=True)))
    def run(case):
        check(case, backend)
    run()


@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_nonfinite_in_padding_only(backend):
    """NaN and ±Inf after each sequence's length: never read, by any output or gradient, with relu too."""
    @settings(max_examples=20, **SETTINGS)
    @given(cases(backend, nonfinite=(float("nan"), float("inf"), -float("inf")), require_nonfinite=True)
           .map(lambda c: dict(c, nonfinite=[s for s in c["nonfinite"] if s[0] == "x_padding"]))
           .filter(lambda c: c["lengths"] is not None and c["layout"] != "broadcast_batch"))
    def run(case):
        check(case, backend)
    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_keeps_nan(backend):
    """A NaN in x's valid steps, with relu: the output row is NaN, as in nn.RNN."""
    @settings(max_examples=10, **SETTINGS)
    @given(cases(backend, nonlinearity="relu")
           .map(lambda c: dict(c, lengths=None, layout="contiguous", nonfinite=[("x", float("nan"), c["seed"])])))
    def run(case):
        check(case, backend)
    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_with_padded_hidden(backend):
    """±Inf in x with H not a power of two ≥ 16 and tanh: finite where the loop is finite."""
    @settings(max_examples=10, **SETTINGS)
    @given(cases(backend, nonlinearity="tanh", hidden=[5, 20, 33])
           .map(lambda c: dict(c, lengths=None, layout="contiguous", nonfinite=[("x", float("inf"), c["seed"])])))
    def run(case):
        check(case, backend)
    run()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tanh_relative_accuracy_near_zero(backend):
    """Inputs and weights at 1e-4 scale: fp32 stock keeps ~1e-7 relative error; require 1e-5."""
    torch.manual_seed(0)
    B, T, I, H, O = 8, 4, 6, 20, 3
    scale = 1e-4
    x = torch.randn(B, T, I, device=DEVICE) * scale
    params = [torch.randn(s, device=DEVICE) * scale for s in ((H, I), (H, H), (H,), (H,))]
    fc = [torch.eye(O, H, device=DEVICE), None]
    _, h_n = rnn_linear(x, *params, *fc, return_hidden=True, backend=backend)
    _, h_ref = rnn_linear_loop(x.double(), *[p.double() for p in params], fc[0].double(), None)
    torch.testing.assert_close(h_n[0].double(), h_ref, atol=0, rtol=1e-5)
