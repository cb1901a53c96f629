"""Triton kernels for a one-layer Elman RNN followed by a Linear on the last step.

Forward, one program per tile of ``BLOCK_B`` sequences::

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)      t = 1 … T
    y   = fc_W h_T + fc_b

Everything is computed transposed: the state tile is ``hᵀ`` of shape
``[BLOCK_H, BLOCK_B]``, so the hidden size is the MMA's M dimension and the
batch tile its N. Each step is ``preᵀ = W_hh · hᵀ + W_ih · x_tᵀ + b``: with
M = H ≥ 64 and 4 warps (one warpgroup) Hopper runs it as wgmma, whose A operand
(W_hh, W_ih) comes from registers where they fit (weights_in_registers: loaded
once and held there for the whole loop) or else from shared memory where they
were stored once, instead of being re-read into registers every step as the
``[B, H] @ [H, H]`` orientation (M = 16, mma.sync) does.

Every ``[BLOCK_H, ·]`` tile holds the hidden units in ``tile_io.paired_units``
order (a permutation within each 16 rows), so that a thread's two rows of an
MMA accumulator are adjacent units and each global access moves both.

The hidden state lives in fp32 registers for the whole loop; the ``[B, T, H]``
sequence is written only when autograd needs it (``STORE_HS``), so inference
memory is O(B·H) whatever T is. It is written, and read back by the backward,
straight from the accumulator's registers (``tile_io``), without a layout
conversion through shared memory in the loop.

Backward walks time in reverse (the only sequential part) and writes
``g_t = ∂L/∂pre_t``; the weight and input gradients are then single large
matmuls over all steps, done by the caller (see ``fused_rnn/ops.py``).

Every block dimension is a power of two and at least 16 (``tl.dot``'s minimum);
padded lanes are loaded as 0. Where H is padded (``MASK_H``) the padded rows of
the state are forced to 0 after every step: an infinite x or h0 times a padded
(zero) weight is NaN, which would otherwise reach real rows through W_hh.
"""

import threading

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
import triton
import triton.language as tl

from . import tile_io

# The smallest normal fp32 number (2^-126): the stand-in for a zero TF32
# remainder (see _split_tf32). TF32 keeps fp32's exponent range, and a normal
# number is not flushed to zero by the tensor core.
TINY_NORMAL = tl.constexpr(1.1754943508222875e-38)

# Lets the tests poison every output buffer (fill it with NaN) before a kernel
# writes it, so a lane the kernel forgot to write cannot pass by being zero.
new_empty = torch.empty


# ----------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------

@triton.jit
def _tanh(x, FAST_TANH: tl.constexpr):
    """tanh in fp32.

    FAST_TANH (on a GPU: bf16/fp16, and fp32 with TF32 products): the hardware's
    ``tanh.approx.f32``, one MUFU op, relative error about 2^-11 (PTX ISA),
    below bf16's 2^-8 and at fp16's 2^-11 rounding of the state as the next
    step's MMA operand, and at the ~2^-11 of a TF32 product.

    Otherwise built from exp (libdevice.tanh returns None under the
    interpreter): ``(1 - e) / (1 + e)`` with ``e = exp(-2|x|) ∈ (0, 1]`` never
    overflows, but ``1 - e`` cancels near 0 (5e-4 relative error at |x| = 1e-4),
    so below |x| = 2^-3 the odd Taylor series to x^9 is used: its truncation
    error there is (62/2835)·|x|^8 < 4e-9 relative, and the exp form's is
    ~3e-7 relative at |x| = 2^-3 and falls as |x| grows.
    """
    if FAST_TANH:
        y = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
    else:
        a = tl.abs(x)
        e = tl.exp(-2.0 * a)
        big = (1.0 - e) / (1.0 + e)
        x2 = x * x
        # x - x³/3 + 2x⁵/15 - 17x⁷/315 + 62x⁹/2835, Horner in x².
        poly = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
        y = tl.where(a < 0.125, poly, tl.where(x < 0, -big, big))
    return y


@triton.jit
def _sigmoid_of_half(u, FAST_TANH: tl.constexpr):
    """σ(2u) in fp32: a sigmoid gate from u = a/2, half its pre-activation a (the GRU and LSTM
    launchers halve the sigmoid gates' rows of W_hh, their kernels xp and b_hh).

    FAST_TANH: ``½ + ½·tanh(u)`` with the hardware's tanh.approx.f32 (one MUFU op and one FFMA;
    see _tanh). tanh's absolute error is at most ~2^-11 (|tanh| ≤ 1, relative error 2^-11), so
    σ's is at most ~2^-12 ≈ 2.4e-4: below bf16's 2^-8 and at fp16's 2^-11 rounding of the state
    as the next step's MMA operand, and at a TF32 product's ~2^-11. It is absolute, not relative,
    and that is what matters: σ(-20) = 2e-9 comes out as 0, which changes an LSTM's c by at most
    2e-9·|c|; a GRU's z reaches h through z·(h - n), |h - n| ≤ 2, and its r reaches n's
    pre-activation through r·gh_n, as gh_n's own ~2^-11 relative error does.

    Otherwise ``1 / (1 + exp(-2u))``: exp's relative error ε (a few ulp) moves the result by at
    most ε·e/(1+e) ≤ ε relative, so σ is good to a few fp32 ulp for every u; exp(-2u) = inf
    (2u < -88) gives exactly 0, and NaN stays NaN, as torch.sigmoid.
    """
    if FAST_TANH:
        y = 0.5 + 0.5 * _tanh(u, True)
    else:
        y = 1.0 / (1.0 + tl.exp(-2.0 * u))
    return y


@triton.jit
def _act(pre, RELU: tl.constexpr, FAST_TANH: tl.constexpr):
    if RELU:
        # where(pre < 0, 0, pre) keeps NaN (NaN < 0 is false); tl.maximum would not.
        h = tl.where(pre < 0.0, 0.0, pre)
    else:
        h = _tanh(pre, FAST_TANH)
    return h


@triton.jit
def _split_tf32(w):
    """(hi, lo) of fp32 ``w``: hi is w with its low 13 mantissa bits cleared (TF32-exact), lo = w - hi.

    Non-finite and TF32-exact values are split so that "tf32x3" products (see _mm) behave as one
    IEEE product does: a NaN keeps its payload in hi, and lo is never 0 for a nonzero w (±2^-126,
    w's sign, where w is TF32-exact or infinite), so lo times an infinite operand is an infinity of
    the right sign, not inf·0 = NaN. That changes a product by at most 2^-126 of the other operand.
    """
    hi = (w.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    hi = tl.where(w != w, w, hi)
    lo = w - hi
    tiny = tl.where(w < 0, -TINY_NORMAL, TINY_NORMAL)
    lo = tl.where(((lo == 0) | (lo != lo)) & (w != 0), tiny, lo)
    return hi, lo


@triton.jit
def _mm(a, a_lo, b, acc, PRECISION: tl.constexpr):
    """acc + a·b, a: [M, K] weight tile (a_lo its TF32 remainder, see split_tf32_weights); b: [K, N].

    PRECISION: "ieee" (FFMA), "tf32" (one tensor-core pass, ~2^-11 relative per
    product), "tf32x3" (three TF32 passes: a·b_hi + a·b_lo + a_lo·b_hi, ~2^-21
    relative per product: fp32-level accuracy on tensor cores) or "low"
    (bf16/fp16 operands, fp32 accumulation).

    For "tf32x3" b is split here as the weights are (_split_tf32), so that
    non-finite values behave as in one IEEE product.
    """
    if PRECISION == "tf32x3":
        b_hi, b_lo = _split_tf32(b)
        acc = tl.dot(a_lo, b_hi, acc, input_precision="tf32")
        acc = tl.dot(a, b_lo, acc, input_precision="tf32")
        acc = tl.dot(a, b_hi, acc, input_precision="tf32")
    elif PRECISION == "tf32":
        acc = tl.dot(a, b, acc, input_precision="tf32")
    elif PRECISION == "ieee":
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b.to(a.dtype), acc)
    return acc


@triton.jit
def _load_tile(ptr, rows, cols, n_rows, n_cols, stride_r, stride_c):
    """Load ``ptr[rows, cols]`` as a 2-D tile, zero outside ``[n_rows, n_cols]``."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)


@triton.jit
def _fused_head(fc_w_ptr, fc_w_lo_ptr, fc_b_ptr, y_ptr, h, units, seqs, seq_ok, H, O,
                BLOCK_O: tl.constexpr, HAS_FC_B: tl.constexpr, PRECISION: tl.constexpr,
                OPERAND_DTYPE: tl.constexpr):
    """A layer kernel's head after its time loop: yᵀ = fc_W · hᵀ + fc_b for the program's sequences,
    stored to y [B, O] (y's dtype). The GRU's and LSTM's; rnn_linear's forward has its own (it loads
    fc_W before the loop, beside its other weights).

    h: the final state hᵀ [BLOCK_H, BLOCK_B] fp32, row m holding unit ``units[m]`` (the loop's order,
    padded rows 0); fc_W's columns are gathered in that order, once, so h needs no reordering.
    fc_W [O, H] is loaded after the loop, so it takes none of the loop's registers; its padded rows
    and columns are 0. "tf32x3": fc_w_lo holds its TF32 remainders (split_tf32_weights).
    """
    offs_o = tl.arange(0, BLOCK_O)
    fc_w = _load_tile(fc_w_ptr, offs_o, units, O, H, H, 1).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        fc_w_lo = _load_tile(fc_w_lo_ptr, offs_o, units, O, H, H, 1)
    else:
        fc_w_lo = fc_w
    y = _mm(fc_w, fc_w_lo, h.to(OPERAND_DTYPE), tl.zeros([BLOCK_O, h.shape[1]], dtype=tl.float32), PRECISION)
    if HAS_FC_B:
        y += tl.load(fc_b_ptr + offs_o, mask=offs_o < O, other=0.0).to(tl.float32)[:, None]
    y_mask = (offs_o[:, None] < O) & seq_ok[None, :]
    tl.store(y_ptr + seqs[None, :] * O + offs_o[:, None], y.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _load_state(ptr, seqs, units, stride_b, stride_h, mask, HAS_STATE: tl.constexpr, offset=0):
    """A [B, H] state (h0, c0, dh_n, dc_n) as a [BLOCK_H, BLOCK_B] fp32 tile: row m unit units[m],
    column j sequence seqs[j], read at ``ptr + offset`` through its strides, 0 where not ``mask``;
    all 0 without HAS_STATE. ``offset`` (a direction's state, elman) is added here, not by the
    caller: without HAS_STATE ``ptr`` is None."""
    if HAS_STATE:
        tile = tl.load(ptr + offset + seqs[None, :] * stride_b + units[:, None] * stride_h,
                       mask=mask, other=0.0).to(tl.float32)
    else:
        tile = tl.zeros([units.shape[0], seqs.shape[0]], dtype=tl.float32)
    return tile


@triton.jit
def _natural_rows(x, PAIRED_ORDER: tl.constexpr):
    """A [BLOCK_H, ·] tile's rows in unit order: tile_io.natural_rows where they are paired."""
    if PAIRED_ORDER:
        x = tile_io.natural_rows(x)
    return x


@triton.jit
def _pair_rows_read(lo_units, hi_units, H, MASK_H: tl.constexpr):
    """The units a load of pair (lo, hi) reads: themselves, or unit 0 in place of a padded unit
    (MASK_H), so that every unmasked load's address is valid."""
    if MASK_H:
        lo_read = tl.where(lo_units < H, lo_units, 0)
        hi_read = tl.where(hi_units < H, hi_units, 0)
    else:
        # (Not the where: constant offsets per register fold into the loads.)
        lo_read, hi_read = lo_units, hi_units
    return lo_read, hi_read


@triton.jit
def _load_paired_rows(ptr, offs_h, units, cols, H, n_cols, stride_r, stride_c, IN_REGISTERS: tl.constexpr):
    """A weight's [BLOCK_H, BLOCK_C] tile whose rows are hidden units (W_ih, W_hhᵀ's rows, fc_Wᵀ), rows in
    tile_io.paired_units order, for a loop that multiplies it every step.

    IN_REGISTERS: loaded in order, then reordered in registers (tile_io.paired_rows); a computed
    tile stays in registers for the whole loop, and wgmma reads its A operand from there instead
    of from shared memory (see weights_in_registers). Otherwise a gather through ``units``: a tile
    straight from a load, which the compiler keeps in shared memory.
    """
    if IN_REGISTERS:
        w = tile_io.paired_rows(_load_tile(ptr, offs_h, cols, H, n_cols, stride_r, stride_c))
    else:
        w = _load_tile(ptr, units, cols, H, n_cols, stride_r, stride_c)
    return w


@triton.jit
def _load_gates(w_hh_ptr, H, BLOCK_H: tl.constexpr, GATES: tl.constexpr, TRANSPOSED: tl.constexpr,
                PAIRED_ORDER: tl.constexpr, IN_REGISTERS: tl.constexpr):
    """The first GATES gate blocks of W_hh (rows k·H … k·H + H - 1 each; GATES = 1: a plain [H, H]
    W_hh) as one [GATES·BLOCK_H, BLOCK_H] tile, row k·BLOCK_H + m gate k's row for the unit of row
    m, or its transpose [BLOCK_H, GATES·BLOCK_H] (TRANSPOSED). Rows and columns both hold hidden
    units: in tile_io.paired_units order with PAIRED_ORDER (over GATES·BLOCK_H it permutes within
    blocks of 16, so within each gate), else in unit order.

    IN_REGISTERS (PAIRED_ORDER only) as _load_paired_rows: loaded in order and reordered in
    registers, where wgmma reads it for the whole loop; otherwise a load through the units' order
    (a gather), which the compiler keeps in shared memory.
    """
    if IN_REGISTERS or not PAIRED_ORDER:
        units = tl.arange(0, BLOCK_H)
    else:
        units = tile_io.paired_units(BLOCK_H)
    if GATES == 1:
        # (One gate: a plain [H, H] tile. Through the general form below the seed's backward took
        # 74 issue slots a step instead of 71, and the LSTM's four-product backward at H = 100
        # spilled 8 B: static report.)
        if TRANSPOSED:
            w = _load_tile(w_hh_ptr, units, units, H, H, 1, H)
        else:
            w = _load_tile(w_hh_ptr, units, units, H, H, H, 1)
    else:
        if IN_REGISTERS or not PAIRED_ORDER:
            stacked = tl.arange(0, GATES * BLOCK_H)
        else:
            stacked = tile_io.paired_units(GATES * BLOCK_H)
        unit = stacked % BLOCK_H
        # (A padded row would point at the next gate's real rows: the mask zeroes it.)
        rows = (stacked // BLOCK_H) * H + unit
        if TRANSPOSED:
            w = tl.load(w_hh_ptr + rows[None, :] * H + units[:, None],
                        mask=(units < H)[:, None] & (unit < H)[None, :], other=0.0)
        else:
            w = tl.load(w_hh_ptr + rows[:, None] * H + units[None, :],
                        mask=(unit < H)[:, None] & (units < H)[None, :], other=0.0)
    if IN_REGISTERS:
        w = tl.trans(tile_io.paired_rows(tl.trans(tile_io.paired_rows(w))))
    return w


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

def _rnn_linear_fwd(
    x_ptr, h0_ptr, lengths_ptr,
    w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, fc_w_ptr, fc_b_ptr,
    w_ih_lo_ptr, w_hh_lo_ptr, fc_w_lo_ptr,
    y_ptr, hn_ptr, hs_ptr,
    B, T, I, H, O,
    stride_xb, stride_xt, stride_xi,
    stride_h0b, stride_h0h,
    BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_B_IH: tl.constexpr, HAS_B_HH: tl.constexpr, HAS_FC_B: tl.constexpr,
    STORE_HN: tl.constexpr, STORE_HS: tl.constexpr,
    RELU: tl.constexpr, MASK_H: tl.constexpr, FAST_TANH: tl.constexpr, PAIRED: tl.constexpr,
    W_HH_IN_REGISTERS: tl.constexpr, W_IH_IN_REGISTERS: tl.constexpr, SPLIT_IN_KERNEL: tl.constexpr,
    PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    pid = tl.program_id(0)
    # Columns are sequences. int64: B·T·I (and B·T·H for hs) may pass 2³¹.
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    offs_i = tl.arange(0, BLOCK_I)
    offs_h = tl.arange(0, BLOCK_H)
    # Row m of every [BLOCK_H, ·] tile holds unit units[m] (see tile_io.paired_units), so that
    # hs is stored two units per access and the weights can be reordered in registers (wgmma).
    # Below 64 (mma.sync; the weights in shared memory) only for bf16/fp16 training: elsewhere the
    # permuted weights' gathered loads cost more than the pairs save (static report, sm_90a, mean
    # issue slots a step over the grid at H = 16 and 32: bf16 training 89 and 85 paired against 94
    # and 92; TF32 inference at H = 16 109 against 104; 3xTF32 517-557 against 505-533).
    PAIRED_ORDER: tl.constexpr = BLOCK_H >= 64 or (STORE_HS and PRECISION == "low")
    if PAIRED_ORDER:
        units = tile_io.paired_units(BLOCK_H)
    else:
        units = offs_h
    offs_o = tl.arange(0, BLOCK_O)
    h_rows_ok = units < H

    # Loop invariants, all loaded before the first step, in registers or in shared memory (see
    # weights_in_registers and _load_paired_rows). A tile computed in the kernel stays in
    # registers, so the host passes the TF32 remainders ready-made (w_*_lo, "tf32x3" only): split
    # here, both halves would take registers (3xTF32 spilled even with the weights in shared memory),
    # except for the small tiles of split_in_kernel.
    # (Reordered in registers only where the rows are paired: see units.)
    W_HH_REG: tl.constexpr = W_HH_IN_REGISTERS and PAIRED_ORDER
    W_IH_REG: tl.constexpr = W_IH_IN_REGISTERS and PAIRED_ORDER
    w_hh = _load_gates(w_hh_ptr, H, BLOCK_H, 1, False, PAIRED_ORDER, W_HH_REG).to(OPERAND_DTYPE)
    w_ih = _load_paired_rows(w_ih_ptr, offs_h, units, offs_i, H, I, I, 1, W_IH_REG).to(OPERAND_DTYPE)
    fc_w = _load_tile(fc_w_ptr, offs_o, offs_h, O, H, H, 1).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3" and SPLIT_IN_KERNEL:
        # Small tiles (see split_in_kernel): both halves fit in registers, and the call needs no
        # split launch. _split_tf32 is the split kernel's own: the same bits.
        w_hh, w_hh_lo = _split_tf32(w_hh)
        w_ih, w_ih_lo = _split_tf32(w_ih)
        fc_w, fc_w_lo = _split_tf32(fc_w)
    elif PRECISION == "tf32x3":
        w_hh_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 1, False, PAIRED_ORDER, W_HH_REG)
        w_ih_lo = _load_paired_rows(w_ih_lo_ptr, offs_h, units, offs_i, H, I, I, 1, W_IH_REG)
        fc_w_lo = _load_tile(fc_w_lo_ptr, offs_o, offs_h, O, H, H, 1)
    else:
        w_hh_lo = w_hh
        w_ih_lo = w_ih
        fc_w_lo = fc_w
    bias = tl.zeros([BLOCK_H], dtype=tl.float32)
    if HAS_B_IH:
        bias += tl.load(b_ih_ptr + units, mask=h_rows_ok, other=0.0).to(tl.float32)
    if HAS_B_HH:
        bias += tl.load(b_hh_ptr + units, mask=h_rows_ok, other=0.0).to(tl.float32)
    bias_tile = tl.zeros([BLOCK_H, BLOCK_B], dtype=tl.float32) + bias[:, None]

    h_mask = h_rows_ok[:, None] & seq_ok[None, :]
    h = _load_state(h0_ptr, seqs, units, stride_h0b, stride_h0h, h_mask, HAS_H0)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0)

    # xᵀ tiles [BLOCK_I, BLOCK_B]. Pointers advance by one step per iteration
    # (64-bit pointer arithmetic), so a time-major x with a huge time stride
    # cannot overflow an int32 index. x_{t+1} is loaded during step t, so the
    # load's latency is not on the recurrence's dependent chain.
    x_mask = (offs_i[:, None] < I) & seq_ok[None, :]
    x_ptrs = x_ptr + seqs[None, :] * stride_xb + offs_i[:, None] * stride_xi
    x_next = tl.load(x_ptrs, mask=x_mask, other=0.0)
    if STORE_HS:
        # h_t goes to hs straight from the MMA's layout, two adjacent units per access (see
        # tile_io.store_pairs): a scalar pointer that moves one step of H per iteration plus
        # loop-invariant offsets of units 2p (lo) and 2p + 1 (hi).
        lo_units = 2 * tl.arange(0, BLOCK_H // 2)
        hi_units = lo_units + 1
        hs_lo = seqs[None, :] * T * H + lo_units[:, None]
        hs_hi = seqs[None, :] * T * H + hi_units[:, None]
        hs_natural = seqs[None, :] * T * H + offs_h[:, None]
        nat_mask = (offs_h < H)[:, None] & seq_ok[None, :]
        lo_mask = (lo_units[:, None] < H) & seq_ok[None, :]
        hi_mask = (hi_units[:, None] < H) & seq_ok[None, :]
        hs_step = hs_ptr
    for t in range(T):
        x_t = x_next
        x_ptrs += stride_xt
        # (t + 1 < T is broadcast to a tensor: the interpreter rejects a Python bool in a mask.)
        x_next = tl.load(x_ptrs, mask=x_mask & (seqs[None, :] * 0 + t + 1 < T), other=0.0)
        # The input projection first: it does not depend on h, so it is not
        # on the chain that waits for the previous step.
        x_op = x_t.to(OPERAND_DTYPE)
        h_op = h.to(OPERAND_DTYPE)
        pre = _mm(w_ih, w_ih_lo, x_op, bias_tile, PRECISION)
        pre = _mm(w_hh, w_hh_lo, h_op, pre, PRECISION)
        h_new = _act(pre, RELU, FAST_TANH)
        if MASK_H:
            h_new = tl.where(h_rows_ok[:, None], h_new, 0.0)
        if HAS_LENGTHS:
            # A finished sequence keeps its last valid state: h_T is then the
            # state at its own last step, as a PackedSequence's h_n is.
            h = tl.where((t < length)[None, :], h_new, h)
        else:
            h = h_new
        if STORE_HS:
            if PRECISION == "tf32x3":
                # Through tl.store, h back in unit order: the three products leave too few
                # registers for the stored tile's addresses (in place, single stores spilled 8-40 B
                # at H <= 32), and a tl.store in the units' order took 2 more barriers and up to
                # 90 more issue slots per step (static report, I = 16, H = 128).
                tl.store(hs_step + hs_natural, _natural_rows(h, PAIRED_ORDER), mask=nat_mask)
            elif PAIRED_ORDER:
                tile_io.store_pairs(hs_step + hs_lo, hs_step + hs_hi, h, lo_mask, hi_mask, PAIRED)
            else:
                tile_io.store(hs_step + hs_natural, h, nat_mask)
            hs_step += H

    if STORE_HN:
        tl.store(hn_ptr + seqs[None, :] * H + units[:, None], h.to(hn_ptr.dtype.element_ty), mask=h_mask)

    # yᵀ = fc_W · hᵀ: [BLOCK_O, BLOCK_H] @ [BLOCK_H, BLOCK_B], in the loop's precision.
    # (h back in unit order, once: fc_W is loaded as it is, not gathered into the units' order.)
    h = _natural_rows(h, PAIRED_ORDER)
    y = _mm(fc_w, fc_w_lo, h.to(OPERAND_DTYPE), tl.zeros([BLOCK_O, BLOCK_B], dtype=tl.float32), PRECISION)
    if HAS_FC_B:
        y += tl.load(fc_b_ptr + offs_o, mask=offs_o < O, other=0.0).to(tl.float32)[:, None]
    y_mask = (offs_o[:, None] < O) & seq_ok[None, :]
    tl.store(y_ptr + seqs[None, :] * O + offs_o[:, None], y.to(y_ptr.dtype.element_ty), mask=y_mask)


# B and T are never specialized: Triton would otherwise compile a new kernel
# for B = 1, T = 1 and multiples of 16. x's strides are specialized only in
# the kernel for x whose batch and time strides are both multiples of 16
# elements: there every row of x starts 16-byte aligned and its loads
# vectorize (one 128-bit load per thread per step instead of eight 16-bit ones
# at I = 64, bf16). The launcher picks the kernel by that test, which for a
# contiguous batch-first x depends on I alone, never on T.
_rnn_linear_fwd_kernel = triton.jit(do_not_specialize=["B", "T"])(_rnn_linear_fwd)
_rnn_linear_fwd_kernel_any_stride = triton.jit(
    do_not_specialize=["B", "T", "stride_xb", "stride_xt"])(_rnn_linear_fwd)


@triton.jit(do_not_specialize=["B", "T"])
def _rnn_linear_bwd_kernel(
    hs_ptr, lengths_ptr, w_hh_ptr, w_hh_lo_ptr, dh_last_ptr,
    g_ptr, dh0_ptr,
    B, T, H,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, RELU: tl.constexpr, MASK_H: tl.constexpr,
    PAIRED: tl.constexpr, W_HH_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    """Reverse-time sweep from dh_T (the launcher's fc_Wᵀ dy + dh_n): g_t = dh_t ⊙ act'(h_t),
    dh_{t-1} = W_hhᵀ g_t.

    Transposed like the forward: dhᵀ is [BLOCK_H, BLOCK_B] and W_hhᵀ the MMA's A.
    hs, g: [B, T, H] fp32 (contiguous); dh_last, dh0: [B, H] fp32 (contiguous).
    """
    pid = tl.program_id(0)
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    # Row m of every [BLOCK_H, ·] tile holds unit units[m] (see tile_io.paired_units).
    units = tile_io.paired_units(BLOCK_H)
    h_mask = (units[:, None] < H) & seq_ok[None, :]

    # A[m, k] = W_hhᵀ[units[m], units[k]] = W_hh[units[k], units[m]].
    w_hh_t = _load_gates(w_hh_ptr, H, BLOCK_H, 1, True, True, W_HH_IN_REGISTERS).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_hh_t_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 1, True, True, W_HH_IN_REGISTERS)
    else:
        w_hh_t_lo = w_hh_t
    # dh_T comes in ready-made (see rnn_linear_bwd_sweep): with a product fc_Wᵀ·dy before the loop,
    # ptxas 12.8 (Triton 3.6's) built the loop's wgmma descriptors for g from a uniform register it
    # never wrote (bf16/fp16, BLOCK_H = 128, 4 warps).
    dh = tl.load(dh_last_ptr + seqs[None, :] * H + units[:, None], mask=h_mask, other=0.0)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0)

    # hs and g are read and written straight from the MMA's layout, two adjacent units per access
    # (see tile_io.load_pairs): scalar pointers at step T-1 that walk back one row of H per step,
    # plus loop-invariant offsets of units 2p (lo) and 2p + 1 (hi). T is widened first: (T - 1)·H
    # in int32 overflows past 2³¹ elements per sequence. The loads are unmasked: columns past B
    # read sequence B-1, padded units (MASK_H) unit 0 (unit u >= H of step T-1 of sequence B-1 is
    # past the end of hs), and the load after the last step reads step 0 again. What those read
    # is discarded: g is zeroed in padded rows, and columns past B are not stored.
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    hi_units = lo_units + 1
    lo_mask = (lo_units[:, None] < H) & seq_ok[None, :]
    hi_mask = (hi_units[:, None] < H) & seq_ok[None, :]
    lo_read, hi_read = _pair_rows_read(lo_units, hi_units, H, MASK_H)
    seq_read = tl.minimum(seqs, B - 1)[None, :] * T * H
    hs_lo, hs_hi = seq_read + lo_read[:, None], seq_read + hi_read[:, None]
    g_lo, g_hi = seqs[None, :] * T * H + lo_units[:, None], seqs[None, :] * T * H + hi_units[:, None]
    hs_step = hs_ptr + (T.to(tl.int64) - 1) * H
    g_step = g_ptr + (T.to(tl.int64) - 1) * H
    if T > 0:
        h_t = tile_io.load_pairs(hs_step + hs_lo, hs_step + hs_hi, PAIRED)
    else:
        h_t = tl.zeros([BLOCK_H, BLOCK_B], dtype=tl.float32)  # no step: hs may not even be allocated
    for i in range(T):
        # h_{t-1} is loaded during step t, off the dependent chain.
        hs_step -= tl.where(i + 1 < T, H, 0)
        h_prev = tile_io.load_pairs(hs_step + hs_lo, hs_step + hs_hi, PAIRED)
        if RELU:
            # As ATen's relu backward (threshold_backward): 0 where h_t <= 0, so
            # a NaN state passes the gradient on, as it does in stock nn.RNN.
            g = tl.where(h_t <= 0, 0.0, dh)
        else:
            g = dh * (1.0 - h_t * h_t)
        if MASK_H:
            # An infinite dh times a padded (zero) weight is NaN in a padded
            # row; g there must stay 0 so it cannot reach real rows.
            g = tl.where((units < H)[:, None], g, 0.0)
        if HAS_LENGTHS:
            # Steps past a sequence's length were identities (h_t = h_{t-1}):
            # no gradient to the pre-activation, dh passes through unchanged.
            valid = ((T - 1 - i) < length)[None, :]
            g = tl.where(valid, g, 0.0)
            dh_prev = _mm(w_hh_t, w_hh_t_lo, g.to(OPERAND_DTYPE), tl.zeros_like(dh), PRECISION)
            dh = tl.where(valid, dh_prev, dh)
        else:
            dh = _mm(w_hh_t, w_hh_t_lo, g.to(OPERAND_DTYPE), tl.zeros_like(dh), PRECISION)
        tile_io.store_pairs(g_step + g_lo, g_step + g_hi, g, lo_mask, hi_mask, PAIRED)
        g_step -= H
        h_t = h_prev

    tl.store(dh0_ptr + seqs[None, :] * H + units[:, None], dh, mask=h_mask)


# ----------------------------------------------------------------------------
# Host side: block sizes, limits and launches. Inputs are assumed already
# checked by fused_rnn.ops (shapes, dtypes, devices); weights must be contiguous.
# ----------------------------------------------------------------------------

# Sequences per program: the MMA's N. 16 keeps a [128, 16] fp32 state at 16
# registers per thread over 4 warps; more columns per program would only
# serialise work that could run on another SM (the time loop is latency-bound).
BLOCK_B = 16

# Largest padded size of I, H and O one program holds (backend="triton"); past
# it the stock path runs. What actually fits in shared memory also depends on
# the dtype and precision: see launch_unsupported_reason.
MAX_BLOCK = 256

# Largest padded size backend="auto" gives the kernel, from the static report
# (benchmarks/results/static_sm90a_triton3.6.json): up to 128 every dtype and
# mode fits in shared memory without spills.
AUTO_MAX_BLOCK = 128

# Shared memory one block may use on sm_90: 227 KiB.
SMEM_LIMIT = 232_448


def cdiv(a, b):
    """ceil(a / b) for ints on the host: triton.cdiv is a constexpr function, ~1.5 µs a call (see block)."""
    return -(-a // b)


def block(n):
    """Padded block size for a dimension of size ``n``: a power of two, at least 16.

    An int by int arithmetic, not triton.next_power_of_2: a constexpr function in
    triton 3.6 and 3.9, ~1.5 µs a call against 0.1 µs on our CI's CPU, and an
    eager forward asks for 9 blocks. A size torch.jit.trace records (a 0-dim
    tensor, which has no bit_length) takes triton's, which computes with it.
    """
    if not isinstance(n, torch.Tensor):
        return max(16, 1 << (n - 1).bit_length())
    return max(16, triton.next_power_of_2(n))


def _interpreted():
    # triton.jit returns an InterpretedFunction when TRITON_INTERPRET=1 was set
    # before this module was imported; that, not the variable now, decides.
    return type(_rnn_linear_fwd_kernel).__name__ == "InterpretedFunction"


INTERPRETED = _interpreted()

# TRITON_INTERPRET=1 set after `import triton` and before this import: triton.language's
# own helpers were defined compiled and ours interpreted, and an interpreted kernel then
# fails inside its helpers ("Cannot call @triton.jit'd outside of the scope of a kernel").
# Decided here, at import, in plain Python: a check run at a call is traced by
# torch.compile, whose Dynamo (torch 2.11 on a GPU machine) cannot take type() of a
# triton kernel.
INTERPRET_SET_LATE = INTERPRETED and type(tl.standard.sigmoid).__name__ != "InterpretedFunction"

# The interpreter runs kernels in numpy on the calling thread with shared
# module state; concurrent interpreted launches from several threads were seen
# to fail intermittently, so they take turns.
_INTERPRETER_LOCK = threading.Lock()

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def precision(dtype, allow_tf32, interpreted=None):
    """The MMA precision for operands of ``dtype``: see _mm.

    fp32 with allow_tf32 takes one TF32 pass (what cuDNN does by default);
    without it three TF32 passes, fp32-level accuracy on tensor cores. The
    interpreter runs the same code (its "TF32" products are exact fp32), except
    for bf16, whose tl.dot it computes wrongly (numpy has no bfloat16; O(1)
    errors seen with triton 3.9): there bf16 operands multiply in IEEE fp32.
    """
    if dtype == torch.float32:
        # LAUNCH_OVERRIDES' PRECISION "ieee" (benchmarks/tune.py): FFMA in place of the three passes,
        # fp32-level too, from unsplit weights.
        return "tf32" if allow_tf32 else "ieee" if LAUNCH_OVERRIDES.get("PRECISION") == "ieee" else "tf32x3"
    if (INTERPRETED if interpreted is None else interpreted) and dtype == torch.bfloat16:
        return "ieee"
    return "low"


# Precisions whose MMA operands are fp32 (see _mm); "low" keeps bf16/fp16 operands.
FP32_OPERANDS = ("ieee", "tf32", "tf32x3")


def _operand_dtype(dtype, prec):
    return tl.float32 if prec in FP32_OPERANDS else _TL_DTYPES[dtype]


def num_warps(prec, block_h):
    """Warps per program, the choice with the fewest issue slots per SM sub-partition in the static report.

    At H = 128, bf16/fp16 take 98 slots per step with 4 warps against 134
    with 8; fp32 on TF32 has twice the wgmma instructions (K = 8 per
    instruction), and with 4 warps its weights pass the register budget
    (weights_in_registers) and their descriptors one warp's uniform registers:
    324 with 4 warps against 196 with 8. Past H = 128 every dtype takes 8.
    """
    if block_h > 128 or (block_h == 128 and prec in ("tf32", "tf32x3")):
        return 8
    return 4


def split_in_kernel(prec, block_i, block_h, block_o):
    """Whether the forward kernel at precision ``prec`` splits its 3xTF32 weights itself, from the fp32
    weights, instead of taking the halves split_tf32_weights makes in a launch of its own.

    A tile split in the kernel is computed, so both halves stay in registers for the whole loop
    (mma.sync reads them from there), and a call makes one launch instead of two (in a CUDA graph
    on the H200 the seed's 3xTF32 forward took 9.45 µs a call with the split launch, TF32's one
    launch 3.64 µs). Only small tiles, padded I, H and O up to 32 (static report,
    sm_90a, triton 3.6, no spills, the seed's forward 401 issue slots a step against 416 (128
    registers against 105, 4 KiB of shared memory against 18), I = H = O = 32 training forward 438
    against 451, 168 registers). Up to 64 they would hold without spills too, in fewer slots
    (forced: I = H = 64 482 against 662), but there the split launch's halves stream from shared
    memory where cuDNN was measured faster (3xTF32, H = 64), and the in-kernel split is unmeasured:
    a GPU run ranks them first. At H = 128 (208 B at I = 16) and at I = 128 (104 B) they spill.
    """
    return prec == "tf32x3" and block_h <= 32 and block_i <= 32 and block_o <= 32


def operand_weights(prec, *weights, wrap=None):
    """What a kernel takes as (W, W_lo) for each weight: ``(w, None)``, or for "tf32x3" products
    ``split_tf32_weights(*weights)``."""
    if prec != "tf32x3":
        return [(w, None) for w in weights]
    return split_tf32_weights(*weights, wrap=wrap)


# 32-bit registers per thread the weights may take when a program holds them in registers for
# the whole loop (see weights_in_registers): the most the static report (sm_90a, triton 3.6) shows
# held without spilling, h256_bf16_forward's W_hh and W_ih (256·256 + 256·64 bf16 over 8 warps).
WEIGHT_REGISTERS = 160


def weights_in_registers(prec, warps, *tiles, hidden_size, budget=WEIGHT_REGISTERS):
    """Whether a kernel holds the weight tiles (rows, cols) it multiplies every step in registers
    for the whole loop, instead of shared memory: all of them or none (a tuple, one per tile).

    In registers (loaded once, reordered there: see _load_paired_rows) wgmma reads its A operand
    from them, and a step issues no shared-memory descriptors for the weights: static report,
    long_bf16_forward 151 -> 98 issue slots per step, long_fp32_forward 270 -> 196,
    long_bf16_backward 157 -> 136. Only with wgmma (rows >= 64; mma.sync's tiles of 16 and 32
    rows took more slots and barriers), at one-pass precisions (3xTF32's two tiles per weight
    spilled), at an even ``hidden_size`` (an odd one takes one address per unit: with the weights
    in registers the LSTM backward at H = 127 spilled in the loop) and within ``budget`` registers
    per thread. All or none: one tile in registers and
    another in shared memory cost more than either (I = H = 128 fp32: 173 slots in shared memory,
    126 in registers, 210-214 split).
    """
    words = sum(rows * cols for rows, cols in tiles) * (2 if prec == "low" else 4) // (4 * 32 * warps)
    chosen = prec in ("low", "tf32") and tiles[0][0] >= 64 and hidden_size % 2 == 0 and words <= budget
    return (chosen,) * len(tiles)


def streamed_bytes(prec, dtype, in_registers, *tiles):
    """Bytes of weights a step reads from shared memory: 0 where the kernel holds its weight tiles
    (rows, cols) in registers (weights_in_registers), else all of them, as the MMA reads them (fp32
    operands for TF32 and 3xTF32, twice for 3xTF32's two parts).

    Shared memory delivers 128 B per cycle per SM, and a program's MMA has BLOCK_B = 16 columns: an
    m64n16k8 TF32 wgmma reads 2 KiB of weights for 8 cycles of tensor work, so such a step is bound
    by the stream, not by the MMA. On the H200 (committed rows at e582b08, B64 T1024 H128) the TF32
    GRU, whose W_hh (192 KiB) streams, took 1.89 ms against the fp16 GRU's 1.04 ms with W_hh in
    registers: 0.83 µs more per step, what 192 KiB at 128 B per cycle takes (1536 cycles, 0.78 µs
    at 1.98 GHz).
    """
    if in_registers:
        return 0
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    return item * copies * sum(rows * cols for rows, cols in tiles)


def set_state(state, given):
    """``state = given`` (same elements, any leading shape), or 0 without one: a layer's result with no step."""
    if given is None:
        state.zero_()
    else:
        state.copy_(given.reshape(state.shape))


def forward_block_h(hidden_size, prec):
    """The forward kernel's padded H: block(H), except that TF32 products pad 32 to 64.

    Below M = 64 the product is mma.sync, whose fp32 operands x_t and h both
    reach it through shared memory: 4 barriers per step. Padded to 64 it is
    wgmma, which reads x_t's tile from shared memory and takes h's through the
    same 2 barriers, in no more issue slots (static report, sm_90a: the seed's
    H = 20 forward 88 -> 81 slots and 4 -> 2 barriers, training forward
    129 -> 112; I = 64, H = 32: 116 -> 102). Everywhere else mma.sync is
    cheaper (bf16, BLOCK_H = 16: up to 2x fewer slots, 2 barriers already;
    3xTF32: more slots and barriers at 64), and the backward sweep keeps
    block(H): it has 2 barriers or fewer either way and 74 slots against 100.
    """
    padded = block(hidden_size)
    return 64 if padded == 32 and prec == "tf32" else padded


# Elements each program of _split_tf32_kernel splits: 8 per thread of its 4 warps (Triton's default),
# so the largest weight, the LSTM's W_hh at H = 256 (4·256·256 elements), takes 256 programs.
SPLIT_BLOCK = 1024


@triton.jit
def _split_tf32_part(w_ptr, hi_ptr, lo_ptr, offs, n):
    mask = offs < n
    hi, lo = _split_tf32(tl.load(w_ptr + offs, mask=mask, other=0.0))
    tl.store(hi_ptr + offs, hi, mask=mask)
    tl.store(lo_ptr + offs, lo, mask=mask)


@triton.jit
def _split_tf32_kernel(w0_ptr, w1_ptr, w2_ptr, hi0_ptr, hi1_ptr, hi2_ptr, lo0_ptr, lo1_ptr, lo2_ptr, n0, n1, n2,
                       BLOCK: tl.constexpr):
    """Up to three contiguous fp32 weights (axis 1 of the grid picks one) into their hi and lo (_split_tf32)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    part = tl.program_id(1)
    if part == 0:
        _split_tf32_part(w0_ptr, hi0_ptr, lo0_ptr, offs, n0)
    elif part == 1:
        _split_tf32_part(w1_ptr, hi1_ptr, lo1_ptr, offs, n1)
    else:
        _split_tf32_part(w2_ptr, hi2_ptr, lo2_ptr, offs, n2)


def split_tf32_weights(*weights, wrap=None):
    """[(hi, lo), ...]: each fp32 weight (at most 3) split for "tf32x3" products (_split_tf32), by
    one launch for all of them.

    A kernel of its own, before the recurrence's, so that both tiles reach that kernel through
    loads: a weight split inside it would sit in registers instead of shared memory. One launch
    for every weight of a call, where torch's elementwise ops took 14 per weight.
    """
    if not 1 <= len(weights) <= 3:
        raise ValueError(f"split_tf32_weights takes 1 to 3 weights, got {len(weights)}")
    weights = [w.contiguous() for w in weights]
    his = [new_empty(w.shape, device=w.device, dtype=torch.float32) for w in weights]
    los = [new_empty(w.shape, device=w.device, dtype=torch.float32) for w in weights]
    sizes = [w.numel() for w in weights]
    if max(sizes) > 0:
        spare = 3 - len(weights)    # unused slots: the first weight's pointers with nothing to split
        _launch(_split_tf32_kernel, (cdiv(max(sizes), SPLIT_BLOCK), len(weights)), wrap,
                *weights, *weights[:1] * spare, *his, *his[:1] * spare, *los, *los[:1] * spare,
                *sizes, *[0] * spare, BLOCK=SPLIT_BLOCK)
    return list(zip(his, los))


def smem_bytes(dtype, block_i, block_h, block_o, allow_tf32, *, store_hs=False, backward=False):
    """Shared memory one program needs, in bytes: what decides whether a configuration launches.

    The weight tiles stay resident for the whole loop (twice, hi and lo, for
    "tf32x3"); the step's MMA operands (x and h, or g) reuse one region.
    Where weights_in_registers holds W_hh and W_ih in registers triton 3.6
    allocates less (long_bf16_forward: 10240 B against 59392), but their
    one-time reorder may still stage them (fp32, H = 128: 64 KiB) and triton
    3.9 keeps them in shared memory: the figure counts them either way.
    The stored states (hs) and the backward's g need none: they move through
    tile_io (or, under 3xTF32, a store that reuses that region), so
    ``store_hs`` changes nothing. "tf32x3" has two operand tiles per product (b_hi, b_lo),
    which Triton stages differently for mma.sync and wgmma. Checked against
    every row of the static report (tests/test_static_report.py): it never says
    a configuration fits that does not, refuses only a few 3xTF32 ones that
    just fit, and is never more than 10% below Triton's own figure. Always the
    GPU's figure, also under the interpreter, so that what launches does not
    depend on where it is tested.
    """
    prec = precision(dtype, allow_tf32, interpreted=False)
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    if backward:
        weights = block_h * block_h
        operand_rows = (block_h,)
    else:
        weights = block_h * block_h + block_h * block_i + block_o * block_h
        operand_rows = (block_h, block_i)
    if prec != "tf32x3":
        operands = sum(operand_rows)
    elif block_h < 64:
        operands = 2 * sum(operand_rows)  # mma.sync stages b_hi and b_lo apart
    else:
        operands = 2 * max(operand_rows)  # wgmma: b_hi and b_lo of the larger operand live at once
    return item * copies * weights + item * BLOCK_B * operands + 1024


def head_smem_bytes(prec, dtype, block_h, block_o):
    """Shared memory a layer kernel's fused head (_fused_head) may add, in bytes: its fc_W tile
    [block_o, block_h], twice for "tf32x3", counted as if staged beside everything the time loop
    holds (its h operand is the loop's own staged tile). 0 without a head (block_o 0)."""
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    return item * (2 if prec == "tf32x3" else 1) * block_o * block_h


def head_unsupported_reason(layer_kernels, cell, dtype, hidden_size, output_size, allow_tf32):
    """Why a cell's layer kernel module (kernels/elman.py, gru.py, lstm.py) cannot fuse a head of
    ``output_size`` outputs after its forward's loop, or None if it can: the module fuses heads
    (FUSED_HEAD, the GRU and LSTM), of up to MAX_BLOCK outputs, within shared memory (its smem_bytes
    with the head's block_o)."""
    if not getattr(layer_kernels, "FUSED_HEAD", False):
        return f"the {cell!r} layer kernel fuses no head (fused_rnn.rnn_linear is the Elman layer with one)"
    if block(output_size) > MAX_BLOCK:
        return f"the {cell!r} layer kernel fuses heads of up to {MAX_BLOCK} outputs, got output_size={output_size}"
    need = layer_kernels.smem_bytes(dtype, block(hidden_size), allow_tf32, block_o=block(output_size))
    if need > SMEM_LIMIT:
        return (f"the {cell!r} layer kernel with a head of {output_size} outputs at hidden_size={hidden_size} in "
                f"{str(dtype).removeprefix('torch.')} needs {need} B of shared memory per block, more than the "
                f"{SMEM_LIMIT} B a Hopper block may use")
    return None


def head_outputs(head, xp, store_out):
    """(fc_w, fc_b, y) for a layer forward given ``head`` (fc_w [O, H], fc_b [O] or None): y [B, O] in xp's
    dtype, for the kernel to write; (None, None, None) without a head."""
    if head is None:
        return None, None, None
    if store_out:
        raise ValueError("a layer forward with a fused head writes y, not out: store_out must be False")
    fc_w, fc_b = head
    return fc_w, fc_b, new_empty((xp.shape[0], fc_w.shape[0]), device=xp.device, dtype=xp.dtype)


def head_of_state(head, h_n, out):
    """A layer forward's first result where no step ran (T = 0): y of h_n (= h0) with a head, else ``out``."""
    if head is None:
        return out
    fc_w, fc_b = head
    return F.linear(h_n.float(), fc_w.float(), None if fc_b is None else fc_b.float()).to(h_n.dtype)


def launch_unsupported_reason(dtype, input_size, hidden_size, output_size, allow_tf32, needs_grad):
    """Why the kernels cannot launch for these sizes (a sentence), or None if they can."""
    for name, n in (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size)):
        if block(n) > MAX_BLOCK:
            return f"the Triton kernel holds sizes up to {MAX_BLOCK}, got {name}={n}"
    block_i, block_o = block(input_size), block(output_size)
    prec = precision(dtype, allow_tf32, interpreted=False)
    need = smem_bytes(dtype, block_i, forward_block_h(hidden_size, prec), block_o, allow_tf32, store_hs=needs_grad)
    if needs_grad:
        need = max(need, smem_bytes(dtype, block_i, block(hidden_size), block_o, allow_tf32, backward=True))
    if need > SMEM_LIMIT:
        return (f"input_size={input_size}, hidden_size={hidden_size}, output_size={output_size} in "
                f"{str(dtype).removeprefix('torch.')} with {precision(dtype, allow_tf32, interpreted=False)} "
                f"products need {need} B of shared memory per block, more than the {SMEM_LIMIT} B a Hopper "
                f"block may use")
    return None


def _forward_weights_in_registers(prec, block_h, block_i, hidden_size):
    """(W_HH_IN_REGISTERS, W_IH_IN_REGISTERS) of the forward kernel (block_h: forward_block_h)."""
    return weights_in_registers(prec, num_warps(prec, block_h), (block_h, block_h), (block_h, block_i),
                                hidden_size=hidden_size)


def _backward_weights_in_registers(prec, block_h, hidden_size):
    """W_HH_IN_REGISTERS of the backward sweep (block_h: block(H))."""
    return weights_in_registers(prec, num_warps(prec, block_h), (block_h, block_h), hidden_size=hidden_size)[0]


def streamed_weight_bytes(dtype, input_size, hidden_size, output_size, allow_tf32, needs_grad):
    """Bytes of weights a step of the kernels this call launches reads from shared memory, the most of
    its forward and (``needs_grad``) backward sweep (see streamed_bytes): W_hh and W_ih wherever they
    pass the register budget (3xTF32, except the forward's small tiles that split_in_kernel splits into
    registers; TF32 at I = 256, H = 128) or H is odd. fc_W is read once, after the loop, but its padded
    size decides split_in_kernel."""
    prec = precision(dtype, allow_tf32, interpreted=False)
    block_h, block_i = forward_block_h(hidden_size, prec), block(input_size)
    held = (_forward_weights_in_registers(prec, block_h, block_i, hidden_size)[0]
            or split_in_kernel(prec, block_i, block_h, block(output_size)))
    streamed = streamed_bytes(prec, dtype, held, (block_h, block_h), (block_h, block_i))
    if needs_grad:
        block_h = block(hidden_size)
        held = _backward_weights_in_registers(prec, block_h, hidden_size)
        streamed = max(streamed, streamed_bytes(prec, dtype, held, (block_h, block_h)))
    return streamed


def auto_takes(dtype, input_size, hidden_size, output_size, allow_tf32, needs_grad):
    """Whether backend="auto" runs the kernels: padded sizes up to AUTO_MAX_BLOCK that launch.

    Below that line the static report shows no configuration that spills.
    """
    if any(block(n) > AUTO_MAX_BLOCK for n in (input_size, hidden_size, output_size)):
        return False
    return launch_unsupported_reason(dtype, input_size, hidden_size, output_size, allow_tf32, needs_grad) is None


# Launch parameters that replace the launchers' own choices in every recurrence kernel's launch,
# so that benchmarks/tune.py can time them against each other on a GPU, e.g. {"num_warps": 8,
# "BLOCK_B": 32}, or {"PRECISION": "ieee"} for fp32 without TF32. Empty in normal use. The
# launchers' choices come from the static report's issue slots, but the first GPU run (H200)
# found the bf16 step at H = 128 ~5x slower than its issue-slot floor: latency, which only a GPU
# can rank.
LAUNCH_OVERRIDES = {}


def _overridden(grid, kwargs):
    """(grid, kwargs) with LAUNCH_OVERRIDES applied. A BLOCK_B override must be a multiple of the
    launcher's; the grid's first axis tiles the batch and shrinks by the same factor
    (ceil(ceil(B / 16) / 2) = ceil(B / 32)). (A PRECISION override acts in precision().)"""
    block_b = LAUNCH_OVERRIDES.get("BLOCK_B", kwargs["BLOCK_B"])
    if block_b % kwargs["BLOCK_B"]:
        raise ValueError(f"LAUNCH_OVERRIDES['BLOCK_B'] must be a multiple of {kwargs['BLOCK_B']}, got {block_b}")
    grid = (cdiv(grid[0], block_b // kwargs["BLOCK_B"]), *grid[1:])
    return grid, dict(kwargs, BLOCK_B=block_b, num_warps=LAUNCH_OVERRIDES.get("num_warps", kwargs["num_warps"]))


def _launch(kernel, grid, wrap, *args, **kwargs):
    if LAUNCH_OVERRIDES and "BLOCK_B" in kwargs:
        grid, kwargs = _overridden(grid, kwargs)
    if any(isinstance(a, FakeTensor) for a in args):
        # FakeTensorMode runs a registered op's body for its output shapes: nothing to launch, as
        # wrap_triton's fake does not launch (the interpreter would read the fakes' storage).
        return
    kernel = kernel if wrap is None else wrap(kernel)
    if INTERPRETED:
        with _INTERPRETER_LOCK:
            kernel[grid](*args, **kwargs)
    else:
        kernel[grid](*args, **kwargs)


def rnn_linear_fwd(x, w_ih, w_hh, b_ih, b_hh, fc_w, fc_b, h0=None, lengths=None, *,
                   relu=False, allow_tf32=False, store_hn=False, store_hs=False, wrap=None):
    """Launch the forward kernel.

    x: [B, T, I] (any strides); h0: [B, H] or None; lengths: [B] int64 or None;
    w_ih: [H, I], w_hh: [H, H], b_ih/b_hh: [H] or None, fc_w: [O, H], fc_b: [O] or None.
    Returns (y [B, O] in x.dtype, h_n [B, H] in x.dtype or None, hs [B, T, H] fp32 or None).
    ``wrap``: torch.library.wrap_triton inside a triton_op (so torch.compile sees the launch).
    """
    B, T, I = x.shape
    H, O = w_hh.shape[0], fc_w.shape[0]
    y = new_empty((B, O), device=x.device, dtype=x.dtype)
    hn = new_empty((B, H), device=x.device, dtype=x.dtype) if store_hn else None
    hs = new_empty((B, T, H), device=x.device, dtype=torch.float32) if store_hs else None
    prec = precision(x.dtype, allow_tf32)
    block_i, block_h, block_o = block(I), forward_block_h(H, prec), block(O)
    split_here = split_in_kernel(prec, block_i, block_h, block_o)
    if split_here:
        w_ih_lo = w_hh_lo = fc_w_lo = None
    else:
        (w_ih, w_ih_lo), (w_hh, w_hh_lo), (fc_w, fc_w_lo) = operand_weights(prec, w_ih, w_hh, fc_w, wrap=wrap)
    aligned = x.stride(0) % 16 == 0 and x.stride(1) % 16 == 0
    warps = num_warps(prec, block_h)
    w_hh_in_registers, w_ih_in_registers = _forward_weights_in_registers(prec, block_h, block_i, H)
    _launch(
        _rnn_linear_fwd_kernel if aligned else _rnn_linear_fwd_kernel_any_stride,
        (cdiv(B, BLOCK_B),), wrap,
        x, h0, lengths,
        w_ih, w_hh, b_ih, b_hh, fc_w, fc_b,
        w_ih_lo, w_hh_lo, fc_w_lo,
        y, hn, hs,
        B, T, I, H, O,
        x.stride(0), x.stride(1), x.stride(2),
        h0.stride(0) if h0 is not None else 0, h0.stride(1) if h0 is not None else 0,
        BLOCK_B=BLOCK_B, BLOCK_I=block_i, BLOCK_H=block_h, BLOCK_O=block_o,
        HAS_H0=h0 is not None, HAS_LENGTHS=lengths is not None,
        HAS_B_IH=b_ih is not None, HAS_B_HH=b_hh is not None, HAS_FC_B=fc_b is not None,
        STORE_HN=store_hn, STORE_HS=store_hs, RELU=relu, MASK_H=H != block_h,
        FAST_TANH=not INTERPRETED and prec in ("tf32", "low"), PAIRED=H % 2 == 0,
        W_HH_IN_REGISTERS=w_hh_in_registers, W_IH_IN_REGISTERS=w_ih_in_registers, SPLIT_IN_KERNEL=split_here,
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(x.dtype, prec),
        num_warps=warps,
    )
    return y, hn, hs


def rnn_linear_bwd_sweep(hs, w_hh, fc_w, dy, dhn=None, lengths=None, *, relu=False, allow_tf32=False,
                         wrap=None):
    """Launch the reverse-time sweep.

    hs: [B, T, H] fp32 from the forward; dy: [B, O]; dhn: [B, H] or None.
    Returns (g [B, T, H] fp32, dh0 [B, H] fp32), g_t being ∂L/∂(pre-activation at t).

    The sweep starts from dh_T = dy·fc_W + dh_n, one fp32 product here (as the backward's other
    products in fused_rnn/ops.py, it follows torch's matmul precision), not in the kernel: see
    _rnn_linear_bwd_kernel.
    """
    B, T, H = hs.shape
    g = new_empty((B, T, H), device=hs.device, dtype=torch.float32)
    dh0 = new_empty((B, H), device=hs.device, dtype=torch.float32)
    dh_last = dy.float() @ fc_w.float()
    if dhn is not None:
        dh_last = dh_last + dhn.float()
    block_h = block(H)
    prec = precision(w_hh.dtype, allow_tf32)
    warps = num_warps(prec, block_h)
    (w_hh, w_hh_lo), = operand_weights(prec, w_hh, wrap=wrap)
    _launch(
        _rnn_linear_bwd_kernel, (cdiv(B, BLOCK_B),), wrap,
        hs, lengths, w_hh, w_hh_lo, dh_last.contiguous(),
        g, dh0,
        B, T, H,
        BLOCK_B=BLOCK_B, BLOCK_H=block_h,
        HAS_LENGTHS=lengths is not None, RELU=relu, MASK_H=H != block_h,
        PAIRED=H % 2 == 0 and tile_io.pairs_fit(hs),
        W_HH_IN_REGISTERS=_backward_weights_in_registers(prec, block_h, H),
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(w_hh.dtype, prec),
        num_warps=warps,
    )
    return g, dh0
