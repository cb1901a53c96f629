"""tile_io's loads are unmasked: every address one reads must lie inside a tensor the launch was given.

On a GPU an address outside is an illegal-address fault, or a silently wrong value; the interpreter
reads whatever memory is there, so a plain comparison with the oracle cannot see it. Here every
tile_io.load and tile_io.store of the Elman and rnn_linear kernels is checked, element by element,
against the spans of the running launch's tensor arguments (recorded by a pre-run hook): a load
address must lie inside one of them, and so must a store address wherever the store's mask is set.
The results are also compared with the float64 oracle, with NaN at every position a clamped load
may read (xp and dout past each length), so a value read there and not discarded shows as well.
"""

import numpy as np
import pytest
import torch

from conftest import kernels
from fused_rnn import rnn_linear as rnn_linear_fn
from fused_rnn.kernels import elman, tile_io
from helpers import DEVICE, TOL, make_params, rnn_linear_loop
from test_kernel_elman import (assert_gradients, check_forward, make_gradients, make_inputs,
                               reference_gradients, tolerance)

pytestmark = pytest.mark.skipif(not kernels.INTERPRETED,
                                reason="reads the interpreter's addresses (a GPU run needs compute-sanitizer)")

KERNELS = ["_rnn_linear_fwd_kernel", "_rnn_linear_fwd_kernel_any_stride", "_rnn_linear_bwd_kernel"]
ELMAN_KERNELS = ["_elman_fwd_kernel", "_elman_fwd_kernel_any_stride", "_elman_bwd_kernel",
                 "_elman_bwd_kernel_any_stride"]


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

    hooked = [getattr(kernels, name) for name in KERNELS] + [getattr(elman, name) for name in ELMAN_KERNELS]
    for kernel in hooked:
        kernel.add_pre_run_hook(record)
    load, store = tile_io.load, tile_io.store

    def checked_load(ptrs):
        addresses = ptrs.handle.data.astype(np.uint64)
        bad = outside(addresses, ptrs.dtype.element_ty.primitive_bitwidth // 8, spans)
        if bad.any():  # raised before reading: the interpreter would read foreign memory
            raise AssertionError(f"tile_io.load: {int(bad.sum())} of {bad.size} addresses outside every tensor "
                                 f"argument, at tile elements {np.argwhere(bad)[:4].tolist()}")
        checked["load"] += addresses.size
        return load(ptrs)

    def checked_store(ptrs, value, mask):
        addresses = np.broadcast_to(ptrs.handle.data.astype(np.uint64), mask.handle.data.shape)
        bad = outside(addresses, ptrs.dtype.element_ty.primitive_bitwidth // 8, spans) & mask.handle.data
        if bad.any():
            raise AssertionError(f"tile_io.store: {int(bad.sum())} stored addresses outside every tensor argument")
        checked["store"] += int(mask.handle.data.sum())
        return store(ptrs, value, mask)

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
