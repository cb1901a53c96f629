"""kernels/tile_io.py on its own: loads and masked stores of a tile in an MMA accumulator's layout,
one element per access (load, store) and two adjacent ones (load_pairs, store_pairs).

The kernels only ever use tile_io on tiles that come out of (or go into) a tl.dot, so that is what
this kernel does: it loads a tile through tile_io, adds it to a product, and stores the sum through
tile_io under a mask, for every dtype the kernels store. On a GPU (the `gpu` run, or any CUDA
machine) that is the inline-PTX path, compared here with plain torch; under the interpreter it is the
tl.load / tl.store fallback, so the same test pins the semantics both paths must share.
"""

import pytest
import torch

from conftest import kernels  # noqa: F401  (switches the interpreter on first where there is no GPU)
from helpers import DEVICE

import triton
import triton.language as tl
from fused_rnn.kernels import tile_io


@triton.jit
def _add_product(a_ptr, b_ptr, c_ptr, out_ptr, M, N, M_BLOCK: tl.constexpr, N_BLOCK: tl.constexpr,
                 K: tl.constexpr, IN_PLACE: tl.constexpr):
    """out[m, n] = (a @ b)[m, n] + c[m, n] where m < M and n < N; c's rows and columns past M, N clamped."""
    rows = tl.arange(0, M_BLOCK)
    cols = tl.arange(0, N_BLOCK)
    ks = tl.arange(0, K)
    a = tl.load(a_ptr + rows[:, None] * K + ks[None, :])
    b = tl.load(b_ptr + ks[:, None] * N_BLOCK + cols[None, :])
    acc = tl.dot(a, b)
    # As the kernels do: unmasked loads at clamped (valid) addresses, the stores masked.
    c_offs = tl.minimum(rows, M - 1)[:, None] * N + tl.minimum(cols, N - 1)[None, :]
    c = tile_io.load(c_ptr + c_offs, IN_PLACE)
    out = acc + c.to(tl.float32)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    tile_io.store(out_ptr + rows[:, None] * N + cols[None, :], out, mask, IN_PLACE)


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_load_and_masked_store_in_the_accumulators_layout(dtype, in_place):
    check_add_product(dtype, in_place)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_inline_ptx_on_the_gpu(dtype):
    """The same, in the GPU proof's `-m gpu` run: there tile_io is the inline PTX."""
    check_add_product(dtype, True)


def check_add_product(dtype, in_place):
    M_BLOCK, N_BLOCK, K = 64, 16, 16
    M, N = 50, 11  # a ragged tile: rows and columns past these must be neither read past nor written
    torch.manual_seed(0)
    a = torch.randn(M_BLOCK, K, device=DEVICE).to(torch.float16)  # (the interpreter's bf16 tl.dot is wrong)
    b = torch.randn(K, N_BLOCK, device=DEVICE).to(torch.float16)
    c = torch.randn(M, N, device=DEVICE).to(dtype)
    # One buffer with a NaN border: a store outside [M, N) shows as a changed border element.
    border = torch.full((M * N + 64,), float("nan"), device=DEVICE, dtype=dtype)
    out = border[32:32 + M * N]
    _add_product[(1,)](a, b, c, out, M, N, M_BLOCK=M_BLOCK, N_BLOCK=N_BLOCK, K=K, IN_PLACE=in_place,
                       num_warps=4)
    expected = (a.float() @ b.float())[:M, :N] + c.float()
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.view(M, N).float(), expected, atol=tol, rtol=tol)
    assert border[:32].isnan().all() and border[32 + M * N:].isnan().all()


@triton.jit
def _add_product_paired(a_ptr, b_ptr, c_ptr, out_ptr, M, N, M_BLOCK: tl.constexpr, N_BLOCK: tl.constexpr,
                        K: tl.constexpr, PAIRED: tl.constexpr):
    """outᵀ[m, n] = (a @ b)[m, n] + cᵀ[m, n] for m < M, n < N, with c, out: [N, M] (m contiguous, as a
    kernel's hidden units), every tile's rows in tile_io.paired_units order."""
    units = tile_io.paired_units(M_BLOCK)
    cols = tl.arange(0, N_BLOCK)
    ks = tl.arange(0, K)
    a = tl.load(a_ptr + units[:, None] * K + ks[None, :])
    b = tl.load(b_ptr + ks[:, None] * N_BLOCK + cols[None, :])
    acc = tl.dot(a, b)
    lo = 2 * tl.arange(0, M_BLOCK // 2)
    hi = lo + 1
    col_read = tl.minimum(cols, N - 1)[None, :] * M
    # Past M, read unit 0 (lo) or M - 1 (hi): valid, and a pair's lo unit stays even (aligned).
    c = tile_io.load_pairs(c_ptr + col_read + tl.where(lo < M, lo, 0)[:, None],
                           c_ptr + col_read + tl.minimum(hi, M - 1)[:, None], PAIRED)
    out = acc + c.to(tl.float32)
    col_ok = (cols < N)[None, :]
    tile_io.store_pairs(out_ptr + cols[None, :] * M + lo[:, None], out_ptr + cols[None, :] * M + hi[:, None], out,
                        (lo < M)[:, None] & col_ok, (hi < M)[:, None] & col_ok, PAIRED)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [50, 49])  # even: one access per pair; odd: two
def test_paired_load_and_masked_store(dtype, M):
    check_add_product_paired(dtype, M)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M", [50, 49])
def test_paired_inline_ptx_on_the_gpu(dtype, M):
    check_add_product_paired(dtype, M)


def check_add_product_paired(dtype, M):
    M_BLOCK, N_BLOCK, K = 64, 16, 16
    N = 11
    torch.manual_seed(1)
    a = torch.randn(M_BLOCK, K, device=DEVICE).to(torch.float16)
    b = torch.randn(K, N_BLOCK, device=DEVICE).to(torch.float16)
    c = torch.randn(N, M, device=DEVICE).to(dtype)
    border = torch.full((M * N + 64,), float("nan"), device=DEVICE, dtype=dtype)
    out = border[32:32 + M * N]  # 32 elements in: aligned to two elements, as the kernels' buffers
    _add_product_paired[(1,)](a, b, c, out, M, N, M_BLOCK=M_BLOCK, N_BLOCK=N_BLOCK, K=K, PAIRED=M % 2 == 0,
                              num_warps=4)
    expected = (a.float() @ b.float())[:M, :N].T + c.float()
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.view(N, M).float(), expected, atol=tol, rtol=tol)
    assert border[:32].isnan().all() and border[32 + M * N:].isnan().all()


@triton.jit
def _paired_units(out_ptr, BLOCK: tl.constexpr):
    tl.store(out_ptr + tl.arange(0, BLOCK), tile_io.paired_units(BLOCK))


def test_paired_units_pair_rows_m_and_m_plus_8():
    """Within each 16 rows a permutation of the units, in which rows m and m + 8 (one thread's in an
    MMA accumulator) hold units 2k and 2k + 1."""
    units = torch.full((64,), -1, dtype=torch.int32, device=DEVICE)
    _paired_units[(1,)](units, BLOCK=64)
    units = units.tolist()
    for q in range(4):
        assert sorted(units[16 * q:16 * q + 16]) == list(range(16 * q, 16 * q + 16))
        for i in range(8):
            m = 16 * q + i
            assert units[m] % 2 == 0 and units[m + 8] == units[m] + 1


def test_pairs_fit():
    """tile_io.pairs_fit: two-unit accesses to a caller's tensor need unit stride 1, even batch and time
    strides, an aligned start."""
    fit = tile_io.pairs_fit
    wide = torch.randn(4, 6, 2 * 31 + 2, device=DEVICE)
    assert fit(torch.randn(4, 6, 62, device=DEVICE))
    assert fit(torch.randn(6, 4, 62, device=DEVICE).transpose(0, 1))      # time-major view
    assert fit(wide[..., 2:])                                              # 8 bytes in: aligned
    assert not fit(wide[..., 1:63])                                        # 4 bytes in
    assert not fit(torch.randn(4, 6, 63, device=DEVICE)[..., :62])         # odd time stride
    assert not fit(torch.randn(4 * 379, device=DEVICE).as_strided((4, 6, 62), (379, 62, 1)))  # odd batch stride
    assert not fit(wide[..., ::2])                                         # unit stride 2
    half = torch.randn(4, 6, 64, device=DEVICE, dtype=torch.bfloat16)
    assert fit(half[..., 2:]) and not fit(half[..., 1:63])


def test_pairs_fit_on_fake_tensors():
    """Under torch.compile's tracing the launchers see fake tensors, which have no address: the storage
    offset decides, and no data_ptr() is asked for (deprecated on fake tensors)."""
    import warnings
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        buffer = torch.empty(4, 6, 64)
        assert tile_io.pairs_fit(buffer[..., 2:])
        assert not tile_io.pairs_fit(buffer[..., 1:63])
