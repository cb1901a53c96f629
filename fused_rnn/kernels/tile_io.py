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
