"""Triton kernels of the layer contract (fused_rnn/cells/__init__.py) for the Elman cell.

Forward, one program per tile of ``BLOCK_B`` sequences (and per direction,
grid axis 1, for both directions of a bidirectional layer in one launch),
from the caller's input projection ``xp = x W_ihᵀ + b_ih``::

    h_t = act(xp_t + W_hh h_{t-1} + b_hh)         act = tanh or relu

Transposed as in kernels.rnn_linear: the state tile is ``hᵀ`` ``[BLOCK_H,
BLOCK_B]``, H the MMA's M dimension (wgmma at H ≥ 64 with 4 warps), W_hh
loaded once before the loop into registers where it fits (wgmma's A operand
from registers, see rnn_linear.weights_in_registers), else into shared memory.
The step's only product is ``W_hh · hᵀ``; ``xpᵀ_t`` is loaded one step ahead,
off the dependent chain. xp, out, hs, dout and g move between global memory
and the accumulator's registers directly, two adjacent units per access
(kernels/tile_io.py; every tile's rows in tile_io.paired_units order): only the
step's operand tile (and W_hh where it is not in registers) is in shared memory.

Processing step s of sequence b is at position ``p = s`` (forward) or
``p = len_b - 1 - s`` (reverse), for s < len_b. The loop runs the tile's
longest length; past its own length a sequence's state is held and nothing is
written (its unmasked loads read a valid position, and the value is
discarded). The padding positions len_b … T-1 are written with 0 after the
loop, so every position of ``out`` and ``hs`` is written exactly once.

Backward walks the processing steps in reverse::

    dh += dout_p;  g_p = dh ⊙ act'(h_p);  dh = W_hhᵀ g_p

and writes ``g = ∂L/∂xp = ∂L/∂gh``; the weight gradients are GEMMs over all
steps done by the caller.
"""

import torch
import triton
import triton.language as tl

from . import rnn_linear
from . import tile_io
from .rnn_linear import (BLOCK_B, INTERPRETED, MAX_BLOCK, SMEM_LIMIT, FP32_OPERANDS, _act, _launch, _load_gates, cdiv,
                         _load_state, _pair_rows_read, _mm, _operand_dtype, block, num_warps, precision,
                         operand_weights, set_state)

CELLS = ("rnn_tanh", "rnn_relu")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------

@triton.jit
def _valid(s, T, length, zeros_b, HAS_LENGTHS: tl.constexpr):
    """[BLOCK_B]: whether processing step s is a real step of each sequence (s < len_b, or s < T).

    ``zeros_b`` (int64 [BLOCK_B]) broadcasts s to a tensor: the interpreter
    rejects a Python bool in a mask.
    """
    if HAS_LENGTHS:
        valid = zeros_b + s < length
    else:
        valid = zeros_b + s < T
    return valid


@triton.jit
def _position(s, T, length, HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr):
    """The time position of processing step s, meaningful where _valid: s (forward), len_b - 1 - s
    or T - 1 - s (reverse). Computed once, for the first step; the loop then moves it by one
    position per step.

    [BLOCK_B] int64 where it differs between sequences (reverse with lengths), else an int64 scalar
    shared by the tile's columns. The loop's addresses are then a pointer moved by one scalar per
    step plus loop-invariant offsets, one 64-bit add per access (static, sm_90a, bf16, H = 128,
    against a position per column multiplied out per access: 171 -> 159 forward loop instructions
    with the output, 198 -> 191 training forward, 235 -> 206 backward).
    """
    if REVERSE:
        if HAS_LENGTHS:
            pos = length - 1 - s
        else:
            pos = (T - 1 - s).to(tl.int64)
    else:
        pos = (T * 0 + s).to(tl.int64)
    return pos


@triton.jit
def _steps(lengths_ptr, length, seq_ok, pid, B, T, BLOCK_B: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """(steps, first_padding): the tile's longest length (steps past it are identities for every
    sequence, so the loop stops there), and its shortest (padding positions start there).

    The longest is a maximum of scalar loads, not tl.max(length): ptxas sees it
    as uniform across the block, so the loop keeps the wgmma descriptors in
    uniform registers (a reduction's result made the bf16 H = 128 backward
    take 411 instructions per step instead of 350, 252 registers instead of 202).
    """
    if HAS_LENGTHS:
        steps = 0
        for j in tl.static_range(BLOCK_B):
            seq = pid * BLOCK_B + j
            steps = tl.maximum(steps, tl.load(lengths_ptr + seq, mask=seq < B, other=0).to(tl.int32))
        first_padding = tl.min(tl.where(seq_ok, length, T)).to(tl.int32)
    else:
        steps = T
        first_padding = T
    return steps, first_padding


@triton.jit
def _zero_padding(ptr, offs, length, mask, first_padding, T, row, zeros_b):
    """Write 0 at positions p >= len_b (``offs``: the tile's offsets at p = 0; ``row``: elements per position)."""
    zeros = tl.zeros(offs.shape, dtype=ptr.dtype.element_ty)
    for p in range(first_padding, T):
        p_b = zeros_b + p  # int64: p·row may pass 2³¹
        tl.store(ptr + offs + p_b[None, :] * row, zeros, mask=mask & (p_b >= length)[None, :])


@triton.jit
def _load_position(pos, T, H, hs_ptr, hs_lo, hs_hi, dout_ptr, dout_lo, dout_hi, stride_dt,
                   HAS_DOUT: tl.constexpr, PAIRED: tl.constexpr, PAIRED_DOUT: tl.constexpr):
    """What the backward reads for one step, at position ``pos`` (clamped into [0, T): a step with
    nothing to read reads a valid position and discards it): h and dout (0.0 without HAS_DOUT), fp32.
    ``hs_lo`` … ``dout_hi``: the [·, BLOCK_B] offsets of position 0 from ``hs_ptr`` and ``dout_ptr``
    (see _position)."""
    pos_in = tl.minimum(tl.maximum(pos, 0), T - 1)
    hs_at = hs_ptr + pos_in * H
    h = tile_io.load_pairs(hs_at + hs_lo, hs_at + hs_hi, PAIRED)
    if HAS_DOUT:
        dout_at = dout_ptr + pos_in * stride_dt
        dout = tile_io.load_pairs(dout_at + dout_lo, dout_at + dout_hi, PAIRED_DOUT)
    else:
        dout = 0.0
    return h, dout


@triton.jit
def _direction(length, zeros_b, first_step, T, DIRECTIONS: tl.constexpr, HAS_LENGTHS: tl.constexpr,
               REVERSE: tl.constexpr):
    """(d, d64, sign, pos): the direction this program runs (grid axis 1 when DIRECTIONS = 2: 0
    forward, 1 reverse; d64 the same in int64, for offsets past 2³¹), the way positions move per
    processing step (+1 forward, -1 reverse) and the position of processing step ``first_step``."""
    if DIRECTIONS == 2:
        d = tl.program_id(1)
        d64 = d.to(tl.int64)
        sign = 1 - 2 * d
        pos = tl.where(d == 1, _position(first_step, T, length, HAS_LENGTHS, True),
                       _position(first_step, T, length, HAS_LENGTHS, False))
    else:
        d = 0
        d64 = 0
        if REVERSE:
            sign = -1
        else:
            sign = 1
        pos = _position(first_step, T, length, HAS_LENGTHS, REVERSE)
    return d, d64, sign, pos


# ----------------------------------------------------------------------------
# Kernels. With DIRECTIONS = 2, program (i, d) runs direction d of a
# bidirectional layer: xp and out hold both directions side by side
# ([B, T, 2·H], d's at columns d·H …), w_hh, b_hh, h0, h_n, hs, dh_n, dh0 stack
# them in a leading dimension of 2. With DIRECTIONS = 1 every d-offset is 0.
# ----------------------------------------------------------------------------

def _elman_fwd(
    xp_ptr, h0_ptr, lengths_ptr, w_hh_ptr, w_hh_lo_ptr, b_hh_ptr,
    out_ptr, hn_ptr, hs_ptr,
    B, T, H,
    stride_xb, stride_xt, stride_xh, stride_xd,
    stride_h0d, stride_h0b, stride_h0h,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, DIRECTIONS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_B_HH: tl.constexpr,
    STORE_OUT: tl.constexpr, STORE_HS: tl.constexpr, REVERSE: tl.constexpr,
    RELU: tl.constexpr, MASK_H: tl.constexpr, FAST_TANH: tl.constexpr, PAIRED: tl.constexpr,
    PAIRED_XP: tl.constexpr, W_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    pid = tl.program_id(0)
    # Columns are sequences. int64: B·T·H may pass 2³¹.
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    zeros_b = tl.zeros([BLOCK_B], dtype=tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    # Row m of every [BLOCK_H, ·] tile holds unit units[m]: tile_io.paired_units.
    units = tile_io.paired_units(BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0)
    else:
        length = zeros_b
    d, d64, sign, pos = _direction(length, zeros_b, 0, T, DIRECTIONS, HAS_LENGTHS, REVERSE)

    # Loop invariants, loaded before the first step (see rnn_linear._load_gates).
    w_hh = _load_gates(w_hh_ptr + d * H * H, H, BLOCK_H, 1, False, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_hh_lo = _load_gates(w_hh_lo_ptr + d * H * H, H, BLOCK_H, 1, False, True, W_IN_REGISTERS)
    else:
        w_hh_lo = w_hh
    if HAS_B_HH:
        bias_tile = tl.zeros([BLOCK_H, BLOCK_B], dtype=tl.float32) + \
            tl.load(b_hh_ptr + d * H + units, mask=h_rows_ok, other=0.0).to(tl.float32)[:, None]

    h = _load_state(h0_ptr, seqs, units, stride_h0b, stride_h0h, h_mask, HAS_H0, d * stride_h0d)

    # xpᵀ tiles [BLOCK_H, BLOCK_B] through xp's own strides (a time-major caller passes a transposed
    # view), read and written in the MMA's layout, two adjacent units per access where the strides
    # allow (tile_io.load_pairs; PAIRED_XP): per step, one offset per column (its position) plus
    # loop-invariant offsets of units 2p (lo) and 2p + 1 (hi). The loads are unmasked, so every
    # address is kept valid: columns past B read sequence B-1, padded units (MASK_H) unit 0, and a
    # position outside [0, T) (a step past a length, or the prefetch after the last step) position
    # 0 or T-1. What those read is discarded: h keeps its value where a step is not valid, out and
    # hs are not written there, padded rows are zeroed, so an inf or NaN at a padding position
    # cannot reach h.
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    hi_units = lo_units + 1
    lo_read, hi_read = _pair_rows_read(lo_units, hi_units, H, MASK_H)
    xp_seqs = tl.minimum(seqs, B - 1) * stride_xb
    xp_lo = d * stride_xd + (lo_read * stride_xh)[:, None] + xp_seqs[None, :]
    xp_hi = d * stride_xd + (hi_read * stride_xh)[:, None] + xp_seqs[None, :]
    # out: [B, T, DIRECTIONS·H] contiguous; hs: [DIRECTIONS, B, T, H] fp32 contiguous; both written
    # two units per access (PAIRED: H even).
    lo_mask = (lo_units < H)[:, None] & seq_ok[None, :]
    hi_mask = (hi_units < H)[:, None] & seq_ok[None, :]
    out_seqs = seqs[None, :] * T * (DIRECTIONS * H) + d * H
    out_lo, out_hi = out_seqs + lo_units[:, None], out_seqs + hi_units[:, None]
    if DIRECTIONS == 2:
        hs_seqs = d64 * B * T * H + seqs[None, :] * T * H
        hs_lo, hs_hi = hs_seqs + lo_units[:, None], hs_seqs + hi_units[:, None]
    else:
        hs_lo, hs_hi = out_lo, out_hi
    steps, first_padding = _steps(lengths_ptr, length, seq_ok, pid, B, T, BLOCK_B, HAS_LENGTHS)
    valid_next = _valid(0, T, length, zeros_b, HAS_LENGTHS)
    pos_next = pos
    xp_at = xp_ptr + tl.minimum(tl.maximum(pos, 0), T - 1) * stride_xt
    xp_next = tile_io.load_pairs(xp_at + xp_lo, xp_at + xp_hi, PAIRED_XP)
    for s in range(steps):
        xp_t = xp_next
        valid = valid_next
        pos = pos_next
        # xp of step s+1, loaded during step s.
        valid_next = _valid(s + 1, T, length, zeros_b, HAS_LENGTHS)
        pos_next = pos + sign
        xp_at = xp_ptr + tl.minimum(tl.maximum(pos_next, 0), T - 1) * stride_xt
        xp_next = tile_io.load_pairs(xp_at + xp_lo, xp_at + xp_hi, PAIRED_XP)
        acc = xp_t
        if HAS_B_HH:
            acc += bias_tile
        pre = _mm(w_hh, w_hh_lo, h.to(OPERAND_DTYPE), acc, PRECISION)
        h_new = _act(pre, RELU, FAST_TANH)
        if MASK_H:
            # inf in xp or h0 times a padded (zero) weight is NaN in a padded
            # row, which W_hh would carry into real rows next step.
            h_new = tl.where(h_rows_ok[:, None], h_new, 0.0)
        if HAS_LENGTHS:
            # A finished sequence keeps its last state (h_n as a PackedSequence's).
            h = tl.where(valid[None, :], h_new, h)
            y_lo, y_hi = lo_mask & valid[None, :], hi_mask & valid[None, :]
        else:
            h = h_new
            y_lo, y_hi = lo_mask, hi_mask
        if STORE_OUT:
            out_at = out_ptr + pos * (DIRECTIONS * H)
            tile_io.store_pairs(out_at + out_lo, out_at + out_hi, h_new, y_lo, y_hi, PAIRED)
        if STORE_HS:
            hs_at = hs_ptr + pos * H
            tile_io.store_pairs(hs_at + hs_lo, hs_at + hs_hi, h_new, y_lo, y_hi, PAIRED)

    hn_offs = d64 * B * H + seqs[None, :] * H + units[:, None]
    tl.store(hn_ptr + hn_offs, h.to(hn_ptr.dtype.element_ty), mask=h_mask)
    if HAS_LENGTHS:
        # (Natural unit order: these tiles are written from a load's layout, off the loop.)
        offs_mask = (offs_h < H)[:, None] & seq_ok[None, :]
        out_base = seqs[None, :] * T * (DIRECTIONS * H) + d * H + offs_h[:, None]
        if DIRECTIONS == 2:
            hs_base = d64 * B * T * H + seqs[None, :] * T * H + offs_h[:, None]
        # Padding positions, off the time loop: exactly 0, as pad_packed_sequence gives.
        if STORE_OUT:
            _zero_padding(out_ptr, out_base, length, offs_mask, first_padding, T, DIRECTIONS * H, zeros_b)
        if STORE_HS:
            if DIRECTIONS == 2:
                _zero_padding(hs_ptr, hs_base, length, offs_mask, first_padding, T, H, zeros_b)
            else:
                _zero_padding(hs_ptr, out_base, length, offs_mask, first_padding, T, H, zeros_b)


# B and T are never specialized (Triton would compile anew for B = 1, T = 1 and
# multiples of 16). xp's batch and time strides are specialized only in the
# kernel for strides that are multiples of 16 elements (16-byte aligned rows,
# vectorized loads); elsewhere, e.g. a contiguous xp with H = 20 whose batch
# stride T·H is a multiple of 16 for some T only, they are not, so T never
# recompiles.
_elman_fwd_kernel = triton.jit(do_not_specialize=["B", "T"])(_elman_fwd)
_elman_fwd_kernel_any_stride = triton.jit(do_not_specialize=["B", "T", "stride_xb", "stride_xt"])(_elman_fwd)


def _elman_bwd(
    hs_ptr, lengths_ptr, w_hh_ptr, w_hh_lo_ptr, dout_ptr, dhn_ptr,
    g_ptr, dh0_ptr,
    B, T, H,
    stride_db, stride_dt, stride_dh, stride_dd,
    stride_nd, stride_nb, stride_nh,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, DIRECTIONS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_DOUT: tl.constexpr, HAS_DHN: tl.constexpr, REVERSE: tl.constexpr,
    RELU: tl.constexpr, MASK_H: tl.constexpr, PAIRED: tl.constexpr, PAIRED_DOUT: tl.constexpr,
    W_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    """hs: [DIRECTIONS, B, T, H] fp32; g: [B, T, DIRECTIONS·H] fp32; dout: [B, T, DIRECTIONS·H] any
    strides; dhn: [DIRECTIONS, B, H]; dh0: [DIRECTIONS, B, H] fp32 (the leading dimension absent for 1).

    Transposed like the forward: dhᵀ [BLOCK_H, BLOCK_B], W_hhᵀ the MMA's A.
    """
    pid = tl.program_id(0)
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    zeros_b = tl.zeros([BLOCK_B], dtype=tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    # Row m of every [BLOCK_H, ·] tile holds unit units[m]: tile_io.paired_units.
    units = tile_io.paired_units(BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0)
    else:
        length = zeros_b
    steps, first_padding = _steps(lengths_ptr, length, seq_ok, pid, B, T, BLOCK_B, HAS_LENGTHS)
    # Pointers start at the last step's position and move back one processing
    # step at a time: -1 position forward, +1 reverse.
    d, d64, sign, pos = _direction(length, zeros_b, steps - 1, T, DIRECTIONS, HAS_LENGTHS, REVERSE)

    # W_hhᵀ[k, j] = W_hh[j, k].
    w_hh_t = _load_gates(w_hh_ptr + d * H * H, H, BLOCK_H, 1, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_hh_t_lo = _load_gates(w_hh_lo_ptr + d * H * H, H, BLOCK_H, 1, True, True, W_IN_REGISTERS)
    else:
        w_hh_t_lo = w_hh_t
    dh = _load_state(dhn_ptr, seqs, units, stride_nb, stride_nh, h_mask, HAS_DHN, d * stride_nd)

    # hs: [DIRECTIONS, B, T, H]; g: [B, T, DIRECTIONS·H], the same offsets for one direction. Read
    # and written in the MMA's layout, two adjacent units per access (tile_io.load_pairs; dout's
    # strides decide PAIRED_DOUT): per step one offset per column (its position) plus
    # loop-invariant offsets of units 2p (lo) and 2p + 1 (hi). The loads are unmasked, so every
    # address is kept valid: columns past B read sequence B-1, padded units (MASK_H) unit 0, and a
    # position outside [0, T) (a step past a length, or the prefetch before step 0) position 0 or
    # T-1. What those read is discarded: where a step is not valid, dh is kept and g is neither
    # used nor written, and the padded rows of g are zeroed, so a NaN in padding or in dout at a
    # padding position cannot reach dh.
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    hi_units = lo_units + 1
    lo_mask = (lo_units < H)[:, None] & seq_ok[None, :]
    hi_mask = (hi_units < H)[:, None] & seq_ok[None, :]
    g_seqs = seqs[None, :] * T * (DIRECTIONS * H) + d * H
    g_lo, g_hi = g_seqs + lo_units[:, None], g_seqs + hi_units[:, None]
    lo_read, hi_read = _pair_rows_read(lo_units, hi_units, H, MASK_H)
    seqs_in = tl.minimum(seqs, B - 1)
    hs_seqs = (seqs_in * T * H)[None, :]
    hs_lo = d64 * B * T * H + lo_read[:, None] + hs_seqs
    hs_hi = d64 * B * T * H + hi_read[:, None] + hs_seqs
    if HAS_DOUT:
        dout_seqs = (seqs_in * stride_db)[None, :]
        dout_lo = d * stride_dd + (lo_read * stride_dh)[:, None] + dout_seqs
        dout_hi = d * stride_dd + (hi_read * stride_dh)[:, None] + dout_seqs
    else:
        dout_lo, dout_hi = 0, 0  # (_load_position reads no dout)
    valid_next = _valid(steps - 1, T, length, zeros_b, HAS_LENGTHS)
    pos_next = pos
    h_next, dout_next = _load_position(pos, T, H, hs_ptr, hs_lo, hs_hi, dout_ptr, dout_lo, dout_hi, stride_dt,
                                       HAS_DOUT, PAIRED, PAIRED_DOUT)
    for i in range(steps):
        valid = valid_next
        pos = pos_next
        h_t = h_next
        if HAS_DOUT:
            if HAS_LENGTHS:
                dh += tl.where(valid[None, :], dout_next, 0.0)
            else:
                dh += dout_next
        if RELU:
            # As ATen's threshold_backward: 0 where h <= 0, so a NaN state
            # passes the gradient on, as in stock nn.RNN.
            g = tl.where(h_t <= 0, 0.0, dh)
        else:
            g = dh * (1.0 - h_t * h_t)
        if MASK_H:
            # An infinite dh times a padded (zero) weight is NaN in a padded
            # row; g there must stay 0 so it cannot reach real rows.
            g = tl.where(h_rows_ok[:, None], g, 0.0)
        # Step s - 1, loaded during step s = steps - 1 - i, after the last use of step s's values:
        # the loads then reuse their registers (loaded earlier, both sets would be live and the
        # loop would copy one into the other every step: 31 moves per thread, bf16 H = 128).
        valid_next = _valid(steps - 2 - i, T, length, zeros_b, HAS_LENGTHS)
        pos_next = pos - sign
        h_next, dout_next = _load_position(pos_next, T, H, hs_ptr, hs_lo, hs_hi, dout_ptr, dout_lo, dout_hi,
                                           stride_dt, HAS_DOUT, PAIRED, PAIRED_DOUT)
        if HAS_LENGTHS:
            # Past a length the step was an identity: dh passes unchanged (the
            # MMA's columns are independent, so what it made of this column's g
            # is simply dropped).
            dh_prev = _mm(w_hh_t, w_hh_t_lo, g.to(OPERAND_DTYPE), tl.zeros_like(dh), PRECISION)
            dh = tl.where(valid[None, :], dh_prev, dh)
            g_lo_mask, g_hi_mask = lo_mask & valid[None, :], hi_mask & valid[None, :]
        else:
            dh = _mm(w_hh_t, w_hh_t_lo, g.to(OPERAND_DTYPE), tl.zeros_like(dh), PRECISION)
            g_lo_mask, g_hi_mask = lo_mask, hi_mask
        g_at = g_ptr + pos * (DIRECTIONS * H)
        tile_io.store_pairs(g_at + g_lo, g_at + g_hi, g, g_lo_mask, g_hi_mask, PAIRED)

    tl.store(dh0_ptr + d64 * B * H + seqs[None, :] * H + units[:, None], dh, mask=h_mask)
    if HAS_LENGTHS:
        # No gradient reaches xp at padding positions (natural unit order, off the loop).
        g_base = seqs[None, :] * T * (DIRECTIONS * H) + d * H + offs_h[:, None]
        offs_mask = (offs_h < H)[:, None] & seq_ok[None, :]
        _zero_padding(g_ptr, g_base, length, offs_mask, first_padding, T, DIRECTIONS * H, zeros_b)


# As the forward: dout's strides are specialized only when both are multiples of 16.
_elman_bwd_kernel = triton.jit(do_not_specialize=["B", "T"])(_elman_bwd)
_elman_bwd_kernel_any_stride = triton.jit(do_not_specialize=["B", "T", "stride_db", "stride_dt"])(_elman_bwd)


# ----------------------------------------------------------------------------
# Host side. Inputs are assumed checked by the caller (fused_rnn.recurrence):
# shapes, dtypes, devices; w_hh contiguous.
# ----------------------------------------------------------------------------

def _check_cell(cell):
    if cell not in CELLS:
        raise ValueError(f"the Elman kernels run cells {CELLS}, got {cell!r}")


def smem_bytes(dtype, block_h, allow_tf32, *, store_saved=False, backward=False):
    """Shared memory one program needs, in bytes (the GPU's figure, also under the interpreter).

    W_hh (and its TF32 remainder for "tf32x3") stays resident for the whole loop, and each step
    stages the MMA's B operand (h, or g: twice, hi and lo, for "tf32x3") through shared memory.
    Nothing else does: xp, out, hs, dout and g move between registers and global memory directly
    (kernels/tile_io.py), so ``store_saved`` and ``backward`` change nothing. Triton 3.9 allocates
    exactly this for sm_90a at BLOCK_H = 128 and 256; 3.6 less where W_hh is in registers
    (rnn_linear.weights_in_registers), except for the fp32 forward's one-time reorder
    (tests/test_kernel_elman.py). The 1024 B are headroom.
    """
    prec = precision(dtype, allow_tf32, interpreted=False)
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    return item * copies * block_h * (block_h + BLOCK_B) + 1024


def unsupported_reason(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """A sentence saying why these kernels cannot launch this configuration, or None if they can."""
    _check_cell(cell)
    if dtype not in DTYPES:
        return f"the Triton kernels take {', '.join(str(d).removeprefix('torch.') for d in DTYPES)}, got {dtype}"
    if block(hidden_size) > MAX_BLOCK:
        return f"the Triton kernels hold hidden sizes up to {MAX_BLOCK}, got hidden_size={hidden_size}"
    block_h = block(hidden_size)
    need = smem_bytes(dtype, block_h, allow_tf32, store_saved=needs_grad)
    if needs_grad:
        need = max(need, smem_bytes(dtype, block_h, allow_tf32, backward=True))
    if need > SMEM_LIMIT:
        return (f"hidden_size={hidden_size} in {str(dtype).removeprefix('torch.')} with "
                f"{precision(dtype, allow_tf32, interpreted=False)} products needs {need} B of shared memory "
                f"per block, more than the {SMEM_LIMIT} B a Hopper block may use")
    return None


def _weights_in_registers(prec, block_h, hidden_size):
    """W_IN_REGISTERS of both kernels: rnn_linear.weights_in_registers for W_hh on num_warps' warps."""
    return rnn_linear.weights_in_registers(prec, num_warps(prec, block_h), (block_h, block_h),
                                           hidden_size=hidden_size)[0]


def streamed_weight_bytes(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """Bytes of W_hh a step reads from shared memory (rnn_linear.streamed_bytes): 3xTF32, odd H.

    The forward and the backward place W_hh alike, so ``needs_grad`` changes nothing.
    """
    _check_cell(cell)
    prec = precision(dtype, allow_tf32, interpreted=False)
    block_h = block(hidden_size)
    held = _weights_in_registers(prec, block_h, hidden_size)
    return rnn_linear.streamed_bytes(prec, dtype, held, (block_h, block_h))


def _aligned(t):
    return t.stride(0) % 16 == 0 and t.stride(1) % 16 == 0


def _forward(cell, xp, w_hh, b_hh, h0, lengths, directions, reverse, allow_tf32, store_out, store_saved, wrap):
    """Launch the forward for one direction (shapes as recurrence_fwd) or both (as bidirectional_fwd)."""
    _check_cell(cell)
    B, T = xp.shape[:2]
    H = w_hh.shape[-1]
    device = xp.device
    lead = () if directions == 1 else (directions,)
    out = rnn_linear.new_empty((B, T, directions * H), device=device, dtype=xp.dtype) if store_out else None
    h_n = rnn_linear.new_empty((*lead, B, H), device=device, dtype=xp.dtype)
    hs = rnn_linear.new_empty((*lead, B, T, H), device=device, dtype=torch.float32) if store_saved else None
    if B == 0:
        return out, h_n, None, hs, None
    if T == 0:
        # No step: h_n is h0. (The kernel's loads are unmasked, so it must not run without xp.)
        set_state(h_n, h0)
        return out, h_n, None, hs, None
    block_h = block(H)
    prec = precision(xp.dtype, allow_tf32)
    (w_hh, w_hh_lo), = operand_weights(prec, w_hh, wrap=wrap)
    _launch(
        _elman_fwd_kernel if _aligned(xp) else _elman_fwd_kernel_any_stride,
        (cdiv(B, BLOCK_B), directions), wrap,
        xp, h0, lengths, w_hh, w_hh_lo, b_hh,
        out, h_n, hs,
        B, T, H,
        xp.stride(0), xp.stride(1), xp.stride(2), H * xp.stride(2) if directions == 2 else 0,
        *((0,) * 3 if h0 is None else (0, *h0.stride()) if directions == 1 else h0.stride()),
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, DIRECTIONS=directions,
        HAS_H0=h0 is not None, HAS_LENGTHS=lengths is not None, HAS_B_HH=b_hh is not None,
        STORE_OUT=store_out, STORE_HS=store_saved, REVERSE=bool(reverse),
        RELU=cell == "rnn_relu", MASK_H=H != block_h,
        FAST_TANH=not INTERPRETED and prec in ("tf32", "low"),
        PAIRED=H % 2 == 0, PAIRED_XP=H % 2 == 0 and tile_io.pairs_fit(xp),
        W_IN_REGISTERS=_weights_in_registers(prec, block_h, H),
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(xp.dtype, prec),
        num_warps=num_warps(prec, block_h),
    )
    return out, h_n, None, hs, None


def _backward(cell, hs, w_hh, dout, dh_n, lengths, directions, reverse, allow_tf32, wrap):
    """Launch the backward sweep for one direction (shapes as recurrence_bwd) or both (as bidirectional_bwd)."""
    _check_cell(cell)
    B, T, H = hs.shape[-3:]
    device = hs.device
    lead = () if directions == 1 else (directions,)
    g = rnn_linear.new_empty((B, T, directions * H), device=device, dtype=torch.float32)
    dh0 = rnn_linear.new_empty((*lead, B, H), device=device, dtype=torch.float32)
    if B == 0:
        return g, g, dh0, None
    if T == 0:
        # No step: dh0 is dh_n. (The kernel's loads are unmasked, so it must not run without hs.)
        set_state(dh0, dh_n)
        return g, g, dh0, None
    block_h = block(H)
    prec = precision(w_hh.dtype, allow_tf32)
    (w_hh, w_hh_lo), = operand_weights(prec, w_hh, wrap=wrap)
    _launch(
        _elman_bwd_kernel if dout is None or _aligned(dout) else _elman_bwd_kernel_any_stride,
        (cdiv(B, BLOCK_B), directions), wrap,
        hs, lengths, w_hh, w_hh_lo, dout, dh_n,
        g, dh0,
        B, T, H,
        *((0,) * 4 if dout is None else (*dout.stride(), H * dout.stride(2) if directions == 2 else 0)),
        *((0,) * 3 if dh_n is None else (0, *dh_n.stride()) if directions == 1 else dh_n.stride()),
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, DIRECTIONS=directions,
        HAS_LENGTHS=lengths is not None, HAS_DOUT=dout is not None, HAS_DHN=dh_n is not None,
        REVERSE=bool(reverse), RELU=cell == "rnn_relu", MASK_H=H != block_h,
        PAIRED=H % 2 == 0 and tile_io.pairs_fit(hs),
        PAIRED_DOUT=dout is not None and H % 2 == 0 and tile_io.pairs_fit(dout),
        W_IN_REGISTERS=_weights_in_registers(prec, block_h, H),
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(w_hh.dtype, prec),
        num_warps=num_warps(prec, block_h),
    )
    return g, g, dh0, None


def recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, allow_tf32, store_out=True,
                   store_saved=False, head=None, wrap=None):
    """The layer contract's forward (fused_rnn/cells/__init__.py): returns (out, h_n, None, hs, None).

    xp: [B, T, H] any strides; w_hh: [H, H] contiguous; b_hh: [H] or None;
    h0: [B, H] or None; c0: ignored (None); lengths: [B] int64 or None.
    ``head``: None only (an Elman layer with its head is rnn_linear's kernel).
    ``wrap``: torch.library.wrap_triton inside a triton_op.
    """
    if head is not None:
        raise ValueError("the Elman layer kernel fuses no head: fused_rnn.rnn_linear runs an Elman layer with one")
    return _forward(cell, xp, w_hh, b_hh, h0, lengths, 1, reverse, allow_tf32, store_out, store_saved, wrap)


def recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, *, reverse, allow_tf32,
                   wrap=None):
    """The layer contract's backward sweep: returns (dxp, dgh, dh0, None), dxp and dgh the same tensor.

    hs: [B, T, H] fp32 from recurrence_fwd(store_saved=True); dout: [B, T, H]
    any strides, or None; dh_n: [B, H] or None. aux, b_hh, h0, c0, dc_n are
    not needed (act' is read from the states alone).
    """
    return _backward(cell, hs, w_hh, dout, dh_n, lengths, 1, reverse, allow_tf32, wrap)


def bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths, *, allow_tf32, store_out=True, store_saved=False,
                      wrap=None):
    """Both directions of a bidirectional layer in one launch (grid axis 1 = direction).

    xp: [B, T, 2·H] any strides: the forward direction's projection in
    [..., :H], the reverse's in [..., H:] (one GEMM with both directions'
    W_ih stacked); w_hh: [2, H, H] contiguous; b_hh: [2, H] or None; h0:
    [2, B, H] or None; lengths: [B] int64 or None.
    Returns (out [B, T, 2·H] in xp.dtype, the layer's output, or None when
    not store_out; h_n [2, B, H]; None; hs [2, B, T, H] fp32 or None; None),
    each direction as recurrence_fwd gives it.
    """
    return _forward(cell, xp, w_hh, b_hh, h0, lengths, 2, False, allow_tf32, store_out, store_saved, wrap)


def bidirectional_bwd(cell, hs, w_hh, dout, dh_n, lengths, *, allow_tf32, wrap=None):
    """The backward sweeps of both directions in one launch.

    hs: [2, B, T, H] fp32 from bidirectional_fwd(store_saved=True); dout:
    [B, T, 2·H] any strides, or None; dh_n: [2, B, H] or None.
    Returns (dxp, dgh, dh0, None): dxp = dgh [B, T, 2·H] fp32 (laid out as
    xp, so dW_ih of both directions is one GEMM), dh0 [2, B, H] fp32.
    """
    return _backward(cell, hs, w_hh, dout, dh_n, lengths, 2, False, allow_tf32, wrap)
