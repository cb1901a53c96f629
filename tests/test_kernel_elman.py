"""The Elman kernels of the layer contract (fused_rnn/kernels/elman.py) against the float64 loop oracle.

Forward: out, h_n and the saved states hs against tests/oracles.py's
recurrence_loop on the same (rounded) inputs. Backward: dxp and dh0 against
autograd on that oracle, and the weight gradients the caller would form from
the kernel's dgh (dW_hh = Σ_t dgh_tᵀ h_{t-1}, db_hh = Σ_t dgh_t) against the
oracle's. The bidirectional launch (both directions, grid axis 1) is checked
direction by direction against the same references. Every kernel output starts
NaN (conftest), so a lane the kernel forgot to write fails.
"""

import pytest
import torch

from conftest import DEVICE, TOL, kernels
from fused_rnn.kernels import elman, rnn_linear
from oracles import recurrence_loop

# fp32 with allow_tf32: one TF32 pass per product on a GPU (~2^-11 relative
# each, ~1e-3 after a few steps); the interpreter's products are exact fp32.
TF32_TOL = TOL[torch.float32] if kernels.INTERPRETED else dict(atol=5e-3, rtol=5e-3)
RAGGED = [7, 1, 4, 7, 3]  # B = 5, T = 7: lengths 1 and T, and between


def tolerance(dtype, allow_tf32):
    return TF32_TOL if dtype == torch.float32 and allow_tf32 else TOL[dtype]


def make_inputs(cell, B, T, H, *, dtype=torch.float32, h0=True, bias=True, lengths=None, time_major=False,
                seed=0):
    """(xp, w_hh, b_hh, h0, lengths), weights scaled so tanh is not saturated and relu does not blow up.

    Drawn on CPU, then moved to DEVICE: the same values on every device. (On a GPU the bf16/fp16 state
    is rounded as the MMA operand every step, and a relu pre-activation within that rounding of 0 would
    flip relu' against the oracle; with these values, emulated, none does.)
    """
    torch.manual_seed(seed)
    scale = 0.9 if cell == "rnn_tanh" else 0.5
    if time_major:  # a batch_first=False caller passes a [T, B, H] buffer as a transposed view
        xp = torch.randn(T, B, H).to(DEVICE).transpose(0, 1)
    else:
        xp = torch.randn(B, T, H).to(DEVICE)
    w_hh = torch.randn(H, H).to(DEVICE) * scale / H ** 0.5
    b_hh = torch.randn(H).to(DEVICE) * 0.3 if bias else None
    h_0 = torch.randn(B, H).to(DEVICE) * 0.5 if h0 else None
    lengths = torch.tensor(lengths, device=DEVICE, dtype=torch.int64) if lengths is not None else None
    cast = (lambda t: t.to(dtype) if t is not None else None)
    return cast(xp), cast(w_hh), cast(b_hh), cast(h_0), lengths


def double(t):
    return t.detach().double() if t is not None else None


def oracle_forward(cell, xp, w_hh, b_hh, h0, lengths, reverse):
    out, h_n, _ = recurrence_loop(cell, double(xp), double(w_hh), double(b_hh), double(h0), None,
                                  lengths.cpu() if lengths is not None else None, reverse)
    return out.to(xp.device), h_n.to(xp.device)


def forward(cell, xp, w_hh, b_hh, h0, lengths, *, reverse, allow_tf32=False, store_out=True, store_saved=True):
    out, h_n, c_n, hs, aux = elman.recurrence_fwd(cell, xp, w_hh, b_hh, h0, None, lengths, reverse=reverse,
                                                  allow_tf32=allow_tf32, store_out=store_out,
                                                  store_saved=store_saved)
    assert c_n is None and aux is None
    return out, h_n, hs


def check_forward(cell, xp, w_hh, b_hh, h0, lengths, *, reverse, allow_tf32=False, store_out=True, equal_nan=False):
    out, h_n, hs = forward(cell, xp, w_hh, b_hh, h0, lengths, reverse=reverse, allow_tf32=allow_tf32,
                           store_out=store_out)
    out_ref, h_ref = oracle_forward(cell, xp, w_hh, b_hh, h0, lengths, reverse)
    tol = tolerance(xp.dtype, allow_tf32)
    B, T, H = xp.shape
    assert h_n.dtype == xp.dtype and h_n.shape == (B, H)
    assert hs.dtype == torch.float32 and hs.shape == (B, T, H) and hs.is_contiguous()
    if store_out:
        assert out.dtype == xp.dtype and out.shape == (B, T, H) and out.is_contiguous()
        torch.testing.assert_close(out.double(), out_ref, equal_nan=equal_nan, **tol)
    else:
        assert out is None
    torch.testing.assert_close(h_n.double(), h_ref, equal_nan=equal_nan, **tol)
    torch.testing.assert_close(hs.double(), out_ref, equal_nan=equal_nan, **tol)
    if lengths is not None:  # exactly 0 past each length (the oracle's are)
        past = torch.arange(T, device=xp.device)[None, :] >= lengths[:, None]
        assert (out[past] == 0).all() if store_out else True
        assert (hs[past] == 0).all()
    return out, h_n, hs


def previous_states(hs, h0, lengths, reverse):
    """h_{t-1} for the step at each position t: the state before it in processing order ([B, T, H], float64)."""
    B, T, H = hs.shape
    hs = hs.double()
    h0 = h0.double() if h0 is not None else hs.new_zeros(B, H)
    prev = hs.new_zeros(B, T, H)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        for t in range(n):
            first = t == (n - 1 if reverse else 0)
            prev[b, t] = h0[b] if first else hs[b, t + 1 if reverse else t - 1]
    return prev


def make_gradients(B, T, H, dtype, *, with_dout=True, with_dh_n=True, dout_time_major=False, lengths=None,
                   poison_padding=False, seed=1, directions=1):
    """(dout [B, T, D·H] or None, dh_n [B, H] / [D, B, H] or None); NaN in dout past lengths if poison_padding.

    Drawn on CPU, then moved to DEVICE (as make_inputs).
    """
    torch.manual_seed(seed)
    dout = dh_n = None
    if with_dout:
        W = directions * H
        dout = (torch.randn(T, B, W).to(DEVICE).transpose(0, 1) if dout_time_major
                else torch.randn(B, T, W).to(DEVICE)).to(dtype)
        if poison_padding:  # out is 0 there whatever the inputs: its gradient must not be read
            past = torch.arange(T, device=DEVICE)[None, :] >= lengths[:, None]
            dout[past] = float("nan")
    if with_dh_n:
        dh_n = torch.randn(*((directions,) if directions > 1 else ()), B, H).to(DEVICE, dtype)
    return dout, dh_n


def reference_gradients(cell, xp, w_hh, b_hh, h0, lengths, reverse, dout, dh_n):
    """Autograd on the float64 oracle: ∂L/∂xp, ∂L/∂h0, ∂L/∂W_hh, ∂L/∂b_hh (None without b_hh)
    for L = Σ out·dout + Σ h_n·dh_n, NaN in dout at padding positions ignored (out is constant 0 there)."""
    B = xp.shape[0]
    xp64, w64 = double(xp).requires_grad_(), double(w_hh).requires_grad_()
    b64 = double(b_hh).requires_grad_() if b_hh is not None else None
    h064 = (double(h0) if h0 is not None else xp64.new_zeros(B, w_hh.shape[1])).requires_grad_()
    out_ref, h_ref, _ = recurrence_loop(cell, xp64, w64, b64, h064, None,
                                        lengths.cpu() if lengths is not None else None, reverse)
    loss = 0 * h_ref.sum()  # a graph even with neither gradient
    if dout is not None:
        loss = loss + (out_ref * double(dout)).nansum()
    if dh_n is not None:
        loss = loss + (h_ref * double(dh_n)).sum()
    inputs = [xp64, h064, w64] + ([b64] if b64 is not None else [])
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs)]
    return grads + [None] * (4 - len(grads))


def assert_gradients(dxp, dh0, hs, h0, lengths, reverse, reference, tol, equal_nan=False):
    """The kernel's dxp (= dgh) and dh0, and the caller's dW_hh = Σ_t dgh_tᵀ h_{t-1} and db_hh = Σ_t dgh_t
    formed from them, against reference_gradients."""
    dxp_ref, dh0_ref, dw_ref, db_ref = reference
    torch.testing.assert_close(dxp.double(), dxp_ref, equal_nan=equal_nan, **tol)
    torch.testing.assert_close(dh0.double(), dh0_ref, equal_nan=equal_nan, **tol)
    if lengths is not None:
        past = torch.arange(dxp.shape[1], device=dxp.device)[None, :] >= lengths[:, None]
        assert (dxp[past] == 0).all()
    if not equal_nan:
        prev = previous_states(hs, h0, lengths, reverse)
        torch.testing.assert_close(torch.einsum("bti,btj->ij", dxp.double(), prev), dw_ref, **tol)
        if db_ref is not None:
            torch.testing.assert_close(dxp.double().sum((0, 1)), db_ref, **tol)


def check_backward(cell, xp, w_hh, b_hh, h0, lengths, *, reverse, allow_tf32=False, with_dout=True,
                   with_dh_n=True, dout_time_major=False, poison_padding=False, equal_nan=False, seed=1):
    """The kernel's backward after its own forward (store_saved) against autograd on the oracle."""
    B, T, H = xp.shape
    _, _, hs = forward(cell, xp, w_hh, b_hh, h0, lengths, reverse=reverse, allow_tf32=allow_tf32,
                       store_out=False)
    dout, dh_n = make_gradients(B, T, H, xp.dtype, with_dout=with_dout, with_dh_n=with_dh_n,
                                dout_time_major=dout_time_major, lengths=lengths,
                                poison_padding=poison_padding, seed=seed)
    dxp, dgh, dh0, dc0 = elman.recurrence_bwd(cell, hs, None, w_hh, b_hh, h0, None, dout, dh_n, None, lengths,
                                              reverse=reverse, allow_tf32=allow_tf32)
    assert dgh is dxp and dc0 is None
    assert dxp.dtype == torch.float32 and dxp.shape == (B, T, H) and dh0.dtype == torch.float32
    reference = reference_gradients(cell, xp, w_hh, b_hh, h0, lengths, reverse, dout, dh_n)
    assert_gradients(dxp, dh0, hs, h0, lengths, reverse, reference, tolerance(xp.dtype, allow_tf32), equal_nan)
    return dxp, dh0


CELLS = ["rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("h0_bias", [True, False], ids=["h0_bias", "no_h0_bias"])
def test_forward_matches_loop(cell, reverse, lengths, h0_bias):
    inputs = make_inputs(cell, 5, 7, 20, h0=h0_bias, bias=h0_bias, lengths=lengths)
    check_forward(cell, *inputs, reverse=reverse)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
def test_backward_matches_autograd(cell, reverse, lengths):
    inputs = make_inputs(cell, 5, 7, 20, lengths=lengths, seed=2)
    check_backward(cell, *inputs, reverse=reverse)


@pytest.mark.parametrize("with_dout, with_dh_n", [(True, False), (False, True), (False, False)])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_without_some_gradients(with_dout, with_dh_n, reverse):
    """dout None (the last layer under a head) or dh_n None (h_n unused): those terms are 0."""
    inputs = make_inputs("rnn_tanh", 5, 7, 20, h0=False, bias=False, lengths=RAGGED, seed=3)
    dxp, dh0 = check_backward("rnn_tanh", *inputs, reverse=reverse, with_dout=with_dout, with_dh_n=with_dh_n)
    if not (with_dout or with_dh_n):
        assert (dxp == 0).all() and (dh0 == 0).all()


@pytest.mark.parametrize("B, T, H, lengths", [
    (5, 7, 16, [3, 7, 1, 6, 2]),          # H a block size: no padded rows
    (17, 5, 20, [5, 1] * 8 + [4]),        # B crosses a tile of 16 sequences
    (3, 1, 33, None),                     # T = 1, H just past a block
], ids=["H16", "B17", "T1_H33"])
@pytest.mark.parametrize("cell", CELLS)
def test_odd_sizes(B, T, H, lengths, cell):
    inputs = make_inputs(cell, B, T, H, lengths=lengths, seed=4)
    check_forward(cell, *inputs, reverse=True)
    check_backward(cell, *inputs, reverse=True)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_time_major_views(reverse):
    """batch_first=False: xp and dout arrive as transposed views of [T, B, H] buffers."""
    inputs = make_inputs("rnn_relu", 5, 7, 20, lengths=RAGGED, time_major=True, seed=5)
    assert not inputs[0].is_contiguous()
    check_forward("rnn_relu", *inputs, reverse=reverse)
    check_backward("rnn_relu", *inputs, reverse=reverse, dout_time_major=True)


@pytest.mark.parametrize("cell", CELLS)
def test_store_out_false(cell):
    """The last layer under a head writes no out: None, and h_n and hs as ever."""
    inputs = make_inputs(cell, 5, 7, 20, lengths=RAGGED, seed=6)
    check_forward(cell, *inputs, reverse=False, store_out=False)


def test_no_saved_states():
    """Inference: hs is None, out and h_n as with it."""
    cell = "rnn_tanh"
    inputs = make_inputs(cell, 5, 7, 20, lengths=RAGGED, seed=7)
    out, h_n, hs = forward(cell, *inputs, reverse=True, store_saved=False)
    out_ref, h_ref = oracle_forward(cell, *inputs, True)
    assert hs is None
    torch.testing.assert_close(out.double(), out_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])


@pytest.mark.parametrize("dtype, allow_tf32", [(torch.float32, True), (torch.bfloat16, False),
                                               (torch.float16, False)], ids=["tf32", "bf16", "fp16"])
@pytest.mark.parametrize("cell", CELLS)
def test_precisions(dtype, allow_tf32, cell):
    """TF32 products, and bf16/fp16 operands (the state rounded to the dtype as the MMA's operand)."""
    inputs = make_inputs(cell, 5, 7, 20, dtype=dtype, lengths=RAGGED, seed=8)
    check_forward(cell, *inputs, reverse=True, allow_tf32=allow_tf32)
    check_backward(cell, *inputs, reverse=False, allow_tf32=allow_tf32)


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_non_finite_padding_is_never_read(value, reverse):
    """xp past a length (padding) is never read: an inf or NaN there changes nothing."""
    cell = "rnn_relu"
    inputs = make_inputs(cell, 5, 7, 20, lengths=RAGGED, seed=9)
    xp = inputs[0].clone()
    xp[1, 1:] = value      # length 1
    xp[4, 3, 5] = value    # length 3
    out, h_n, hs = check_forward(cell, xp, *inputs[1:], reverse=reverse)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(hs).all()
    dxp, dh0 = check_backward(cell, xp, *inputs[1:], reverse=reverse, poison_padding=True)
    assert torch.isfinite(dxp).all() and torch.isfinite(dh0).all()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_nan_in_valid_step_propagates(cell, reverse):
    """A NaN at a valid position spreads through W_hh as in the oracle (relu keeps NaN: not tl.maximum)."""
    inputs = make_inputs(cell, 5, 7, 20, lengths=RAGGED, seed=10)
    xp = inputs[0].clone()
    xp[3, 2, 4] = float("nan")
    out, h_n, _ = check_forward(cell, xp, *inputs[1:], reverse=reverse, equal_nan=True)
    assert out[3].isnan().any() and h_n[3].isnan().all()
    assert not out[[0, 1, 2, 4]].isnan().any()    # other sequences untouched
    if cell == "rnn_tanh":  # relu's backward at a NaN state is threshold_backward's, not the oracle's clamp's
        check_backward(cell, xp, *inputs[1:], reverse=reverse, equal_nan=True)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("where", ["xp", "h0"])
def test_infinity_with_padded_hidden_stays_finite(sign, where):
    """H = 20 pads to 32: inf times a padded zero weight is NaN, which must not reach real rows."""
    cell = "rnn_tanh"
    xp, w_hh, b_hh, h0, lengths = make_inputs(cell, 5, 7, 20, lengths=RAGGED, seed=11)
    xp, h0 = xp.clone(), h0.clone()
    if where == "xp":
        xp[0, 2, 6] = sign * float("inf")
    else:
        h0[0, 6] = sign * float("inf")
    out, h_n, _ = check_forward(cell, xp, w_hh, b_hh, h0, lengths, reverse=False)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all()


def test_empty_batch_and_zero_steps():
    """B = 0 launches nothing; T = 0 returns h_n = h0 and dh0 = dh_n."""
    cell = "rnn_tanh"
    xp, w_hh, b_hh, h0, _ = make_inputs(cell, 0, 3, 20)
    out, h_n, hs = forward(cell, xp, w_hh, b_hh, h0, None, reverse=False)
    assert out.shape == (0, 3, 20) and h_n.shape == (0, 20) and hs.shape == (0, 3, 20)
    xp, w_hh, b_hh, h0, _ = make_inputs(cell, 3, 0, 20)
    out, h_n, hs = forward(cell, xp, w_hh, b_hh, h0, None, reverse=True)
    assert out.shape == (3, 0, 20)
    torch.testing.assert_close(h_n, h0, rtol=0, atol=0)
    dh_n = torch.randn(3, 20, device=DEVICE)
    dxp, _, dh0, _ = elman.recurrence_bwd(cell, hs, None, w_hh, b_hh, h0, None, None, dh_n, None, None,
                                          reverse=True, allow_tf32=False)
    assert dxp.shape == (3, 0, 20)
    torch.testing.assert_close(dh0, dh_n, rtol=0, atol=0)


# Shared memory per block for sm_90a (metadata.shared) from Triton 3.6 and 3.9, compiled without a GPU as
# benchmarks/static_report.py does (B = 16, T = 8; the figure does not depend on them):
# (dtype, BLOCK_H, allow_tf32, store_saved, backward) -> (bytes with 3.6, bytes with 3.9).
# Where rnn_linear.weights_in_registers holds W_hh in registers, 3.6 allocates less (the step's operand
# only: bf16 at 128 and 256; fp32 at 128 keeps a 64 KiB region for the one-time reorder of the
# forward's weights); 3.9 keeps W_hh in shared memory: 36864 B for bf16 at 128, the estimate's figure.
COMPILED_SMEM = {
    (torch.bfloat16, 128, True, False, False): (8192, 36864),
    (torch.bfloat16, 128, True, True, False): (8192, 36864),
    (torch.float32, 128, True, False, False): (65536, 73728),
    (torch.float32, 128, False, False, False): (147456, 147456),
    (torch.bfloat16, 256, True, False, False): (32768, 139264),
    (torch.float16, 256, True, True, False): (32768, 139264),
    (torch.bfloat16, 128, True, False, True): (16384, 36864),
    (torch.float32, 128, True, False, True): (8192, 73728),
    (torch.float32, 128, False, False, True): (147456, 147456),
    (torch.bfloat16, 256, True, False, True): (32768, 139264),
}


@pytest.mark.parametrize("config", list(COMPILED_SMEM), ids=str)
def test_smem_estimate_never_below_compiled(config):
    """What unsupported_reason decides with: never below what either Triton allocates, and not far above
    the larger (the estimate counts W_hh in shared memory, as 3.9 places it)."""
    dtype, block_h, allow_tf32, store_saved, backward = config
    estimate = elman.smem_bytes(dtype, block_h, allow_tf32, store_saved=store_saved, backward=backward)
    assert max(COMPILED_SMEM[config]) <= estimate <= max(COMPILED_SMEM[config]) + 1024


def test_unsupported_reason():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for allow_tf32 in (False, True):
            assert elman.unsupported_reason("rnn_tanh", dtype, 128, allow_tf32, needs_grad=True) is None
    assert elman.unsupported_reason("rnn_relu", torch.bfloat16, 256, True, needs_grad=True) is None
    # fp32 W_hh at 256 x 256 is 256 KiB alone, past the 227 KiB a Hopper block may use.
    for allow_tf32 in (False, True):
        reason = elman.unsupported_reason("rnn_tanh", torch.float32, 256, allow_tf32, needs_grad=False)
        assert "shared memory" in reason and "hidden_size=256" in reason
    assert "up to 256" in elman.unsupported_reason("rnn_tanh", torch.bfloat16, 257, True, needs_grad=False)
    assert "float64" in elman.unsupported_reason("rnn_tanh", torch.float64, 16, True, needs_grad=False)


def test_other_cells_are_refused():
    xp, w_hh, b_hh, h0, _ = make_inputs("rnn_tanh", 2, 3, 16)
    with pytest.raises(ValueError, match="gru"):
        elman.recurrence_fwd("gru", xp, w_hh, b_hh, h0, None, None, reverse=False, allow_tf32=False)
    with pytest.raises(ValueError, match="lstm"):
        elman.unsupported_reason("lstm", torch.float32, 16, False, needs_grad=False)


def test_infinite_gradient_with_padded_hidden():
    """H = 20 pads to 32: an infinite dh times a padded zero weight is NaN in a padded row of dh, which
    must not reach real rows. With positive W_hh the oracle's gradients stay +inf, never NaN."""
    cell, B, T, H = "rnn_tanh", 2, 3, 20
    torch.manual_seed(12)
    xp = torch.randn(B, T, H, device=DEVICE) * 0.5
    w_hh = torch.rand(H, H, device=DEVICE) * 0.1 + 0.01
    _, _, hs = forward(cell, xp, w_hh, None, None, None, reverse=False)
    dh_n = torch.zeros(B, H, device=DEVICE)
    dh_n[0, 3] = float("inf")
    dxp, _, dh0, _ = elman.recurrence_bwd(cell, hs, None, w_hh, None, None, None, None, dh_n, None, None,
                                          reverse=False, allow_tf32=False)
    assert (dxp[0, :T - 1] == float("inf")).all() and (dh0[0] == float("inf")).all()
    assert not dxp.isnan().any()
    torch.testing.assert_close(dxp[1], torch.zeros_like(dxp[1]), rtol=0, atol=0)


# ----------------------------------------------------------------------------
# Both directions of a bidirectional layer in one launch, against each direction's oracle.
# ----------------------------------------------------------------------------

def bidirectional_inputs(cell, B, T, H, *, dtype=torch.float32, h0=True, bias=True, lengths=None,
                         time_major=False, seed=20):
    """xp [B, T, 2·H] (directions side by side), w_hh [2, H, H], b_hh [2, H], h0 [2, B, H], lengths."""
    forward_, reverse_ = (make_inputs(cell, B, T, H, dtype=dtype, h0=h0, bias=bias, lengths=lengths, seed=seed + d)
                          for d in range(2))
    xp = torch.cat([forward_[0], reverse_[0]], -1)
    if time_major:
        xp = xp.transpose(0, 1).contiguous().transpose(0, 1)
    stack = (lambda a, b: torch.stack([a, b]) if a is not None else None)
    return xp, stack(forward_[1], reverse_[1]), stack(forward_[2], reverse_[2]), stack(forward_[3], reverse_[3]), \
        forward_[4]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, T, H, lengths, time_major, dtype", [
    (5, 7, 20, RAGGED, False, torch.float32),   # 3xTF32: both W_hh halves split on the host
    (17, 4, 16, None, True, torch.float32),     # two tiles, time-major views
    (3, 5, 33, [5, 2, 1], False, torch.bfloat16),
], ids=["ragged", "B17_time_major", "bf16"])
def test_bidirectional_matches_each_direction(cell, B, T, H, lengths, time_major, dtype):
    xp, w_hh, b_hh, h0, lengths = bidirectional_inputs(cell, B, T, H, dtype=dtype, lengths=lengths,
                                                       time_major=time_major)
    out, h_n, c_n, hs, aux = elman.bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths, allow_tf32=False,
                                                     store_saved=True)
    assert c_n is None and aux is None
    assert out.shape == (B, T, 2 * H) and out.dtype == dtype and out.is_contiguous()
    assert h_n.shape == (2, B, H) and hs.shape == (2, B, T, H) and hs.dtype == torch.float32
    tol = TOL[dtype]
    dout, dh_n = make_gradients(B, T, H, dtype, lengths=lengths, directions=2, dout_time_major=time_major,
                                poison_padding=lengths is not None)
    dxp, dgh, dh0, dc0 = elman.bidirectional_bwd(cell, hs, w_hh, dout, dh_n, lengths, allow_tf32=False)
    assert dgh is dxp and dc0 is None and dxp.shape == (B, T, 2 * H) and dh0.shape == (2, B, H)
    for d in range(2):
        inputs = (xp[..., d * H:(d + 1) * H], w_hh[d], b_hh[d], h0[d], lengths)
        out_ref, h_ref = oracle_forward(cell, *inputs, d == 1)
        torch.testing.assert_close(out[..., d * H:(d + 1) * H].double(), out_ref, **tol)
        torch.testing.assert_close(h_n[d].double(), h_ref, **tol)
        torch.testing.assert_close(hs[d].double(), out_ref, **tol)
        reference = reference_gradients(cell, *inputs, d == 1, dout[..., d * H:(d + 1) * H], dh_n[d])
        assert_gradients(dxp[..., d * H:(d + 1) * H], dh0[d], hs[d], h0[d], lengths, d == 1, reference, tol)


def test_bidirectional_without_optional_inputs():
    """No h0, b_hh, out (store_out=False) or dout: h_n and the gradients through dh_n alone."""
    cell, B, T, H = "rnn_tanh", 5, 7, 20
    xp, w_hh, _, _, lengths = bidirectional_inputs(cell, B, T, H, h0=False, bias=False, lengths=RAGGED, seed=30)
    out, h_n, _, hs, _ = elman.bidirectional_fwd(cell, xp, w_hh, None, None, lengths, allow_tf32=True,
                                                 store_out=False, store_saved=True)
    assert out is None
    _, dh_n = make_gradients(B, T, H, xp.dtype, with_dout=False, directions=2, seed=31)
    dxp, _, dh0, _ = elman.bidirectional_bwd(cell, hs, w_hh, None, dh_n, lengths, allow_tf32=True)
    for d in range(2):
        inputs = (xp[..., d * H:(d + 1) * H], w_hh[d], None, None, lengths)
        out_ref, h_ref = oracle_forward(cell, *inputs, d == 1)
        torch.testing.assert_close(h_n[d].double(), h_ref, **TF32_TOL)
        torch.testing.assert_close(hs[d].double(), out_ref, **TF32_TOL)
        reference = reference_gradients(cell, *inputs, d == 1, None, dh_n[d])
        assert_gradients(dxp[..., d * H:(d + 1) * H], dh0[d], hs[d], None, lengths, d == 1, reference, TF32_TOL)


@pytest.mark.parametrize("in_registers", [True, False], ids=["registers", "shared"])
@pytest.mark.parametrize("H", [20, 64, 33])
def test_weight_placements(monkeypatch, in_registers, H):
    """W_hh reordered in registers (where a launch holds it for the loop) or gathered straight into
    shared memory: the same results. Which one a launch takes is rnn_linear.weights_in_registers';
    forced here, so that the interpreter runs both."""
    monkeypatch.setattr(rnn_linear, "weights_in_registers",
                        lambda prec, warps, *tiles, **kwargs: (in_registers,) * len(tiles))
    inputs = make_inputs("rnn_tanh", 5, 7, H, lengths=RAGGED, seed=7)
    check_forward("rnn_tanh", *inputs, reverse=False)
    check_backward("rnn_tanh", *inputs, reverse=True)
