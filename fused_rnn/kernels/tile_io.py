"""Global loads and stores that leave a tile in the register layout it already has.

Triton gives every ``tl.load`` and ``tl.store`` a coalesced layout of its own. A tile that lives in
an MMA accumulator's layout (the state h, a step's gates, ∂L/∂pre) therefore crosses a layout
conversion on its way to or from global memory; on sm_90 that is a shared-memory round trip with
two barriers, and in the time loop it happens every step, once per tile. In the static report
(triton 3.6, sm_90a, bf16, H = 128) such round trips cost ``long_bf16_backward`` 4 of its 6
barriers and ~35 of its 206 issue slots per step, and the GRU and LSTM forwards 4 barriers and
~110-134 slots for their xp tiles.

``load`` and ``store`` here are elementwise inline PTX instead. The compiler places an elementwise
op in whatever layout its operands have, so each thread reads and writes its own accumulator
elements straight from registers: no shared memory, no barrier. The accesses are narrower than a
coalesced load's (one element per instruction); in a time loop that is the better trade, since
every step's latency is on the recurrence's critical path and a barrier waits for all warps.

Callers keep the addresses in the form ``scalar pointer + loop-invariant offsets``: the compiler
then folds each element's constant part into the instruction (``LDG [R+0x120]``) and computes one
64-bit address per column instead of one per element.

Both take ``IN_PLACE`` (default True): False makes them plain ``tl.load`` / ``tl.store``, for the
configurations where the static report shows the per-element accesses costing more than the
conversion (each kernel says where, with its numbers). Under the interpreter (which runs no PTX)
they are always ``tl.load`` / ``tl.store``.
"""

import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake


@triton.jit
def _probe():
    pass


# As rnn_linear.INTERPRETED: triton.jit returns an InterpretedFunction when TRITON_INTERPRET=1 was
# set before this module was imported.
DIRECT = tl.constexpr(type(_probe).__name__ != "InterpretedFunction")


@triton.jit
def load(ptrs, IN_PLACE: tl.constexpr = True):
    """The elements at ``ptrs`` (fp32, fp16 or bf16), in ``ptrs``' layout (IN_PLACE).

    Unmasked: every address must be valid, and the memory must not be written while the kernel runs
    (a read-only, non-coherent load). Callers point a row or column that has nothing to read at a
    valid element instead, and discard the value.
    """
    if DIRECT and IN_PLACE:
        if ptrs.dtype.element_ty.primitive_bitwidth == 32:
            value = tl.inline_asm_elementwise("ld.global.nc.b32 $0, [$1];", "=r,l", [ptrs],
                                              dtype=ptrs.dtype.element_ty, is_pure=True, pack=1)
        else:
            value = tl.inline_asm_elementwise("ld.global.nc.b16 $0, [$1];", "=h,l", [ptrs],
                                              dtype=ptrs.dtype.element_ty, is_pure=True, pack=1)
    else:
        value = tl.load(ptrs)
    return value


@triton.jit
def store(ptrs, value, mask, IN_PLACE: tl.constexpr = True):
    """Stores ``value`` (converted to ``ptrs``' element type) where ``mask`` is true, in ``value``'s layout
    (IN_PLACE)."""
    value = value.to(ptrs.dtype.element_ty)
    if DIRECT and IN_PLACE:
        # The inline asm must return a value; the 0 is discarded. is_pure=False keeps the store.
        if ptrs.dtype.element_ty.primitive_bitwidth == 32:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $1, 0; @p st.global.b32 [$2], $3; mov.b32 $0, 0; }",
                "=r,r,l,r", [mask.to(tl.int32), ptrs, value], dtype=tl.int32, is_pure=False, pack=1)
        else:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $1, 0; @p st.global.b16 [$2], $3; mov.b32 $0, 0; }",
                "=r,r,l,h", [mask.to(tl.int32), ptrs, value], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.store(ptrs, value, mask=mask)



# ----------------------------------------------------------------------------
# Paired rows: two adjacent elements per access
# ----------------------------------------------------------------------------
# In every NVIDIA MMA accumulator layout (mma.sync's m16n8 and wgmma's m64nN) a thread's rows come
# in pairs m, m + 8: bit 3 of the row index is a register index, bits 0-2 are lane bits. A tile
# whose row m holds unit ``paired_units(BLOCK)[m]`` therefore has units 2k and 2k + 1, adjacent in
# memory, in one thread: one 8-byte (fp32) or 4-byte (bf16/fp16) access reads or writes both, half
# the instructions of ``load``/``store``. The kernels that use this hold every [BLOCK_H, ·] tile
# (state, gates, weights' rows and columns) in that order, which changes no result: it is a
# permutation of the hidden units, undone by the addresses.
#
# ``rows_from_pairs``/``pairs_from_rows`` move between the [2P, N] tile and its two [P, N] halves
# (units 2p and 2p + 1) by reshapes the compiler resolves in registers (no shared memory in the
# sm_90 build: tests/test_static_report.py counts the loop's barriers).


def pairs_fit(t):
    """Whether load_pairs/store_pairs may take one access per pair of ``t``'s last dimension (PAIRED):
    contiguous along it, every other stride even and the data aligned to two elements.

    A fake tensor (torch.compile's tracing) has no address: its storage offset stands in for it,
    as a real allocation is aligned far beyond two elements.
    """
    if is_fake(t):
        aligned = t.storage_offset() % 2 == 0
    else:
        aligned = t.data_ptr() % (2 * t.element_size()) == 0
    return (t.stride(-1) == 1 and all(stride % 2 == 0 for stride in t.stride()[:-1]) and aligned
            and t.shape[-1] % 2 == 0)


@triton.jit
def paired_units(BLOCK: tl.constexpr):
    """The unit row m of a paired tile holds: row 16q + 8j + i holds unit 16q + 2i + j (BLOCK % 16 == 0)."""
    m = tl.arange(0, BLOCK)
    return (m // 16) * 16 + 2 * (m % 8) + (m // 8) % 2


@triton.jit
def rows_from_pairs(lo, hi):
    """[P, N] tiles of units 2p and 2p + 1 -> the [2P, N] tile in paired_units order."""
    P: tl.constexpr = lo.shape[0]
    N: tl.constexpr = lo.shape[1]
    x = tl.reshape(tl.join(lo, hi), [P // 8, 8, N, 2])
    return tl.reshape(tl.permute(x, [0, 3, 1, 2]), [2 * P, N])


@triton.jit
def pairs_from_rows(x):
    """The inverse of rows_from_pairs: a [2P, N] tile in paired_units order -> (lo, hi), [P, N] each."""
    M: tl.constexpr = x.shape[0]
    N: tl.constexpr = x.shape[1]
    x = tl.permute(tl.reshape(x, [M // 16, 2, 8, N]), [0, 2, 3, 1])
    return tl.split(tl.reshape(x, [M // 2, N, 2]))


@triton.jit
def paired_rows(x):
    """A [M, K] tile with rows in unit order -> the same rows in paired_units order.

    For tiles loaded once, before a loop (weights): loaded contiguous, their layout (and so the
    shared-memory layout an MMA reads them from each step) is the compiler's best; a load through
    paired_units indices (a gather) can lose that (3xTF32 at BLOCK_H = 32: LDSM -> LDS, +40 issue
    slots per step). Columns: ``tl.trans(paired_rows(tl.trans(x)))``.
    """
    M: tl.constexpr = x.shape[0]
    K: tl.constexpr = x.shape[1]
    lo, hi = tl.split(tl.permute(tl.reshape(x, [M // 2, 2, K]), [0, 2, 1]))
    return rows_from_pairs(lo, hi)


@triton.jit
def natural_rows(x):
    """The inverse of paired_rows: a tile in paired_units order -> its rows in unit order."""
    lo, hi = pairs_from_rows(x)
    P: tl.constexpr = lo.shape[0]
    N: tl.constexpr = lo.shape[1]
    return tl.reshape(tl.permute(tl.join(lo, hi), [0, 2, 1]), [2 * P, N])


@triton.jit
def load_pairs(ptrs, hi_ptrs, PAIRED: tl.constexpr):
    """The [2P, N] fp32 tile (paired_units order) of the elements at ``ptrs`` (units 2p) and ``hi_ptrs`` (2p + 1).

    PAIRED: ``hi_ptrs`` is ``ptrs + 1`` and every ``ptrs`` is aligned to two elements; one vector
    load reads both. Otherwise two loads (an odd row length leaves the pairs unaligned). Unmasked
    and read-only, as ``load``.
    """
    if DIRECT and PAIRED:
        if ptrs.dtype.element_ty.primitive_bitwidth == 32:
            lo, hi = tl.inline_asm_elementwise("ld.global.nc.v2.b32 {$0, $1}, [$2];", "=r,=r,l", [ptrs],
                                               dtype=(ptrs.dtype.element_ty, ptrs.dtype.element_ty),
                                               is_pure=True, pack=1)
        elif ptrs.dtype.element_ty == tl.bfloat16:
            # bf16 is fp32's upper half: widening is a shift or a mask, no unpacking.
            lo, hi = tl.inline_asm_elementwise(
                "{ .reg .b32 r; ld.global.nc.b32 r, [$2]; shl.b32 $0, r, 16; and.b32 $1, r, 0xffff0000; }",
                "=r,=r,l", [ptrs], dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(
                "{ .reg .b32 r; .reg .b16 l, h; ld.global.nc.b32 r, [$2]; mov.b32 {l, h}, r; "
                "cvt.f32.f16 $0, l; cvt.f32.f16 $1, h; }",
                "=r,=r,l", [ptrs], dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
    elif PAIRED:
        # (The interpreter: the two elements the vector load reads, whatever hi_ptrs says.)
        lo = load(ptrs).to(tl.float32)
        hi = load(ptrs + 1).to(tl.float32)
    else:
        lo = load(ptrs).to(tl.float32)
        hi = load(hi_ptrs).to(tl.float32)
    return rows_from_pairs(lo, hi)


@triton.jit
def store_pairs(ptrs, hi_ptrs, value, mask, hi_mask, PAIRED: tl.constexpr):
    """Stores a [2P, N] tile in paired_units order: units 2p at ``ptrs`` where ``mask``, 2p + 1 at
    ``hi_ptrs`` where ``hi_mask``. PAIRED: as load_pairs, one vector store where ``mask`` (which
    must then equal ``hi_mask``)."""
    lo, hi = pairs_from_rows(value.to(ptrs.dtype.element_ty))
    if DIRECT and PAIRED:
        if ptrs.dtype.element_ty.primitive_bitwidth == 32:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; setp.ne.b32 p, $1, 0; @p st.global.v2.b32 [$2], {$3, $4}; mov.b32 $0, 0; }",
                "=r,r,l,r,r", [mask.to(tl.int32), ptrs, lo, hi], dtype=tl.int32, is_pure=False, pack=1)
        else:
            tl.inline_asm_elementwise(
                "{ .reg .pred p; .reg .b32 r; setp.ne.b32 p, $1, 0; mov.b32 r, {$3, $4}; "
                "@p st.global.b32 [$2], r; mov.b32 $0, 0; }",
                "=r,r,l,h,h", [mask.to(tl.int32), ptrs, lo, hi], dtype=tl.int32, is_pure=False, pack=1)
    elif PAIRED:
        # (The interpreter: what the vector store writes, whatever hi_ptrs and hi_mask say.)
        store(ptrs, lo, mask)
        store(ptrs + 1, hi, mask)
    else:
        store(ptrs, lo, mask)
        store(hi_ptrs, hi, hi_mask)
