"""The GRU kernels of the layer contract (fused_rnn/kernels/gru.py) against the float64 loop oracle.

The launchers are called directly (on CPU through the Triton interpreter), with outputs NaN-poisoned
(conftest). Forward: out and h_n against tests/oracles.py. Backward: ∂L/∂xp and ∂L/∂h0 against
autograd on the oracle, and dgh through the weight gradients it gives (dW_hh = Σ_t dgh_tᵀ h_{t-1},
db_hh = Σ_t dgh_t) against autograd's ∂L/∂W_hh and ∂L/∂b_hh.
"""

import pytest
import torch

from conftest import DEVICE
from fused_rnn.kernels import gru as gru_kernels, tile_io
from oracles import recurrence_loop

# Tolerances against the float64 oracle run on the same (rounded) inputs; backward ones are relative to
# the largest reference gradient (dW_hh sums B·T terms). fp32 without TF32 (3xTF32 on a GPU): summation
# order and exp, ~1e-7 per step. TF32 (GPU): ~2^-11 per product. fp16/bf16 (GPU): the state and ∂L/∂gh
# are rounded to the dtype as MMA operands every step (2^-11, 2^-9), the gates take tanh.approx
# (~2^-11), and out/h_n are rounded once.
FWD_TOL = {
    (torch.float32, False): dict(atol=2e-5, rtol=1e-4),
    (torch.float32, True): dict(atol=5e-3, rtol=5e-3),
    (torch.float16, True): dict(atol=5e-3, rtol=5e-3),
    (torch.bfloat16, True): dict(atol=3e-2, rtol=3e-2),
}
BWD_TOL = {
    (torch.float32, False): dict(atol=2e-5, rtol=1e-4),
    (torch.float32, True): dict(atol=1e-2, rtol=1e-2),
    (torch.float16, True): dict(atol=1e-2, rtol=1e-2),
    (torch.bfloat16, True): dict(atol=5e-2, rtol=5e-2),
}


def make_inputs(B, T, H, *, dtype=torch.float32, seed=0, h0=True, b_hh=True, time_major=False):
    """xp, w_hh, b_hh, h0 as a GRU layer would give them: W_hh with nn.GRU's init U(-1/√H, 1/√H)."""
    g = torch.Generator().manual_seed(seed)
    bound = H ** -0.5
    if time_major:   # a batch_first=False caller passes a transposed view
        xp = torch.randn(T, B, 3 * H, generator=g).transpose(0, 1)
    else:
        xp = torch.randn(B, T, 3 * H, generator=g)
    w = (torch.rand(3 * H, H, generator=g) * 2 - 1) * bound
    b = (torch.rand(3 * H, generator=g) * 2 - 1) * bound if b_hh else None
    h = torch.randn(B, H, generator=g) * 0.5 if h0 else None
    return tuple(t.to(device=DEVICE, dtype=dtype) if t is not None else None for t in (xp, w, b, h))


def ragged(B, T, seed=0):
    """Lengths in [1, T] with both 1 and T present."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[-1] = T, 1
    return lengths


def f64(t):
    return None if t is None else t.detach().to("cpu", torch.float64)


def forward(xp, w, b, h0, lengths, *, reverse, allow_tf32=False, store_out=True, store_saved=False):
    lengths_dev = lengths.to(DEVICE) if lengths is not None else None
    return gru_kernels.recurrence_fwd("gru", xp, w, b, h0, None, lengths_dev, reverse=reverse,
                                      allow_tf32=allow_tf32, store_out=store_out, store_saved=store_saved)


def backward(hs, aux, w, b, h0, dout, dh_n, lengths, *, reverse, allow_tf32=False):
    lengths_dev = lengths.to(DEVICE) if lengths is not None else None
    return gru_kernels.recurrence_bwd("gru", hs, aux, w, b, h0, None, dout, dh_n, None, lengths_dev,
                                      reverse=reverse, allow_tf32=allow_tf32)


def assert_close(actual, expected, tol, scale=1.0):
    torch.testing.assert_close(f64(actual), expected, atol=tol["atol"] * scale, rtol=tol["rtol"])


def states_before(out, h0, lengths, reverse):
    """h_{t-1} for every position t: the state each step of the oracle started from (0 past lengths)."""
    B, T, H = out.shape
    prev = torch.zeros_like(out)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        h = torch.zeros(H, dtype=out.dtype) if h0 is None else h0[b]
        for t in (reversed(range(n)) if reverse else range(n)):
            prev[b, t] = h
            h = out[b, t]
    return prev


def check_forward(xp, w, b, h0, lengths, *, reverse, allow_tf32=False, store_out=True, store_saved=False):
    out, h_n, c_n, hs, aux = forward(xp, w, b, h0, lengths, reverse=reverse, allow_tf32=allow_tf32,
                                     store_out=store_out, store_saved=store_saved)
    ref_out, ref_hn, _ = recurrence_loop("gru", f64(xp), f64(w), f64(b), f64(h0), None, lengths, reverse)
    tol = FWD_TOL[(xp.dtype, allow_tf32 or xp.dtype != torch.float32)]
    assert c_n is None
    assert h_n.dtype == xp.dtype and h_n.shape == ref_hn.shape
    assert_close(h_n, ref_hn, tol)
    if store_out:
        assert out.dtype == xp.dtype and out.is_contiguous() and out.shape == ref_out.shape
        assert_close(out, ref_out, tol)
        if lengths is not None:
            pad = torch.arange(xp.shape[1])[None, :] >= lengths[:, None]
            assert (f64(out)[pad] == 0).all()
    else:
        assert out is None
    if store_saved:
        assert hs.dtype == torch.float32 and hs.shape == ref_out.shape
        assert_close(hs, ref_out, tol)
        assert aux.dtype == torch.float32 and aux.shape[:2] == xp.shape[:2]
    else:
        assert hs is None and aux is None
    return out, h_n, hs, aux


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("with_h0,with_b_hh", [(False, False), (True, True), (True, False), (False, True)],
                         ids=["no_h0_no_b", "h0_b", "h0_no_b", "no_h0_b"])
def test_forward_matches_oracle(reverse, with_lengths, with_h0, with_b_hh):
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, h0=with_h0, b_hh=with_b_hh, seed=1)
    lengths = ragged(B, T) if with_lengths else None
    check_forward(xp, w, b, h0, lengths, reverse=reverse, store_saved=True)


def reference_grads(xp, w, b, h0, lengths, reverse, dout, dh_n):
    """Autograd on the float64 oracle for L = Σ out ⊙ dout + Σ h_n ⊙ dh_n: ∂L/∂xp, ∂L/∂W_hh,
    ∂L/∂b_hh (of a zero bias if None), ∂L/∂h0 (of zeros if None); and the oracle's out (for h_{t-1})."""
    B, T, _ = xp.shape
    H = w.shape[1]
    xp64, w64 = f64(xp).requires_grad_(), f64(w).requires_grad_()
    b64 = (f64(b) if b is not None else torch.zeros(3 * H, dtype=torch.float64)).requires_grad_()
    h064 = (f64(h0) if h0 is not None else torch.zeros(B, H, dtype=torch.float64)).requires_grad_()
    out, h_n, _ = recurrence_loop("gru", xp64, w64, b64, h064, None, lengths, reverse)
    loss = torch.zeros((), dtype=torch.float64)
    if dout is not None:
        loss = loss + (out * f64(dout)).sum()
    if dh_n is not None:
        loss = loss + (h_n * f64(dh_n)).sum()
    if not loss.requires_grad:
        zeros = [torch.zeros_like(t) for t in (xp64, w64, b64, h064)]
        return (*zeros, out.detach())
    return (*torch.autograd.grad(loss, (xp64, w64, b64, h064)), out.detach())


def check_backward(xp, w, b, h0, lengths, *, reverse, allow_tf32=False, with_dout=True, with_dhn=True,
                   seed=0, dout_time_major=False, dout_unaligned=False):
    B, T, _ = xp.shape
    H = w.shape[1]
    _, _, _, hs, aux = forward(xp, w, b, h0, lengths, reverse=reverse, allow_tf32=allow_tf32, store_out=False,
                               store_saved=True)
    g = torch.Generator().manual_seed(seed + 100)
    dout = dh_n = None
    if with_dout:
        if dout_time_major:
            dout = torch.randn(T, B, H, generator=g).transpose(0, 1).to(DEVICE, xp.dtype)
        elif dout_unaligned:   # an odd time stride and a start one element in: no two-unit reads
            dout = torch.randn(B, T, H + 1, generator=g).to(DEVICE, xp.dtype)[..., 1:]
        else:
            dout = torch.randn(B, T, H, generator=g).to(DEVICE, xp.dtype)
    if with_dhn:
        dh_n = torch.randn(B, H, generator=g).to(DEVICE, xp.dtype)
    dxp, dgh, dh0, dc0 = backward(hs, aux, w, b, h0, dout, dh_n, lengths, reverse=reverse,
                                  allow_tf32=allow_tf32)
    ref_dxp, ref_dw, ref_db, ref_dh0, ref_out = reference_grads(xp, w, b, h0, lengths, reverse, dout, dh_n)

    assert dc0 is None
    assert dgh is not dxp
    for t in (dxp, dgh):
        assert t.dtype == torch.float32 and t.shape == (B, T, 3 * H)
    assert dh0.dtype == torch.float32 and dh0.shape == (B, H)
    tol = BWD_TOL[(xp.dtype, allow_tf32 or xp.dtype != torch.float32)]
    scale = max(1.0, ref_dw.abs().max().item())
    assert_close(dxp, ref_dxp, tol, scale)
    assert_close(dh0, ref_dh0, tol, scale)
    h_prev = states_before(ref_out, f64(h0), lengths, reverse)
    dgh64 = f64(dgh)
    assert_close(torch.einsum("btg,bth->gh", dgh64, h_prev), ref_dw, tol, scale)
    assert_close(dgh64.sum((0, 1)), ref_db, tol, scale)
    if lengths is not None:
        pad = torch.arange(T)[None, :] >= lengths[:, None]
        assert (f64(dxp)[pad] == 0).all() and (dgh64[pad] == 0).all()
    return dxp, dgh, dh0


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("with_h0,with_b_hh", [(False, False), (True, True)], ids=["no_h0_no_b", "h0_b"])
def test_backward_matches_oracle(reverse, with_lengths, with_h0, with_b_hh):
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, h0=with_h0, b_hh=with_b_hh, seed=2)
    lengths = ragged(B, T, seed=3) if with_lengths else None
    dxp, dgh, _ = check_backward(xp, w, b, h0, lengths, reverse=reverse)
    # gh_n sits inside the reset product: ∂L/∂gh_n = r ⊙ ∂L/∂xp_n, not ∂L/∂xp_n.
    assert not torch.equal(dxp[..., 2 * H:], dgh[..., 2 * H:])
    torch.testing.assert_close(dxp[..., :2 * H], dgh[..., :2 * H], atol=0, rtol=0)


@pytest.mark.parametrize("with_dout,with_dhn", [(True, False), (False, True), (False, False)],
                         ids=["dout_only", "dhn_only", "neither"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_optional_gradients(with_dout, with_dhn, reverse):
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, seed=4)
    check_backward(xp, w, b, h0, ragged(B, T, seed=5), reverse=reverse, with_dout=with_dout, with_dhn=with_dhn)


@pytest.mark.parametrize("dtype,allow_tf32", [(torch.float32, True), (torch.float16, True), (torch.bfloat16, True)],
                         ids=["fp32_tf32", "fp16", "bf16"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_dtypes(dtype, allow_tf32, reverse):
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, dtype=dtype, seed=6)
    lengths = ragged(B, T, seed=7)
    check_forward(xp, w, b, h0, lengths, reverse=reverse, allow_tf32=allow_tf32, store_saved=True)
    check_backward(xp, w, b, h0, lengths, reverse=reverse, allow_tf32=allow_tf32)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_batch_crossing_a_tile(reverse):
    """B = 17: a second program whose tile holds one sequence and 15 masked columns; H = 32 unpadded."""
    B, T, H = 17, 6, 32
    xp, w, b, h0 = make_inputs(B, T, H, seed=8)
    lengths = ragged(B, T, seed=9)
    check_forward(xp, w, b, h0, lengths, reverse=reverse)
    check_backward(xp, w, b, h0, lengths, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_time_major_views(reverse):
    """xp and dout as the transposed views a batch_first=False caller passes (strides not multiples of 16)."""
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, seed=10, time_major=True)
    assert not xp.is_contiguous()
    lengths = ragged(B, T, seed=11)
    check_forward(xp, w, b, h0, lengths, reverse=reverse)
    check_backward(xp, w, b, h0, lengths, reverse=reverse, dout_time_major=True)


@pytest.mark.parametrize("H", [21, 33, 34], ids=["odd_below_64", "odd", "even"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_padded_in_place_sizes(H, reverse):
    """Padded H with the rows in paired order: 21 (to 32) and 33 (to 64) go one unit per access (odd H:
    no aligned pairs; the backward at 21 through tl.load and tl.store, in the natural order), 34 two
    units per access, the padded pairs clamped inside their gate."""
    B, T = 5, 6
    xp, w, b, h0 = make_inputs(B, T, H, seed=18)
    lengths = ragged(B, T, seed=19)
    check_forward(xp, w, b, h0, lengths, reverse=reverse, store_saved=True)
    check_backward(xp, w, b, h0, lengths, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_unaligned_views(reverse):
    """xp and dout one element into a wider tensor (odd time stride, unaligned start) at an even H = 34
    whose own buffers do take pairs: xp and dout are read one unit at a time, the results unchanged."""
    B, T, H = 5, 6, 34
    _, w, b, h0 = make_inputs(B, T, H, seed=20)
    g = torch.Generator().manual_seed(21)
    xp = torch.randn(B, T, 3 * H + 1, generator=g).to(DEVICE)[..., 1:]
    assert not tile_io.pairs_fit(xp)
    lengths = ragged(B, T, seed=22)
    check_forward(xp, w, b, h0, lengths, reverse=reverse, store_saved=True)
    check_backward(xp, w, b, h0, lengths, reverse=reverse, dout_unaligned=True)


def test_store_out_false_gives_the_same_state():
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, seed=12)
    lengths = ragged(B, T, seed=13)
    _, h_n, hs, aux = check_forward(xp, w, b, h0, lengths, reverse=False, store_out=False, store_saved=True)
    out2, h_n2, _, hs2, aux2 = forward(xp, w, b, h0, lengths, reverse=False, store_saved=True)
    torch.testing.assert_close(h_n, h_n2, atol=0, rtol=0)
    torch.testing.assert_close(hs, hs2, atol=0, rtol=0)
    torch.testing.assert_close(aux, aux2, atol=0, rtol=0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_padding_does_not_leak(reverse, value):
    """Padding of xp and dout (t >= len_b) is never read: results equal those with clean padding."""
    B, T, H = 5, 7, 20
    xp, w, b, h0 = make_inputs(B, T, H, seed=14)
    lengths = ragged(B, T, seed=15)
    pad = (torch.arange(T)[None, :] >= lengths[:, None]).to(DEVICE)
    dirty = xp.clone()
    dirty[pad] = value
    out, h_n, hs, aux = check_forward(dirty, w, b, h0, lengths, reverse=reverse, store_saved=True)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all()
    dout = torch.randn(B, T, H, device=DEVICE)
    dout[pad] = value
    dxp, dgh, dh0, _ = backward(hs, aux, w, b, h0, dout, None, lengths, reverse=reverse)
    for t in (dxp, dgh, dh0):
        assert torch.isfinite(t).all()
    clean_dout = torch.where(pad[..., None], 0.0, dout)
    ref_dxp, _, _, ref_dh0, _ = reference_grads(xp, w, b, h0, lengths, reverse, clean_dout, None)
    tol = BWD_TOL[(torch.float32, False)]
    assert_close(dxp, ref_dxp, tol)
    assert_close(dh0, ref_dh0, tol)


def test_non_finite_state_matches_the_oracle():
    """An infinite h0 entry (H = 20 padded to 32) gives the oracle's NaNs in its own sequence and nowhere else."""
    B, T, H = 5, 4, 20
    xp, w, b, h0 = make_inputs(B, T, H, seed=16)
    h0[1, 3] = float("inf")
    out, h_n, _, _, _ = forward(xp, w, b, h0, None, reverse=False)
    ref_out, ref_hn, _ = recurrence_loop("gru", f64(xp), f64(w), f64(b), f64(h0), None, None, False)
    tol = FWD_TOL[(torch.float32, False)]
    torch.testing.assert_close(f64(out), ref_out, equal_nan=True, **tol)
    torch.testing.assert_close(f64(h_n), ref_hn, equal_nan=True, **tol)
    assert not torch.isfinite(ref_out[1]).all()
    assert torch.isfinite(out[[0, 2, 3, 4]]).all()


def test_unsupported_reason():
    reason = gru_kernels.unsupported_reason
    # bf16 at H = 128: three [128, 128] gate blocks, 96 KiB, forward and backward fit.
    assert reason("gru", torch.bfloat16, 128, True, True) is None
    assert reason("gru", torch.float32, 64, False, True) is None
    # 3xTF32 at H = 128 keeps hi and lo of the three blocks in fp32: 384 KiB.
    assert "shared memory" in reason("gru", torch.float32, 128, False, False)
    assert "shared memory" in reason("gru", torch.bfloat16, 256, True, False)
    assert "hidden_size=300" in reason("gru", torch.bfloat16, 300, True, False)
    assert "float64" in reason("gru", torch.float64, 20, True, False)
    with pytest.raises(ValueError, match="'lstm'"):
        reason("lstm", torch.float32, 20, True, False)


def test_wrong_cell_is_refused():
    xp, w, b, h0 = make_inputs(2, 3, 16)
    with pytest.raises(ValueError, match="'rnn_tanh'"):
        gru_kernels.recurrence_fwd("rnn_tanh", xp, w, b, h0, None, None, reverse=False, allow_tf32=False)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_no_steps(reverse):
    """T = 0: h_n is h0 and dh0 is dh_n, and no kernel reads the empty xp or aux."""
    _, w, b, h0 = make_inputs(3, 1, 20, seed=17)
    xp = torch.randn(3, 0, 60, device=DEVICE)
    out, h_n, c_n, hs, aux = forward(xp, w, b, h0, None, reverse=reverse, store_saved=True)
    assert out.shape == hs.shape == (3, 0, 20) and aux.shape == (3, 0, 100) and c_n is None
    assert torch.equal(h_n, h0)
    dh_n = torch.randn(3, 20, device=DEVICE)
    dxp, dgh, dh0, _ = backward(hs, aux, w, b, h0, None, dh_n, None, reverse=reverse)
    assert dxp.shape == dgh.shape == (3, 0, 60) and torch.equal(dh0, dh_n)
    _, h_n, _, _, _ = forward(xp, w, b, None, None, reverse=reverse)
    _, _, dh0, _ = backward(hs, aux, w, b, None, None, None, None, reverse=reverse)
    assert torch.equal(h_n, torch.zeros_like(h_n)) and torch.equal(dh0, torch.zeros_like(dh0))


@pytest.mark.parametrize("in_registers", [True, False], ids=["registers", "shared"])
@pytest.mark.parametrize("H", [20, 21, 64, 33])
def test_weight_placements(monkeypatch, in_registers, H):
    """W_hh reordered in registers (where a launch holds it for the loop) or gathered straight into
    shared memory: the same results. Which one a launch takes is kernels.rnn_linear.weights_in_registers';
    forced here, so that the interpreter runs both."""
    from fused_rnn.kernels import rnn_linear
    monkeypatch.setattr(rnn_linear, "weights_in_registers",
                        lambda prec, warps, *tiles, **kwargs: (in_registers,) * len(tiles))
    B, T = 5, 6
    xp, w, b, h0 = make_inputs(B, T, H, seed=20)
    lengths = ragged(B, T, seed=21)
    check_forward(xp, w, b, h0, lengths, reverse=False, store_saved=True)
    check_backward(xp, w, b, h0, lengths, reverse=True)
