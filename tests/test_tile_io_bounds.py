"""tile_io's loads are unmasked: every address one reads must lie inside a tensor the launch was given.

On a GPU an address outside is an illegal-address fault, or a silently wrong value; the interpreter
reads whatever memory is there, so a plain comparison with the oracle cannot see it. Here every
tile_io.load and tile_io.store of the Elman, rnn_linear, GRU and LSTM kernels is checked (also those called
with IN_PLACE=False, which are tl.load / tl.store at the same unmasked addresses), element by element,
against the spans of the running launch's tensor arguments (recorded by a pre-run hook): a load
address must lie inside one of them, and so must a store address wherever the store's mask is set.
The results are also compared with the float64 oracle, with NaN at every position a clamped load
may read (xp and dout past each length), so a value read there and not discarded shows as well.
"""

import importlib

import numpy as np
import pytest
import torch

from conftest import kernels
from fused_rnn import rnn_linear as rnn_linear_fn
from fused_rnn.kernels import elman, gru, lstm, tile_io
from helpers import DEVICE, TOL, make_params, rnn_linear_loop
from oracles import recurrence_loop
from test_kernel_elman import (assert_gradients, check_forward, make_gradients, make_inputs,
                               reference_gradients, tolerance)

pytestmark = pytest.mark.skipif(not kernels.INTERPRETED,
                                reason="reads the interpreter's addresses (a GPU run needs compute-sanitizer)")


def launched_kernels():
    """Every interpreted kernel of the kernel modules (device functions too: a hook there never runs)."""
    modules = [importlib.import_module(f"fused_rnn.kernels.{name}") for name in ("rnn_linear", "elman", "gru", "lstm")]
    return {id(k): k for m in modules for k in vars(m).values()
            if hasattr(k, "add_pre_run_hook") and not isinstance(k, type)}.values()


def span(t):
    """[first byte, one past the last byte] of a tensor's elements (strides are never negative in torch)."""
    if t.numel() == 0:
        return (0, 0)
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return (t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size())


def outside(addresses, size, spans):
    inside = np.zeros(addresses.shape, dtype=bool)
    for lo, hi in spans:
        inside |= (addresses >= lo) & (addresses + size <= hi)
    return ~inside


@pytest.fixture
def checked_tile_io(monkeypatch):
    """Makes tile_io.load / store raise on an address outside the launch's tensors; yields the counts checked."""
    spans = []
    checked = {"load": 0, "store": 0}

    def record(*args, **kwargs):
        spans[:] = [span(a) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]

    hooked = list(launched_kernels())
    for kernel in hooked:
        kernel.add_pre_run_hook(record)
    load, store = tile_io.load, tile_io.store

    def checked_load(ptrs, IN_PLACE=True):
        addresses = ptrs.handle.data.astype(np.uint64)
        bad = outside(addresses, ptrs.dtype.element_ty.primitive_bitwidth // 8, spans)
        if bad.any():  # raised before reading: the interpreter would read foreign memory
            raise AssertionError(f"tile_io.load: {int(bad.sum())} of {bad.size} addresses outside every tensor "
                                 f"argument, at tile elements {np.argwhere(bad)[:4].tolist()}")
        checked["load"] += addresses.size
        return load(ptrs, IN_PLACE)

    def checked_store(ptrs, value, mask, IN_PLACE=True):
        addresses = np.broadcast_to(ptrs.handle.data.astype(np.uint64), mask.handle.data.shape)
        bad = outside(addresses, ptrs.dtype.element_ty.primitive_bitwidth // 8, spans) & mask.handle.data
        if bad.any():
            raise AssertionError(f"tile_io.store: {int(bad.sum())} stored addresses outside every tensor argument")
        checked["store"] += int(mask.handle.data.sum())
        return store(ptrs, value, mask, IN_PLACE)

    monkeypatch.setattr(tile_io, "load", checked_load)
    monkeypatch.setattr(tile_io, "store", checked_store)
    yield checked
    for kernel in hooked:
        kernel.pre_run_hooks.remove(record)


# --- rnn_linear: the hs store (forward) and the backward sweep's hs loads and g stores ---------------------------

@pytest.mark.parametrize("B, T, H, lengths", [
    (5, 7, 20, None),            # H pads to 32 (MASK_H), B to 16
    (5, 7, 20, [7, 1, 4, 7, 3]),
    (17, 3, 16, None),           # two tiles, the second with one sequence
    (1, 1, 20, None),
], ids=["H20", "H20-lengths", "B17", "B1-T1"])
def test_rnn_linear_backward_reads_inside_hs(checked_tile_io, B, T, H, lengths):
    I, O = 3, 2
    params = [p.requires_grad_() for p in make_params(I, H, O, seed=2)]
    x = torch.randn(B, T, I, device=DEVICE)
    if lengths is not None:
        lengths = torch.tensor(lengths)
        x[torch.arange(T)[None, :] >= lengths[:, None]] = float("nan")  # padding: never read
    x.requires_grad_()
    y = rnn_linear_fn(x, *params, lengths=lengths, backend="triton")
    y.square().sum().backward()
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0
    ref = [t.detach().double().requires_grad_() for t in (x, *params)]
    y_ref = rnn_linear_loop(*ref, lengths=lengths)[0]
    y_ref.square().sum().backward()
    torch.testing.assert_close(y.double(), y_ref, **TOL[torch.float32])
    for name, got, want in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "fc_w", "fc_b"], (x, *params), ref):
        assert torch.isfinite(got.grad).all(), name
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-5, rtol=1e-4, msg=name)


# --- Elman: xp loads, out/hs stores (forward); hs and dout loads, g stores (backward) ---------------------------

RAGGED = [7, 1, 4, 7, 3]  # unsorted, 1 and T among them


def in_nan_buffer(t, time_major):
    """t's values in a view of a NaN buffer with NaN on both sides of every row: a read between rows shows.

    Batch-major rows are W + 6 long, starting 2 in: aligned pairs, read two units per access where W
    is even (tile_io.pairs_fit); time-major ones W + 5, unaligned: one unit per access."""
    B, T, W = t.shape
    if time_major:
        buffer = torch.full((T, B, W + 5), float("nan"), dtype=t.dtype, device=t.device).transpose(0, 1)
    else:
        buffer = torch.full((B, T, W + 6), float("nan"), dtype=t.dtype, device=t.device)
    view = buffer[..., 2:W + 2]
    view.copy_(t)
    return view


def poison_padding(t, lengths):
    """NaN at every position past each length: a load clamped there must be discarded."""
    if lengths is not None:
        t = t.clone()
        t[torch.arange(t.shape[1], device=t.device)[None, :] >= lengths[:, None]] = float("nan")
    return t


@pytest.mark.parametrize("B, T, H, lengths, reverse, time_major", [
    (5, 7, 20, RAGGED, False, False),
    (5, 7, 20, RAGGED, True, True),
    (5, 7, 20, None, True, True),
    (5, 7, 16, RAGGED, True, False),
    (17, 1, 20, None, False, False),        # two tiles, the second with one sequence; one step
    (17, 3, 16, [3, 1, 2] * 5 + [1, 3], False, True),
], ids=["H20-ragged", "H20-ragged-reverse-time_major", "H20-full-reverse", "H16-ragged-reverse", "B17-T1",
        "B17-ragged-time_major"])
def test_elman_loads_stay_inside_and_padding_is_discarded(checked_tile_io, B, T, H, lengths, reverse, time_major):
    cell = "rnn_tanh"
    xp, w_hh, b_hh, h0, lengths = make_inputs(cell, B, T, H, lengths=lengths, time_major=time_major, seed=40)
    xp = in_nan_buffer(poison_padding(xp, lengths), time_major)
    out, h_n, hs = check_forward(cell, xp, w_hh, b_hh, h0, lengths, reverse=reverse)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(hs).all()
    dout, dh_n = make_gradients(B, T, H, xp.dtype, dout_time_major=time_major, lengths=lengths,
                                poison_padding=lengths is not None, seed=41)
    dout = in_nan_buffer(dout, time_major)
    dxp, _, dh0, _ = elman.recurrence_bwd(cell, hs, None, w_hh, b_hh, h0, None, dout, dh_n, None, lengths,
                                          reverse=reverse, allow_tf32=False)
    assert torch.isfinite(dxp).all() and torch.isfinite(dh0).all()
    reference = reference_gradients(cell, xp, w_hh, b_hh, h0, lengths, reverse, dout, dh_n)
    assert_gradients(dxp, dh0, hs, h0, lengths, reverse, reference, tolerance(xp.dtype, False))
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0


def test_elman_backward_with_a_broadcast_dout(checked_tile_io):
    """dout with all strides 0 (the gradient of out.sum()): every load reads its one element."""
    cell, B, T, H = "rnn_relu", 5, 7, 20
    xp, w_hh, b_hh, h0, lengths = make_inputs(cell, B, T, H, lengths=RAGGED, seed=42)
    _, _, hs = check_forward(cell, xp, w_hh, b_hh, h0, lengths, reverse=True)
    dout = torch.full((1, 1, 1), 0.5, device=DEVICE).expand(B, T, H)
    dxp, _, dh0, _ = elman.recurrence_bwd(cell, hs, None, w_hh, b_hh, h0, None, dout, None, None, lengths,
                                          reverse=True, allow_tf32=False)
    reference = reference_gradients(cell, xp, w_hh, b_hh, h0, lengths, True, dout, None)
    assert_gradients(dxp, dh0, hs, h0, lengths, True, reference, tolerance(xp.dtype, False))


@pytest.mark.parametrize("B, T, H, lengths, time_major", [
    (5, 7, 20, RAGGED, True),
    (17, 2, 16, None, False),
], ids=["H20-ragged-time_major", "B17-full"])
def test_elman_bidirectional_loads_stay_inside_and_padding_is_discarded(
        checked_tile_io, B, T, H, lengths, time_major):
    cell = "rnn_tanh"
    halves = [make_inputs(cell, B, T, H, lengths=lengths, seed=43 + d) for d in range(2)]
    lengths = halves[0][4]
    xp = in_nan_buffer(poison_padding(torch.cat([halves[0][0], halves[1][0]], -1), lengths), time_major)
    w_hh, b_hh, h0 = (torch.stack([halves[0][i], halves[1][i]]) for i in (1, 2, 3))
    out, h_n, _, hs, _ = elman.bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths, allow_tf32=False,
                                                 store_saved=True)
    dout, dh_n = make_gradients(B, T, H, xp.dtype, lengths=lengths, directions=2, dout_time_major=time_major,
                                poison_padding=lengths is not None, seed=45)
    dout = in_nan_buffer(dout, time_major)
    dxp, _, dh0, _ = elman.bidirectional_bwd(cell, hs, w_hh, dout, dh_n, lengths, allow_tf32=False)
    for t in (out, h_n, hs, dxp, dh0):
        assert torch.isfinite(t).all()
    tol = TOL[torch.float32]
    for d in range(2):
        inputs = (xp[..., d * H:(d + 1) * H], w_hh[d], b_hh[d], h0[d], lengths)
        reference = reference_gradients(cell, *inputs, d == 1, dout[..., d * H:(d + 1) * H], dh_n[d])
        assert_gradients(dxp[..., d * H:(d + 1) * H], dh0[d], hs[d], h0[d], lengths, d == 1, reference, tol)
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0


@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "no_h0"])
def test_elman_bidirectional_zero_steps_runs_no_kernel(checked_tile_io, with_h0):
    """T = 0 (the loads would have no valid address): h_n is h0 (or 0) and dh0 is dh_n (or 0), on the host."""
    cell, B, H = "rnn_relu", 3, 20
    xp = torch.randn(B, 0, 2 * H, device=DEVICE)
    w_hh = torch.randn(2, H, H, device=DEVICE)
    h0 = torch.randn(2, B, H, device=DEVICE) if with_h0 else None
    out, h_n, _, hs, _ = elman.bidirectional_fwd(cell, xp, w_hh, None, h0, None, allow_tf32=False, store_saved=True)
    assert out.shape == (B, 0, 2 * H) and hs.shape == (2, B, 0, H)
    torch.testing.assert_close(h_n, h0 if with_h0 else torch.zeros(2, B, H, device=DEVICE), rtol=0, atol=0)
    dh_n = torch.randn(2, B, H, device=DEVICE) if with_h0 else None
    dxp, _, dh0, _ = elman.bidirectional_bwd(cell, hs, w_hh, None, dh_n, None, allow_tf32=False)
    assert dxp.shape == (B, 0, 2 * H)
    torch.testing.assert_close(dh0, dh_n if with_h0 else torch.zeros(2, B, H, device=DEVICE), rtol=0, atol=0)
    assert checked_tile_io["load"] == 0 and checked_tile_io["store"] == 0


# --- GRU and LSTM: xp loads, out/hs/aux stores (forward); aux and dout loads, dxp/dgh stores (backward) ---------

FAMILY = {"gru": gru, "lstm": lstm}


def family_inputs(cell, B, T, H, *, with_state=True, seed=0):
    """xp [B, T, G·H], w_hh (nn.GRU / nn.LSTM's init), b_hh, h0 and (LSTM) c0; drawn on CPU."""
    G = 3 if cell == "gru" else 4
    gen = torch.Generator().manual_seed(seed)
    xp = torch.randn(B, T, G * H, generator=gen)
    w_hh = (torch.rand(G * H, H, generator=gen) * 2 - 1) * H ** -0.5
    b_hh = (torch.rand(G * H, generator=gen) * 2 - 1) * H ** -0.5
    h0 = torch.randn(B, H, generator=gen) * 0.5 if with_state else None
    c0 = torch.randn(B, H, generator=gen) if with_state and cell == "lstm" else None
    return tuple(t.to(DEVICE) if t is not None else None for t in (xp, w_hh, b_hh, h0, c0))


def family_gradients(kind, B, T, H, lengths, time_major, seed):
    """dout: "poisoned" (NaN past each length, in a NaN-bordered buffer, time-major if asked), "broadcast"
    (all strides 0) or None."""
    if kind is None:
        return None
    if kind == "broadcast":
        return torch.full((1, 1, 1), 0.5, device=DEVICE).expand(B, T, H)
    dout = torch.randn(B, T, H, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    return in_nan_buffer(poison_padding(dout, lengths), time_major)


def family_reference(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, dout, dh_n, dc_n):
    """The float64 oracle's out, h_n, c_n and, for L = Σ out·dout + Σ h_n·dh_n + Σ c_n·dc_n, ∂L/∂xp, ∂L/∂W_hh,
    ∂L/∂h0 and ∂L/∂c0 (of zeros where None). NaN in xp and dout at padding positions is ignored (the oracle
    never reads xp there, and out is constant 0 there)."""
    B, _, _ = xp.shape
    H = w_hh.shape[1]
    xp64 = xp.detach().double().nan_to_num(0.0).requires_grad_()
    w64 = w_hh.double().requires_grad_()
    h064 = (h0.double() if h0 is not None else torch.zeros(B, H, dtype=torch.float64)).requires_grad_()
    c064 = (c0.double() if c0 is not None else torch.zeros(B, H, dtype=torch.float64)).requires_grad_()
    out, h_n, c_n = recurrence_loop(cell, xp64, w64, b_hh.double(), h064, c064 if cell == "lstm" else None,
                                    lengths, reverse)
    loss = sum((y * dy.double().nan_to_num(0.0)).sum() for y, dy in ((out, dout), (h_n, dh_n), (c_n, dc_n))
               if dy is not None)
    grads = torch.autograd.grad(loss, (xp64, w64, h064, c064), allow_unused=True) if torch.is_tensor(loss) \
        else (None,) * 4
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (xp64, w64, h064, c064))]
    return (out.detach(), h_n.detach(), c_n.detach(), *grads)


def states_before(out, h0, lengths, reverse):
    """h_{t-1} of the step at each position t (0 past a length), from the oracle's out."""
    B, T, H = out.shape
    prev = torch.zeros_like(out)
    for b in range(B):
        n = int(lengths[b]) if lengths is not None else T
        h = h0[b].double() if h0 is not None else torch.zeros(H, dtype=out.dtype)
        for t in (reversed(range(n)) if reverse else range(n)):
            prev[b, t] = h
            h = out[b, t]
    return prev


def assert_family_close(got, want, name):
    assert torch.isfinite(got).all(), name
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got.double(), want, atol=2e-5 * scale, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def run_family(cell, B, T, H, lengths, reverse, time_major, *, store_out=True, dout="poisoned", with_dh_n=True,
               with_dc_n=True, with_state=True, seed=50):
    """Forward (store_saved) and backward with NaN at every padding position of xp and dout and around every
    row; everything against the float64 oracle and finite."""
    module = FAMILY[cell]
    xp, w_hh, b_hh, h0, c0 = family_inputs(cell, B, T, H, with_state=with_state, seed=seed)
    lengths = torch.tensor(lengths, device=DEVICE) if lengths is not None else None
    xp = in_nan_buffer(poison_padding(xp, lengths), time_major)
    out, h_n, c_n, hs, aux = module.recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                                   allow_tf32=False, store_out=store_out, store_saved=True)
    dout = family_gradients(dout, B, T, H, lengths, time_major, seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    dh_n = torch.randn(B, H, generator=gen).to(DEVICE) if with_dh_n else None
    dc_n = torch.randn(B, H, generator=gen).to(DEVICE) if with_dc_n and cell == "lstm" else None
    dxp, dgh, dh0, dc0 = module.recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths,
                                               reverse=reverse, allow_tf32=False)
    ref_out, ref_hn, ref_cn, ref_dxp, ref_dw, ref_dh0, ref_dc0 = family_reference(
        cell, xp, w_hh, b_hh, h0, c0, lengths, reverse, dout, dh_n, dc_n)
    if store_out:
        assert_family_close(out, ref_out, "out")
    else:
        assert out is None
    assert_family_close(h_n, ref_hn, "h_n")
    assert_family_close(hs, ref_out, "hs")
    assert torch.isfinite(aux).all()
    if cell == "lstm":
        assert_family_close(c_n, ref_cn, "c_n")
        assert_family_close(dc0, ref_dc0, "dc0")
    assert_family_close(dxp, ref_dxp, "dxp")
    assert_family_close(dh0, ref_dh0, "dh0")
    # dgh (the GRU's differs from dxp in the n block) through the weight gradient it gives.
    h_prev = states_before(ref_out, h0, lengths, reverse)
    assert torch.isfinite(dgh).all()
    assert_family_close(torch.einsum("btg,bth->gh", dgh.double(), h_prev), ref_dw, "dW_hh")
    return out, hs


FAMILY_CASES = [
    (5, 7, 20, RAGGED, False, False),
    (5, 7, 20, RAGGED, True, True),
    (5, 7, 20, None, True, True),
    (5, 7, 16, RAGGED, True, False),
    (5, 7, 32, RAGGED, False, True),
    (3, 4, 40, [4, 1, 3], True, False),     # BLOCK_H = 64: the GRU's reverse loads through tile_io, padded rows
    (17, 1, 20, None, False, False),        # two tiles, the second with one sequence; one step
    (17, 3, 16, [3, 1, 2] * 5 + [1, 3], True, True),
    (1, 1, 16, [1], True, False),
]
FAMILY_IDS = ["H20-ragged", "H20-ragged-reverse-time_major", "H20-full-reverse-time_major", "H16-ragged-reverse",
              "H32-ragged-time_major", "H40-ragged-reverse", "B17-T1", "B17-ragged-reverse-time_major",
              "B1-T1-reverse"]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("B, T, H, lengths, reverse, time_major", FAMILY_CASES, ids=FAMILY_IDS)
def test_family_loads_stay_inside_and_padding_is_discarded(checked_tile_io, cell, B, T, H, lengths, reverse,
                                                           time_major):
    run_family(cell, B, T, H, lengths, reverse, time_major)
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dout, with_dh_n, with_dc_n, with_state", [
    (None, True, False, True),
    ("broadcast", False, True, False),
    ("poisoned", False, False, True),
    (None, False, False, False),
], ids=["dh_n-only", "broadcast_dout-dc_n", "dout-only", "no_gradient"])
def test_family_optional_gradients(checked_tile_io, cell, dout, with_dh_n, with_dc_n, with_state):
    run_family(cell, 5, 7, 20, RAGGED, True, True, store_out=False, dout=dout, with_dh_n=with_dh_n,
               with_dc_n=with_dc_n, with_state=with_state)
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_family_inference_forward(checked_tile_io, cell, reverse):
    """store_saved=False (the inference forward): out and h_n only."""
    B, T, H = 5, 7, 20
    xp, w_hh, b_hh, h0, c0 = family_inputs(cell, B, T, H, seed=60)
    lengths = torch.tensor(RAGGED, device=DEVICE)
    xp = in_nan_buffer(poison_padding(xp, lengths), True)
    out, h_n, c_n, hs, aux = FAMILY[cell].recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                                         allow_tf32=False, store_out=True, store_saved=False)
    assert hs is None and aux is None
    ref_out, ref_hn, ref_cn = recurrence_loop(cell, xp.double().nan_to_num(0.0), w_hh.double(), b_hh.double(),
                                              h0.double(), c0.double() if c0 is not None else None, lengths,
                                              reverse)
    assert_family_close(out, ref_out, "out")
    assert_family_close(h_n, ref_hn, "h_n")
    if cell == "lstm":
        assert_family_close(c_n, ref_cn, "c_n")
    assert checked_tile_io["load"] > 0 and checked_tile_io["store"] > 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_state", [True, False], ids=["states", "no_states"])
def test_family_zero_steps_runs_no_kernel(checked_tile_io, cell, reverse, with_state):
    """T = 0 (the loads would have no valid address): h_n, c_n are h0, c0 (or 0) and dh0, dc0 are dh_n, dc_n
    (or 0), on the host."""
    B, H = 3, 20
    module = FAMILY[cell]
    _, w_hh, b_hh, h0, c0 = family_inputs(cell, B, 1, H, with_state=with_state, seed=70)
    G = w_hh.shape[0] // H
    xp = torch.randn(B, 0, G * H, device=DEVICE)
    out, h_n, c_n, hs, aux = module.recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, None, reverse=reverse,
                                                   allow_tf32=False, store_saved=True)
    assert out.shape == hs.shape == (B, 0, H) and aux.shape[:2] == (B, 0)
    zeros = torch.zeros(B, H, device=DEVICE)
    torch.testing.assert_close(h_n, h0 if with_state else zeros, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(71)
    dh_n = torch.randn(B, H, generator=gen).to(DEVICE) if with_state else None
    dc_n = torch.randn(B, H, generator=gen).to(DEVICE) if with_state and cell == "lstm" else None
    dxp, dgh, dh0, dc0 = module.recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, None, dh_n, dc_n, None,
                                               reverse=reverse, allow_tf32=False)
    assert dxp.shape == dgh.shape == (B, 0, G * H)
    torch.testing.assert_close(dh0, dh_n if with_state else zeros, rtol=0, atol=0)
    if cell == "lstm":
        torch.testing.assert_close(c_n, c0 if with_state else zeros, rtol=0, atol=0)
        torch.testing.assert_close(dc0, dc_n if with_state else zeros, rtol=0, atol=0)
    assert checked_tile_io["load"] == 0 and checked_tile_io["store"] == 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_family_empty_batch_runs_no_program(checked_tile_io, cell):
    """B = 0: a grid of no programs (B - 1 = -1 would be no valid sequence to clamp to)."""
    H = 20
    module = FAMILY[cell]
    _, w_hh, b_hh, _, _ = family_inputs(cell, 1, 1, H, seed=72)
    xp = torch.randn(0, 3, w_hh.shape[0], device=DEVICE)
    out, h_n, _, hs, aux = module.recurrence_fwd(cell, xp, w_hh, b_hh, None, None, None, reverse=True,
                                                 allow_tf32=False, store_saved=True)
    assert out.shape == hs.shape == (0, 3, H) and h_n.shape == (0, H)
    dxp, _, dh0, _ = module.recurrence_bwd(cell, hs, aux, w_hh, b_hh, None, None, torch.zeros(0, 3, H, device=DEVICE),
                                           None, None, None, reverse=True, allow_tf32=False)
    assert dxp.shape == (0, 3, w_hh.shape[0]) and dh0.shape == (0, H)
    assert checked_tile_io["load"] == 0 and checked_tile_io["store"] == 0
