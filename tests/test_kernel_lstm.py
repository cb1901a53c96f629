"""The LSTM kernels of the layer contract (fused_rnn/kernels/lstm.py) against the float64 loop oracle.

The launchers are called directly (on CPU through the Triton interpreter).
Forward: out, h_n, c_n and the saved hs. Backward: ∂L/∂xp, ∂L/∂h0, ∂L/∂c0 from
the kernel's sweep, and ∂L/∂W_hh = Σ_t dghᵀ h_{t-1}, ∂L/∂b_hh = Σ_t dgh formed
here from its dgh and hs, against torch.autograd on the float64 oracle with
L = Σ out·dout + Σ h_n·dh_n + Σ c_n·dc_n.

Tolerances, against the oracle run on the same (rounded) inputs:
* fp32, IEEE or 3xTF32 products (and the interpreter, whose products are
  exact fp32): conftest.TOL (atol 2e-5, rtol 1e-4) forward; gradients 1e-4
  of the largest reference entry.
* fp32 with one TF32 pass (a GPU with allow_tf32): 2^-11 relative per
  product, summed over H = 20 terms: 2e-3.
* fp16 / bf16: conftest.TOL (5e-3 / 3e-2) forward: h is rounded to the dtype
  as an MMA operand every step and out once; gradients 1e-2 / 5e-2 of the
  largest reference entry (the backward's MMA operands are rounded too).
"""

import numpy as np
import pytest
import torch

from conftest import DEVICE, TOL
from fused_rnn.kernels import lstm, tile_io
from oracles import recurrence_loop

TF32_TOL = dict(atol=2e-3, rtol=2e-3)
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
TF32_GRAD_TOL = 2e-3
ON_GPU = DEVICE == "cuda"


def forward_tol(dtype, allow_tf32):
    return TF32_TOL if (dtype == torch.float32 and allow_tf32 and ON_GPU) else TOL[dtype]


def grad_tol(dtype, allow_tf32):
    return TF32_GRAD_TOL if (dtype == torch.float32 and allow_tf32 and ON_GPU) else GRAD_TOL[dtype]


def make_inputs(B, T, H, *, dtype=torch.float32, with_h0=True, with_c0=True, with_b=True, time_major=False,
                misaligned=False, seed=0):
    """xp [B, T, 4H] (a transposed view of a [T, B, 4H] tensor when time_major; with misaligned, a
    contiguous view one element into its storage), w_hh, b_hh, h0, c0."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=DEVICE, dtype=dtype)

    xp = randn(T, B, 4 * H).transpose(0, 1) if time_major else randn(B, T, 4 * H)
    if misaligned:
        xp = one_element_in(xp)
    w_hh = randn(4 * H, H, scale=H ** -0.5)
    b_hh = randn(4 * H, scale=0.3) if with_b else None
    # [B, H] states as views of [H, B] tensors with time_major: strides the kernels must honour.
    h0 = (randn(H, B, scale=0.5).t() if time_major else randn(B, H, scale=0.5)) if with_h0 else None
    c0 = (randn(H, B).t() if time_major else randn(B, H)) if with_c0 else None
    return xp, w_hh, b_hh, h0, c0


def one_element_in(t):
    """A contiguous copy of ``t`` starting one element into its storage: its pairs of elements are unaligned."""
    storage = torch.full((t.numel() + 1,), float("nan"), dtype=t.dtype, device=t.device)
    view = storage[1:].view(t.shape)
    view.copy_(t)
    return view


def as_lengths(lengths):
    return None if lengths is None else torch.tensor(lengths, dtype=torch.int64, device=DEVICE)


def h_before(hs, h0, lengths, reverse):
    """h_{t-1} for the step at each position t: the state before that step in processing order."""
    B, T, H = hs.shape
    prev = torch.zeros_like(hs)
    start = torch.zeros(B, H, dtype=hs.dtype, device=hs.device) if h0 is None else h0.to(hs.dtype)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        order = list(reversed(range(n))) if reverse else list(range(n))
        before = start[b]
        for t in order:
            prev[b, t] = before
            before = hs[b, t]
    return prev


def check(B, T, H, *, dtype=torch.float32, allow_tf32=False, reverse=False, lengths=None, with_h0=True,
          with_c0=True, with_b=True, time_major=False, use_dout=True, use_dhn=True, use_dcn=True, seed=0,
          poison_padding=False, misaligned=False):
    """Run forward (store_saved) and backward; compare everything with the float64 oracle and its autograd.

    misaligned: xp and dout start one element into their storage."""
    xp, w_hh, b_hh, h0, c0 = make_inputs(B, T, H, dtype=dtype, with_h0=with_h0, with_c0=with_c0, with_b=with_b,
                                         time_major=time_major, misaligned=misaligned, seed=seed)
    lengths_t = as_lengths(lengths)
    gen = torch.Generator().manual_seed(seed + 1)

    def grad_like(*shape):
        """A gradient in fp32, or with time_major a transposed view in xp's dtype (the kernel takes either)."""
        if not time_major:
            return torch.randn(*shape, generator=gen).to(DEVICE)
        return torch.randn(*reversed(shape), generator=gen).to(device=DEVICE, dtype=dtype).permute(
            *reversed(range(len(shape))))

    dout = grad_like(B, T, H) if use_dout else None
    if misaligned and dout is not None:
        dout = one_element_in(dout)
    dhn = grad_like(B, H) if use_dhn else None
    dcn = grad_like(B, H) if use_dcn else None
    if poison_padding and lengths is not None:
        # Values at padded positions are never read: NaN there must not reach any output.
        for b, n in enumerate(lengths):
            xp[b, n:] = float("nan")
            if dout is not None:
                dout[b, n:] = float("inf")

    out, h_n, c_n, hs, aux = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, lengths_t, reverse=reverse,
                                                 allow_tf32=allow_tf32, store_saved=True)
    dxp, dgh, dh0, dc0 = lstm.recurrence_bwd("lstm", hs, aux, w_hh, b_hh, h0, c0, dout, dhn, dcn, lengths_t,
                                             reverse=reverse, allow_tf32=allow_tf32)

    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (xp, w_hh, b_hh, h0, c0)]
    xp64, w64, b64, h064, c064 = leaves
    if poison_padding and lengths is not None:
        xp64 = torch.where(xp64.isnan(), 0.0, xp64)   # the oracle never reads padding either
    out_ref, h_ref, c_ref = recurrence_loop("lstm", xp64, w64, b64, h064, c064, lengths, reverse=reverse)
    loss = sum((y * dy.double().nan_to_num(posinf=0.0)).sum()
               for y, dy in ((out_ref, dout), (h_ref, dhn), (c_ref, dcn)) if dy is not None)
    wanted = [t for t in leaves if t is not None]
    grads = dict(zip([id(t) for t in wanted], torch.autograd.grad(loss, wanted, allow_unused=True)))

    tol = forward_tol(dtype, allow_tf32)
    assert out.dtype == h_n.dtype == c_n.dtype == dtype and out.is_contiguous()
    assert hs.dtype == aux.dtype == dxp.dtype == dh0.dtype == dc0.dtype == torch.float32
    assert dgh is dxp
    torch.testing.assert_close(out.double(), out_ref.detach(), **tol)
    torch.testing.assert_close(h_n.double(), h_ref.detach(), **tol)
    torch.testing.assert_close(c_n.double(), c_ref.detach(), **tol)
    torch.testing.assert_close(hs.double(), out_ref.detach(), **tol)
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert (out[b, n:] == 0).all() and (hs[b, n:] == 0).all() and (dxp[b, n:] == 0).all()

    prev = h_before(hs.double(), h0, lengths, reverse)
    dw = torch.einsum("btk,bth->kh", dxp.double(), prev)
    db = dxp.double().sum((0, 1))
    gtol = grad_tol(dtype, allow_tf32)
    for name, got, leaf in (("xp", dxp, leaves[0]), ("w_hh", dw, w64), ("b_hh", db, b64),
                            ("h0", dh0, h064), ("c0", dc0, c064)):
        if leaf is None:
            continue
        want = grads[id(leaf)]
        if want is None:
            want = torch.zeros_like(leaf)
        if name == "xp" and poison_padding:
            want = want.nan_to_num(0.0)
        scale = want.abs().max().item() or 1.0
        torch.testing.assert_close(got.double(), want, atol=gtol * scale, rtol=gtol, msg=lambda m: f"d{name}: {m}")
    return out, h_n, c_n


# ----------------------------------------------------------------------------
# Forward and backward, fp32
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [7, 1, 4, 7, 2]])
def test_directions_and_lengths(reverse, lengths):
    check(5, 7, 20, reverse=reverse, lengths=lengths, seed=1)


@pytest.mark.parametrize("with_h0,with_c0,with_b", [
    (False, False, False), (True, False, True), (False, True, False), (True, True, True)])
def test_initial_states_and_bias(with_h0, with_c0, with_b):
    check(5, 7, 20, with_h0=with_h0, with_c0=with_c0, with_b=with_b, lengths=[3, 7, 1, 5, 6], reverse=True,
          seed=2)


@pytest.mark.parametrize("use_dout,use_dhn,use_dcn", [
    (True, False, False), (False, True, False), (False, False, True), (False, True, True)])
def test_missing_output_gradients(use_dout, use_dhn, use_dcn):
    check(5, 7, 20, use_dout=use_dout, use_dhn=use_dhn, use_dcn=use_dcn, lengths=[7, 2, 5, 1, 7], seed=3)


def test_batch_crossing_a_tile():
    """B = 17: two programs, the second with one real sequence."""
    check(17, 5, 20, lengths=[1 + (3 * b) % 5 for b in range(17)], reverse=True, seed=4)


@pytest.mark.parametrize("reverse", [False, True])
def test_strided_views(reverse):
    """xp as the transposed view a batch_first=False caller passes (batch stride 4H, time stride B·4H);
    h0, c0, dout, dh_n, dc_n as transposed views too."""
    check(5, 6, 20, time_major=True, reverse=reverse, lengths=[6, 3, 1, 6, 4], seed=5)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_as_four_products(monkeypatch, reverse):
    """The backward's other form of dh = Σ_k W_kᵀ·da_k, four products (a GPU runs it for 3xTF32 at
    BLOCK_H = 32 and for H padded to 128; everything else, the interpreter included, runs one product
    over the stacked gates)."""
    monkeypatch.setattr(lstm, "_join_gates_in_backward", lambda prec, block_h, padded: False)
    check(5, 7, 20, reverse=reverse, lengths=[7, 3, 1, 7, 5], seed=17)


@pytest.mark.parametrize("H", [16, 33])
def test_unpadded_and_padded_hidden(H):
    """H = 16 fills its block exactly (no row mask); H = 33 pads to 64."""
    check(3, 4, H, seed=6 + H)


@pytest.fixture
def paired_accesses(monkeypatch):
    """Checks every tile_io.load_pairs / store_pairs for what its one vector access on a GPU relies on
    when PAIRED (the interpreter makes two accesses either way, so the results alone cannot show it):
    each unit 2p + 1 address is its unit 2p address plus one element, the unit 2p address is aligned
    to two elements, and a store's two masks are equal (stored addresses only). Returns the counts
    of pairs checked, by ("load" or "store", PAIRED), which the run fills in."""
    counts = {(kind, paired): 0 for kind in ("load", "store") for paired in (False, True)}
    load_pairs, store_pairs = tile_io.load_pairs, tile_io.store_pairs

    def check_pairs(kind, ptrs, hi_ptrs, PAIRED, mask=None, hi_mask=None):
        paired = bool(getattr(PAIRED, "value", PAIRED))
        lo, hi = np.broadcast_arrays(ptrs.handle.data.astype(np.int64), hi_ptrs.handle.data.astype(np.int64))
        used = np.ones(lo.shape, dtype=bool) if mask is None else np.broadcast_to(mask.handle.data, lo.shape)
        if paired:
            size = ptrs.dtype.element_ty.primitive_bitwidth // 8
            assert (hi[used] == lo[used] + size).all(), f"{kind}_pairs: unit 2p + 1 is not next to unit 2p"
            assert (lo[used] % (2 * size) == 0).all(), f"{kind}_pairs: a pair is not aligned to two elements"
            if mask is not None:
                assert (mask.handle.data == hi_mask.handle.data).all(), "store_pairs: the two masks differ"
        counts[kind, paired] += int(used.sum())

    def checked_load_pairs(ptrs, hi_ptrs, PAIRED):
        check_pairs("load", ptrs, hi_ptrs, PAIRED)
        return load_pairs(ptrs, hi_ptrs, PAIRED)

    def checked_store_pairs(ptrs, hi_ptrs, value, mask, hi_mask, PAIRED):
        check_pairs("store", ptrs, hi_ptrs, PAIRED, mask, hi_mask)
        return store_pairs(ptrs, hi_ptrs, value, mask, hi_mask, PAIRED)

    monkeypatch.setattr(tile_io, "load_pairs", checked_load_pairs)
    monkeypatch.setattr(tile_io, "store_pairs", checked_store_pairs)
    return counts


@pytest.mark.skipif(ON_GPU, reason="reads the interpreter's addresses")
@pytest.mark.parametrize("H,dtype,time_major,reverse,forward_pairs,backward_pairs", [
    # H padded to 32: padded pairs read the pair H-2, H-1; out, hs, aux stored unit by unit (_gate_pairs)
    (20, torch.float32, False, True, False, True),
    (16, torch.bfloat16, False, False, False, True),    # no padding; 2-byte xp and out
    (20, torch.float16, True, False, False, True),      # xp a transposed view (batch stride 4H, time stride B·4H)
    (64, torch.bfloat16, False, True, True, True),      # BLOCK_H = 64 on 4 warps: out, hs, aux stored in pairs
    (50, torch.float32, False, False, False, False),    # 3xTF32 backward on 8 warps: aux, dout, dxp unit by unit
])
def test_paired_accesses(paired_accesses, H, dtype, time_major, reverse, forward_pairs, backward_pairs):
    """Even H: xp is read in aligned pairs of units, and the per-gate tiles (out, hs, aux; aux, dout, dxp)
    are read and written in pairs where _gate_pairs says so (else unit by unit, tile_io.load / store)."""
    check(5, 7, H, dtype=dtype, time_major=time_major, reverse=reverse, lengths=[7, 3, 1, 7, 5], seed=18)
    assert paired_accesses["load", True] > 0
    # Unit by unit: time_major's dout (unit stride T·B) where the backward pairs.
    assert (paired_accesses["load", False] > 0) == (time_major and backward_pairs)
    assert (paired_accesses["store", True] > 0) == (forward_pairs or backward_pairs)
    assert paired_accesses["store", False] == 0


@pytest.mark.skipif(ON_GPU, reason="reads the interpreter's addresses")
@pytest.mark.parametrize("H", [20, 21])
def test_unaligned_pairs_are_read_unit_by_unit(paired_accesses, H):
    """xp and dout one element into their storage (any H), or H odd (every access): two accesses per pair.
    aux (the kernels' own, aligned) and dxp stay paired for even H."""
    check(5, 7, H, misaligned=True, lengths=[7, 3, 1, 7, 5], seed=19)
    even = H % 2 == 0
    assert paired_accesses["load", False] > 0 and (paired_accesses["load", True] > 0) == even
    assert (paired_accesses["store", True] > 0) == even and (paired_accesses["store", False] > 0) == (not even)


@pytest.mark.parametrize("reverse", [False, True])
def test_tf32(reverse):
    check(5, 7, 20, allow_tf32=True, reverse=reverse, lengths=[7, 3, 1, 7, 5], seed=7)


# ----------------------------------------------------------------------------
# Half precision
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_half_precision(dtype, reverse):
    check(5, 7, 20, dtype=dtype, reverse=reverse, lengths=[7, 4, 1, 7, 2], seed=8)


# ----------------------------------------------------------------------------
# Output options and non-finite values
# ----------------------------------------------------------------------------

def test_store_out_false():
    xp, w_hh, b_hh, h0, c0 = make_inputs(5, 7, 20, seed=9)
    lengths = [7, 2, 5, 1, 6]
    out, h_n, c_n, hs, aux = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, as_lengths(lengths),
                                                 reverse=False, allow_tf32=False, store_out=False)
    assert out is None and hs is None and aux is None
    _, h_ref, c_ref = recurrence_loop("lstm", *[t.double() for t in (xp, w_hh, b_hh, h0, c0)], lengths)
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])
    torch.testing.assert_close(c_n.double(), c_ref, **TOL[torch.float32])


def test_no_steps():
    """T = 0: the states pass through, nothing is read past the (empty) xp."""
    xp, w_hh, b_hh, h0, c0 = make_inputs(3, 0, 20, seed=16)
    out, h_n, c_n, hs, aux = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=False,
                                                 allow_tf32=False, store_saved=True)
    assert out.shape == hs.shape == (3, 0, 20) and aux.shape == (3, 0, 100)
    assert torch.equal(h_n, h0) and torch.equal(c_n, c0)
    dh_n = torch.randn(3, 20, device=DEVICE)
    dxp, _, dh0, dc0 = lstm.recurrence_bwd("lstm", hs, aux, w_hh, b_hh, h0, c0, None, dh_n, None, None,
                                           reverse=False, allow_tf32=False)
    assert dxp.shape == (3, 0, 80) and torch.equal(dh0, dh_n) and torch.equal(dc0, torch.zeros_like(dc0))


@pytest.mark.parametrize("reverse", [False, True])
def test_non_finite_padding_does_not_leak(reverse):
    """NaN in xp and inf in dout past each length: never read, all results as the oracle's (finite)."""
    out, h_n, c_n = check(5, 7, 20, reverse=reverse, lengths=[7, 1, 4, 7, 2], poison_padding=True, seed=10)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(c_n).all()


@pytest.mark.parametrize("gate", range(4))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_infinite_gate_input_with_padded_hidden(gate, sign):
    """An infinite pre-activation saturates its gate (finite results, as the oracle); with H = 20 padded
    to 32, inf times a padded zero weight would be NaN and must not reach the real rows."""
    B, T, H = 3, 4, 20
    xp, w_hh, b_hh, h0, c0 = make_inputs(B, T, H, seed=11)
    xp[1, 1, gate * H + 7] = sign * float("inf")
    out, h_n, c_n, *_ = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=False,
                                            allow_tf32=False)
    out_ref, h_ref, c_ref = recurrence_loop("lstm", *[t.double() for t in (xp, w_hh, b_hh, h0, c0)])
    assert torch.isfinite(out_ref).all()
    torch.testing.assert_close(out.double(), out_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])
    torch.testing.assert_close(c_n.double(), c_ref, **TOL[torch.float32])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_infinite_h0_with_padded_hidden(sign):
    """An infinite h0 entry makes W_hh·h0 infinite in real rows (gates saturate, finite results) and
    NaN in padded rows (0·inf), which must not reach the real rows at the next step."""
    B, T, H = 3, 4, 20
    xp, w_hh, b_hh, h0, c0 = make_inputs(B, T, H, seed=14)
    h0[2, 11] = sign * float("inf")
    out, h_n, c_n, *_ = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=True,
                                            allow_tf32=False)
    out_ref, h_ref, c_ref = recurrence_loop("lstm", *[t.double() for t in (xp, w_hh, b_hh, h0, c0)], reverse=True)
    assert torch.isfinite(out_ref).all()
    torch.testing.assert_close(out.double(), out_ref, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, **TOL[torch.float32])
    torch.testing.assert_close(c_n.double(), c_ref, **TOL[torch.float32])


def test_infinite_output_gradient_with_padded_hidden():
    """An infinite dh_n entry (H = 20 padded to 32): gradients as the oracle's autograd gives them,
    non-finite (inf or NaN, the same) in the sequence that meets it, finite in the others."""
    B, T, H = 3, 4, 20
    xp, w_hh, b_hh, h0, c0 = make_inputs(B, T, H, seed=15)
    out, h_n, c_n, hs, aux = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=False,
                                                 allow_tf32=False, store_saved=True)
    dh_n = torch.zeros(B, H, device=DEVICE)
    dh_n[1, 3] = float("inf")
    dxp, _, dh0, dc0 = lstm.recurrence_bwd("lstm", hs, aux, w_hh, b_hh, h0, c0, None, dh_n, None, None,
                                           reverse=False, allow_tf32=False)
    leaves = [t.double().requires_grad_() for t in (xp, h0, c0)]
    _, h_ref, _ = recurrence_loop("lstm", leaves[0], w_hh.double(), b_hh.double(), leaves[1], leaves[2])
    want = torch.autograd.grad(h_ref, leaves, dh_n.double())
    # Sequences 0 and 2 never meet the infinity.
    for got, ref in zip((dxp, dh0, dc0), want):
        assert torch.isfinite(ref[[0, 2]]).all()
        torch.testing.assert_close(got.double(), ref, equal_nan=True, atol=1e-5, rtol=1e-4)


def test_nan_propagates_as_stock():
    """NaN in a real position's input reaches that sequence's later states (torch.nn.LSTM does the same)."""
    xp, w_hh, b_hh, h0, c0 = make_inputs(3, 4, 20, seed=12)
    xp[0, 1, 5] = float("nan")
    out, h_n, c_n, *_ = lstm.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=False,
                                            allow_tf32=False)
    out_ref, h_ref, c_ref = recurrence_loop("lstm", *[t.double() for t in (xp, w_hh, b_hh, h0, c0)])
    assert torch.isnan(h_ref[0]).any() and torch.isfinite(h_ref[1:]).all()
    torch.testing.assert_close(out.double(), out_ref, equal_nan=True, **TOL[torch.float32])
    torch.testing.assert_close(h_n.double(), h_ref, equal_nan=True, **TOL[torch.float32])
    torch.testing.assert_close(c_n.double(), c_ref, equal_nan=True, **TOL[torch.float32])


# ----------------------------------------------------------------------------
# What launches
# ----------------------------------------------------------------------------

def test_unsupported_reason():
    assert lstm.unsupported_reason("lstm", torch.bfloat16, 128, True, True) is None
    assert lstm.unsupported_reason("lstm", torch.float32, 64, False, True) is None
    reason = lstm.unsupported_reason("lstm", torch.float32, 128, True, False)
    assert reason is not None and "shared memory" in reason and "232448" in reason
    assert lstm.unsupported_reason("lstm", torch.bfloat16, 256, True, False) is not None
    assert "lstm" in lstm.unsupported_reason("gru", torch.float32, 20, True, False)


def test_other_cell_is_a_value_error():
    xp, w_hh, b_hh, h0, c0 = make_inputs(2, 2, 16, seed=13)
    with pytest.raises(ValueError, match="'gru'"):
        lstm.recurrence_fwd("gru", xp, w_hh, b_hh, h0, c0, None, reverse=False, allow_tf32=False)


@pytest.mark.parametrize("in_registers", [True, False], ids=["registers", "shared"])
@pytest.mark.parametrize("join", [True, False], ids=["one_product", "four_products"])
@pytest.mark.parametrize("H", [16, 20, 33])
def test_weight_placements(monkeypatch, in_registers, join, H):
    """W_hh reordered in registers (where a launch holds it for the loop) or gathered straight into
    shared memory, for both forms of the backward's product: the same results. Which placement a
    launch takes is lstm._weights_in_registers'; forced here, so that the interpreter runs both."""
    monkeypatch.setattr(lstm, "_weights_in_registers",
                        lambda prec, warps, block_h, hidden_size, forward_spills: in_registers)
    monkeypatch.setattr(lstm, "_join_gates_in_backward", lambda prec, block_h, padded: join)
    check(5, 6, H, reverse=True, lengths=[6, 3, 1, 6, 4], seed=30 + H)
