"""Non-finite values, tiny activations and the precision modes, kernel against the float64 loop.

Stock nn.RNN propagates NaN through relu, keeps ±inf finite through tanh, and
computes tanh to fp32 accuracy near 0; the kernel must do the same.
"""

import pytest
import torch

from conftest import kernels
from fused_rnn import rnn_linear
from helpers import DEVICE, TOL, as_float64, make_params, rnn_linear_loop, run_python


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
    T, I, H, O = 1, 16, 16, 1                 # one sequence per pre-activation value
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


def check_tf32_split(w, hi, lo):
    """hi TF32-exact, hi + lo = w exactly, lo within TF32's rounding; a TF32-exact nonzero weight keeps
    a remainder of ±2^-126 (its sign), zero stays zero, NaN stays NaN in hi."""
    nan = w.isnan()
    assert torch.equal(hi.view(torch.int32)[~nan] & 0x1FFF, torch.zeros_like(hi.view(torch.int32)[~nan]))
    exact = ((w.view(torch.int32) & 0x1FFF) == 0) & ~nan
    assert torch.equal((hi + lo)[~exact & ~nan], w[~exact & ~nan])
    assert (lo[~exact & ~nan].abs() <= w[~exact & ~nan].abs() * 2.0 ** -10).all()
    assert torch.equal(hi[exact], w[exact])
    want_lo = torch.where(w[exact] == 0, 0.0, torch.where(w[exact] < 0, -(2.0 ** -126), 2.0 ** -126))
    assert torch.equal(lo[exact], want_lo)
    assert hi[nan].isnan().all()


@pytest.mark.parametrize("shapes", [[(1000,)], [(20, 10), (20, 20), (1, 20)], [(37, 5), (3, 37, 37), (2, 7)]],
                         ids=["one", "seed", "odd"])
def test_split_tf32_weights_is_exact(shapes):
    """One launch splits every weight as _mm splits its operand b (_split_tf32)."""
    ws = [torch.randn(s) * 10.0 ** torch.randint(-20, 20, s) for s in shapes]
    ws[0].view(-1)[:5] = torch.tensor([0.5, -0.25, 0.0, 3.0, float("inf")])   # TF32-exact, zero, infinite
    ws[-1].view(-1)[-1] = float("nan")
    pairs = kernels.split_tf32_weights(*[w.to(DEVICE) for w in ws])
    for w, (hi, lo) in zip(ws, pairs):
        assert hi.shape == w.shape and lo.shape == w.shape
        check_tf32_split(w.view(-1), hi.cpu().reshape(-1), lo.cpu().reshape(-1))


# fp32 bit patterns: NaNs whose payload is only in the 13 bits the split clears (0x7F800001 would become +inf
# without its own case) or with the sign set, ±inf, ±0, subnormals (the smallest, a negative one, the largest,
# one with bits on both sides of the cut), the smallest normal, the largest finite, 1 + 2^-23 and 1.
SPECIAL_BITS = [0x7F800001, 0x7FC00001, 0xFFC00000, 0xFF801234, 0x7F800000, 0xFF800000, 0x80000000, 0x00000000,
                0x00000001, 0x80000001, 0x007FFFFF, 0x00402001, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x3F800001,
                0x3F800000]


def split_bits(bits):
    """The split of one fp32 bit pattern as Python integers, written from the definition (see _split_tf32)."""
    import struct

    def value(b):
        return struct.unpack("<f", struct.pack("<I", b))[0]

    w = value(bits)
    if w != w:
        return bits, 0x00800000                         # hi keeps the NaN; lo: +2^-126 (a NaN is not < 0)
    hi = bits & 0xFFFFE000
    lo = w - value(hi)                                  # exact in float64, and representable in fp32
    if (lo == 0 or lo != lo) and w != 0:
        return hi, 0x80800000 if w < 0 else 0x00800000
    return hi, struct.unpack("<I", struct.pack("<f", lo))[0]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_split_tf32_weights_special_values_bit_for_bit(layout):
    """Non-finite values, signed zeros and subnormals split bit for bit as the definition says, from any
    layout of the weight (a transposed or sliced Parameter reaches split_tf32_weights as it is)."""
    bits = torch.tensor(SPECIAL_BITS * 3, dtype=torch.int64).to(torch.int32)
    base = bits.view(torch.float32).reshape(3, len(SPECIAL_BITS)).to(DEVICE)
    w = {"contiguous": base, "transposed": base.t(), "sliced": base[:, ::1][1:]}[layout]
    (hi, lo), = kernels.split_tf32_weights(w)
    assert hi.shape == w.shape and lo.shape == w.shape
    got = list(zip(hi.cpu().reshape(-1).view(torch.int32).tolist(), lo.cpu().reshape(-1).view(torch.int32).tolist()))
    want = [split_bits(b & 0xFFFFFFFF) for b in w.cpu().reshape(-1).view(torch.int32).tolist()]
    assert [(h & 0xFFFFFFFF, l & 0xFFFFFFFF) for h, l in got] == want

@pytest.mark.parametrize("I,expected", [
    (64, ["_split_tf32_kernel", "_rnn_linear_fwd"]),
    (10, ["_rnn_linear_fwd"]),      # the seed's tiles: the kernel splits them itself (kernels.split_in_kernel)
])
def test_3xtf32_splits_the_weights_in_one_launch(I, expected, monkeypatch):
    """IEEE fp32 ("tf32x3") calls launch the recurrence's kernel and one split kernel (none for tiles
    small enough to split in the kernel), and dispatch no elementwise torch ops for the split (they were
    42 launches per call of the seed's forward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    launched, ops = [], []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__)
            return func(*args, **(kwargs or {}))

    real_launch = kernels._launch

    def launch(kernel, *args, **kwargs):
        launched.append(getattr(kernel, "fn", kernel).__name__)
        with torch.utils._python_dispatch._disable_current_modes():   # the interpreter's own tensor ops
            real_launch(kernel, *args, **kwargs)

    monkeypatch.setattr(kernels, "_launch", launch)
    params = make_params(I, 20, 1, seed=7)
    x = torch.randn(32, 5, I, device=DEVICE)
    with Ops():
        kernels.rnn_linear_fwd(x, *params, allow_tf32=False)
    assert launched == expected
    assert set(ops) <= {"empty.memory_format", "slice.Tensor", "view.default", "new_empty.default",
                        "clone.default", "detach.default", "fill_.Scalar"}, ops


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


def float_from_bits(bits):
    """A one-element fp32 tensor with exactly these bits (a Python float would quiet the NaN's payload)."""
    return torch.tensor([bits], dtype=torch.int64).to(torch.int32).view(torch.float32).to(DEVICE)


@pytest.mark.parametrize("x_kind", ["random", "tf32_exact"])
def test_infinite_weight_in_3xtf32(x_kind):
    """W_ih = +inf with positive x: stock's unit is tanh(+inf) = 1 and every output finite.

    Splitting inf gives inf - inf = NaN, and a TF32-exact x (1.5) leaves a zero
    remainder, so inf·0 = NaN: both must be avoided.
    """
    B, T, I, H, O = 3, 2, 16, 16, 2
    params = list(make_params(I, H, O, seed=90))
    params[0] = params[0].clone()
    params[0][4, 2] = float("inf")
    x = torch.rand(B, T, I, device=DEVICE) + 0.1
    if x_kind == "tf32_exact":
        x[:, :, 2] = 1.5
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, allow_tf32=False)
    assert torch.isfinite(y_ref).all()
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])


def test_infinite_fc_weight_in_3xtf32():
    """fc_weight = +inf with every state positive: stock's y is +inf in that column, not NaN."""
    B, T, I, H, O = 3, 2, 16, 16, 2
    params = [p.abs() for p in make_params(I, H, O, seed=91)]
    params[4][1, 5] = float("inf")
    x = torch.rand(B, T, I, device=DEVICE) + 0.1
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, allow_tf32=False)
    assert not torch.isnan(y_ref).any() and torch.isinf(y_ref[:, 1]).all()
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])


@pytest.mark.parametrize("where,bits", [("x", 0x7F800001), ("h0", 0xFF800003)])
def test_nan_with_payload_in_the_low_bits_stays_nan(where, bits):
    """Clearing the low 13 mantissa bits of such a NaN (3xTF32's split) would make it ±inf."""
    B, T, I, H, O = 2, 2, 16, 16, 2
    params = make_params(I, H, O, seed=92)
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = torch.randn(B, H, device=DEVICE) * 0.5
    if where == "x":
        x[0, 1, 3] = float_from_bits(bits)[0]
    else:
        h0[0, 6] = float_from_bits(bits)[0]
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, h0, allow_tf32=False)
    assert torch.isnan(y_ref[0]).all() and not torch.isnan(y_ref[1]).any()
    torch.testing.assert_close(y.double(), y_ref, equal_nan=True, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, equal_nan=True, **TOL[torch.float32])


@pytest.mark.xfail(strict=True, reason="3xTF32 flushes a weight below 2^-126 to a zero hi and a remainder "
                   "the tensor core may treat as 0: 0·inf = NaN where stock has ±inf (README)")
def test_subnormal_weight_times_infinite_input_in_3xtf32():
    B, T, I, H, O = 2, 1, 16, 16, 2
    params = list(make_params(I, H, O, seed=95))
    params[0] = params[0].clone()
    params[0][:, 3] = 0.5
    params[0][7, 3] = 2.0 ** -140
    x = torch.randn(B, T, I, device=DEVICE)
    x[0, 0, 3] = float("inf")
    y, h_n, y_ref, h_ref = kernel_and_loop(x, params, allow_tf32=False)
    assert torch.isfinite(y_ref).all()
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])


def test_backward_overflow_with_padded_hidden_is_inf_like_stock():
    """H = 20 pads to 32: an infinite dh times a padded zero weight is NaN in a padded row of the sweep,
    which the next step would carry into every real row. Stock's dx and dh0 are +inf (all values positive).
    """
    B, T, I, H, O = 2, 3, 4, 20, 2
    torch.manual_seed(94)
    w_ih = torch.rand(H, I, device=DEVICE) * 0.2
    w_hh = torch.rand(H, H, device=DEVICE) * 0.1
    b = torch.rand(H, device=DEVICE) * 0.1
    fc_w = torch.full((O, H), 2.0, device=DEVICE)
    fc_b = torch.zeros(O, device=DEVICE)
    x = torch.rand(B, T, I, device=DEVICE)
    h0 = torch.rand(B, H, device=DEVICE) * 0.5
    dy = torch.full((B, O), 3e38, device=DEVICE)       # finite; fc_Wᵀ·dy = 1.2e39 overflows to inf
    grads = {}
    for backend in ("torch", "triton"):
        leaves = [t.clone().requires_grad_() for t in (x, h0)]
        rnn_linear(leaves[0], w_ih, w_hh, b, b.clone(), fc_w, fc_b, leaves[1], backend=backend).backward(dy)
        grads[backend] = [t.grad for t in leaves]
    assert all(torch.isposinf(g).all() for g in grads["torch"])
    for got, want in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(got, want)


COMPILE_FOR_T = """
import sys, torch
from benchmarks import static_report
static_report._install_recorder()
for T in map(int, sys.argv[1:]):
    (_, kernel, _), = static_report.compile_launches("forward", (17, T, 10, 20, 1), torch.float32, True)
    print(kernel.hash)
"""


def test_time_steps_do_not_change_the_compiled_forward():
    """With I = 10, x's batch stride T·I is a multiple of 16 at T = 8 but not at T = 5: still one kernel.

    Compiled for sm_90a as a GPU launch would be (JIT specialization included), no GPU needed.
    """
    out = run_python("-c", COMPILE_FOR_T, "5", "8", "1", env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stderr[-2000:]
    hashes = out.stdout.split()
    assert len(hashes) == 3 and len(set(hashes)) == 1


def test_block_and_cdiv_match_triton():
    """kernels.block/cdiv (host-side int arithmetic) against triton's."""
    import triton
    for n in range(0, 3000):
        assert kernels.block(n) == max(16, triton.next_power_of_2(n)), n
        assert kernels.cdiv(n, 16) == triton.cdiv(n, 16), n


@pytest.mark.parametrize("I,H,O", [(10, 20, 1), (32, 32, 32), (3, 17, 5)])
@pytest.mark.parametrize("store_hs", [False, True])
def test_3xtf32_split_in_the_kernel_gives_the_split_launchs_bits(I, H, O, store_hs, monkeypatch):
    """Small tiles split their 3xTF32 weights in the forward kernel (kernels.split_in_kernel) instead of
    taking split_tf32_weights' halves: the same _split_tf32, so the same outputs, bit for bit, non-finite
    weights included; and one launch where there were two."""
    B, T = 5, 7
    torch.manual_seed(I * H + O)
    x = torch.randn(B, T, I)
    w_ih, w_hh, fc_w = torch.randn(H, I) * 0.3, torch.randn(H, H) * 0.3, torch.randn(O, H)
    b_ih, b_hh, fc_b = torch.randn(H), torch.randn(H), torch.randn(O)
    w_hh[0, 1], w_ih[2, 0] = float("inf"), 1e-40           # an infinite and a subnormal weight
    args = (x, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b)
    launches = []
    real_launch = kernels._launch
    monkeypatch.setattr(kernels, "_launch",
                        lambda kernel, *a, **kw: (launches.append(kernel), real_launch(kernel, *a, **kw)))
    assert kernels.split_in_kernel("tf32x3", kernels.block(I), kernels.forward_block_h(H, "tf32x3"), kernels.block(O))
    here = kernels.rnn_linear_fwd(*args, allow_tf32=False, store_hn=True, store_hs=store_hs)
    assert len(launches) == 1
    monkeypatch.setattr(kernels, "split_in_kernel", lambda *args: False)
    launches.clear()
    apart = kernels.rnn_linear_fwd(*args, allow_tf32=False, store_hn=True, store_hs=store_hs)
    assert len(launches) == 2
    for got, want in zip(here, apart):
        if want is not None:
            assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
