"""Triton kernels of the layer contract (fused_rnn/cells/__init__.py) for the LSTM cell.

One program per tile of ``BLOCK_B`` sequences walks time; per step, with the
gates i, f, g, o in torch.nn.LSTM's order::

    a_k = xp_t[k] + W_k · h_{t-1} + b_k        (W_k: rows k·H … k·H+H-1 of weight_hh)
    c_t = σ(a_f) ⊙ c_{t-1} + σ(a_i) ⊙ tanh(a_g)      h_t = σ(a_o) ⊙ tanh(c_t)

Transposed as kernels/rnn_linear.py is: the state ``hᵀ`` is ``[BLOCK_H, BLOCK_B]``
so H is the MMA's M dimension (wgmma on Hopper at H ≥ 64). W_hh is loaded
once, before the loop, as one ``[4·BLOCK_H, BLOCK_H]`` tile (gate k's rows at
k·BLOCK_H), held in registers where that does not spill (_weights_in_registers),
else in shared memory, so each step is one product
``[4·BLOCK_H, BLOCK_H] · [BLOCK_H, BLOCK_B]`` accumulating onto xp's tile; its
result splits into the four gates without moving data (see _split_gates), each
in the same register layout as h and c. h and c stay in fp32 registers for the
whole sequence. The sigmoid gates' rows of W_hh are halved on the host, so that
σ(a) = ½ + ½·tanh(a/2) costs one MUFU op on a GPU (see rnn_linear._sigmoid_of_half).
Every tile's rows (and W_hh's columns) hold the hidden units in tile_io.paired_units order (a
permutation within each 16), which puts units 2k and 2k + 1 in one thread: the
per-step reads and writes of xp, out, hs, aux, dout and dxp move two units per
instruction (tile_io.load_pairs / store_pairs).

Saved for the backward (``store_saved``): ``hs`` (fp32 h_t) and ``aux``
``[B, T, 5H]`` fp32 = the activated gates i, f, g, o and c_{t-1} at each
position, 0 past a length. The backward recomputes c_t = f c_{t-1} + i g and
tanh(c_t) from them; it never needs h.

Backward, one reverse sweep over processing order (the only sequential part)::

    dh += dout_t;   dc += dh ⊙ o ⊙ (1 - tanh²c_t)
    da = [dc⊙g⊙i(1-i), dc⊙c_{t-1}⊙f(1-f), dc⊙i⊙(1-g²), dh⊙tanh(c_t)⊙o(1-o)]
    dh = Σ_k W_kᵀ da_k;   dc = dc ⊙ f

writing da = ∂L/∂xp = ∂L/∂gh; the weight gradients are GEMMs done by the caller.
"""

import torch
import triton
import triton.language as tl

from . import rnn_linear, tile_io
from .rnn_linear import (BLOCK_B, FP32_OPERANDS, INTERPRETED, SMEM_LIMIT, _fused_head, _launch, _load_gates,
                         _load_state, _mm, cdiv, _sigmoid_of_half, _tanh, block, precision, operand_weights,
                         set_state)

GATES = 4
# recurrence_fwd takes ``head=``: a Linear on h_n after the loop (rnn_linear.head_unsupported_reason).
FUSED_HEAD = True
# aux's blocks of H per position: the activated gates i, f, g, o, then c_{t-1}.
AUX_BLOCKS = 5


# ----------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------

@triton.jit
def _lengths(lengths_ptr, seqs, seq_ok, T, HAS_LENGTHS: tl.constexpr):
    """Each column's length, [BLOCK_B] int64 as _position takes it: lengths[seqs] (0 past B), or T
    for every column without lengths."""
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0)
    else:
        length = seqs * 0 + T
    return length


@triton.jit
def _position(s, length, cols, T, HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr):
    """(position, valid) of processing step ``s`` for each column: [BLOCK_B] int64 and bool.

    A step s < len_b processes position s (forward) or len_b - 1 - s
    (reverse); a step s ≥ len_b processes nothing and is sent to position s,
    which is then exactly one of the padding positions [len_b, T), so every
    position is written once over the T steps.
    """
    s_cols = cols * 0 + s
    if HAS_LENGTHS:
        valid = s_cols < length
        if REVERSE:
            pos = tl.where(valid, length - 1 - s_cols, s_cols)
        else:
            pos = s_cols
    else:
        valid = s_cols < T
        if REVERSE:
            pos = T - 1 - s_cols
        else:
            pos = s_cols
    return pos, valid


@triton.jit
def _step_position(s, T, REVERSE: tl.constexpr):
    """The position step ``s`` processes in every column when there are no lengths (or, forward, in
    every column still running): s, or T-1-s in reverse."""
    if REVERSE:
        at = T - 1 - s
    else:
        at = s
    return at


@triton.jit
def _load_xp(xp_ptr, lo_offs, hi_offs, at, cols_at, stride_xt, PER_COLUMN: tl.constexpr, PAIRED: tl.constexpr):
    """xp's stacked fp32 tile (paired_units order) at position ``at`` (a scalar), or ``cols_at``
    ([BLOCK_B]) with PER_COLUMN.

    ``lo_offs``, ``hi_offs``: the loop-invariant [2·BLOCK_H, BLOCK_B] offsets of the pairs' two
    units (see tile_io.load_pairs), every address valid (see the caller).
    """
    if PER_COLUMN:
        xp_at = xp_ptr + (cols_at * stride_xt)[None, :]
    else:
        xp_at = xp_ptr + at.to(tl.int64) * stride_xt
    return tile_io.load_pairs(xp_at + lo_offs, xp_at + hi_offs, PAIRED)


@triton.jit
def _load_units(ptr, offs, lo_offs, hi_offs, PAIRED: tl.constexpr, GATE_PAIRS: tl.constexpr):
    """A [BLOCK_H, BLOCK_B] fp32 tile in paired_units order: with GATE_PAIRS two units per access
    (tile_io.load_pairs at ``ptr`` + ``lo_offs``, ``hi_offs``), else one (tile_io.load at ``ptr`` +
    ``offs``, each row's own unit; see _gate_pairs). Unmasked: every address must be valid."""
    if GATE_PAIRS:
        x = tile_io.load_pairs(ptr + lo_offs, ptr + hi_offs, PAIRED)
    else:
        x = tile_io.load(ptr + offs).to(tl.float32)
    return x


@triton.jit
def _store_units(ptr, offs, lo_offs, hi_offs, value, mask, lo_mask, hi_mask, PAIRED: tl.constexpr,
                 GATE_PAIRS: tl.constexpr):
    """Stores a [BLOCK_H, BLOCK_B] tile in paired_units order, as _load_units reads one."""
    if GATE_PAIRS:
        tile_io.store_pairs(ptr + lo_offs, ptr + hi_offs, value, lo_mask, hi_mask, PAIRED)
    else:
        tile_io.store(ptr + offs, value, mask)


@triton.jit
def _split_gates(x, BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr):
    """[4·BLOCK_H, BLOCK_B] (row k·BLOCK_H + u: unit u of gate k) -> the four gates' [BLOCK_H, BLOCK_B].

    Gate k = 2·k1 + k2 becomes two trailing dimensions of size 2, which in the
    MMA accumulator's layout are register indices where BLOCK_H ≥ 16·num_warps
    (the warps' 16-row slices repeat over registers every 16·num_warps rows):
    the split then moves no data (no shared memory in the sm_90 build). Below
    that (BLOCK_H ≤ 32 on 4 warps, 64 on 8) a gate's rows lie in some of the
    warps only and the split crosses shared memory (see _gate_pairs).
    """
    x = tl.permute(tl.reshape(x, [2, 2, BLOCK_H, BLOCK_B]), [2, 3, 0, 1])
    k2_is_0, k2_is_1 = tl.split(x)
    i, g = tl.split(k2_is_0)
    f, o = tl.split(k2_is_1)
    return i, f, g, o


@triton.jit
def _join_gates(i, f, g, o, BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr):
    """The inverse of _split_gates: four [BLOCK_H, BLOCK_B] -> [4·BLOCK_H, BLOCK_B], gate k's rows at k·BLOCK_H."""
    x = tl.join(tl.join(i, g), tl.join(f, o))
    return tl.reshape(tl.permute(x, [2, 3, 0, 1]), [4 * BLOCK_H, BLOCK_B])


@triton.jit
def _load_saved(aux_ptr, aux_offs, aux_lo, aux_hi, dout_ptr, dout_offs, dout_lo, dout_hi, stride_dt, H, at,
                cols_at, HAS_DOUT: tl.constexpr, PER_COLUMN: tl.constexpr, PAIRED: tl.constexpr,
                PAIRED_DOUT: tl.constexpr, GATE_PAIRS: tl.constexpr):
    """What the backward's step at position ``at`` (a scalar; ``cols_at`` [BLOCK_B] with PER_COLUMN)
    reads: the gates i, f, g, o, c_{t-1} from aux and dout (0.0 without HAS_DOUT), fp32 [BLOCK_H, BLOCK_B]
    in paired_units order.

    Unmasked (_load_units): the offsets (``_lo``: units 2p, ``_hi``: 2p + 1) must make every
    address valid.
    """
    if PER_COLUMN:
        aux_at = aux_ptr + (cols_at * (5 * H))[None, :]
    else:
        aux_at = aux_ptr + at.to(tl.int64) * (5 * H)
    i = _load_units(aux_at, aux_offs, aux_lo, aux_hi, PAIRED, GATE_PAIRS)
    f = _load_units(aux_at + H, aux_offs, aux_lo, aux_hi, PAIRED, GATE_PAIRS)
    g = _load_units(aux_at + 2 * H, aux_offs, aux_lo, aux_hi, PAIRED, GATE_PAIRS)
    o = _load_units(aux_at + 3 * H, aux_offs, aux_lo, aux_hi, PAIRED, GATE_PAIRS)
    c_prev = _load_units(aux_at + 4 * H, aux_offs, aux_lo, aux_hi, PAIRED, GATE_PAIRS)
    if HAS_DOUT:
        if PER_COLUMN:
            dout_at = dout_ptr + (cols_at * stride_dt)[None, :]
        else:
            dout_at = dout_ptr + at.to(tl.int64) * stride_dt
        dout = _load_units(dout_at, dout_offs, dout_lo, dout_hi, PAIRED_DOUT, GATE_PAIRS)
    else:
        dout = 0.0
    return i, f, g, o, c_prev, dout


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

def _lstm_fwd(
    xp_ptr, w_hh_ptr, w_hh_lo_ptr, b_hh_ptr, h0_ptr, c0_ptr, lengths_ptr, fc_w_ptr, fc_w_lo_ptr, fc_b_ptr,
    out_ptr, hn_ptr, cn_ptr, hs_ptr, aux_ptr, y_ptr,
    B, T, H, O,
    stride_xb, stride_xt, stride_xg,
    stride_h0b, stride_h0h, stride_c0b, stride_c0h,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_C0: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_B_HH: tl.constexpr,
    REVERSE: tl.constexpr, STORE_OUT: tl.constexpr, STORE_SAVED: tl.constexpr, HAS_HEAD: tl.constexpr,
    HAS_FC_B: tl.constexpr,
    MASK_H: tl.constexpr, FAST_TANH: tl.constexpr, PAIRED: tl.constexpr, PAIRED_XP: tl.constexpr,
    GATE_PAIRS: tl.constexpr, W_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    if not MASK_H:
        # H == BLOCK_H: as a constexpr, every gate, row and unit offset below is a compile-time
        # constant per register and folds into its instruction (LDG/STG [R+imm]).
        H = BLOCK_H
    pid = tl.program_id(0)
    # Columns are sequences. int64: B·T·4H may pass 2³¹.
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    # Row m of every [BLOCK_H, ·] tile (h, c, each gate) holds unit units[m], so that a thread
    # holds units 2k and 2k + 1 and reads or writes both in one access (see tile_io.paired_units).
    units = tile_io.paired_units(BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]

    # Rows of the stacked gate product: row k·BLOCK_H + m is unit units[m] of gate k (i, f, g,
    # o), i.e. row k·H + units[m] of W_hh and column k·H + units[m] of xp (paired_units over
    # 4·BLOCK_H permutes within blocks of 16, so within each gate).
    offs_a = tile_io.paired_units(4 * BLOCK_H)
    unit = offs_a % BLOCK_H
    gate = offs_a // BLOCK_H
    a_rows = gate * H + unit
    a_rows_ok = unit < H
    is_g = gate == 2

    # W_hh as one [4·BLOCK_H, BLOCK_H] tile, loaded once, in registers or shared
    # memory (see rnn_linear._load_gates; the TF32 remainder is split before this launch, see
    # rnn_linear.split_tf32_weights). The host has halved the rows of the sigmoid gates
    # (see recurrence_fwd). Its columns are in h's row order too (the product's K index).
    w = _load_gates(w_hh_ptr, H, BLOCK_H, 4, False, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 4, False, True, W_IN_REGISTERS)
    else:
        w_lo = w
    # The accumulator starts at scale·(xp + b_hh): the halved pre-activation
    # a/2 of the sigmoid gates (σ(a) = ½ + ½·tanh(a/2)), a itself for g.
    scale = tl.where(is_g, 1.0, 0.5)
    if HAS_B_HH:
        bias = scale * tl.load(b_hh_ptr + a_rows, mask=a_rows_ok, other=0.0).to(tl.float32)
    else:
        bias = scale * 0.0

    h = _load_state(h0_ptr, seqs, units, stride_h0b, stride_h0h, h_mask, HAS_H0)
    c = _load_state(c0_ptr, seqs, units, stride_c0b, stride_c0h, h_mask, HAS_C0)
    length = _lengths(lengths_ptr, seqs, seq_ok, T, HAS_LENGTHS)

    # xpᵀ as one [4·BLOCK_H, BLOCK_B] fp32 tile, loaded straight into the accumulator's layout
    # two units per access (tile_io.load_pairs: no shared-memory round trip, no barrier; one
    # 4-byte load per pair for bf16/fp16, 8-byte for fp32, when PAIRED_XP: at H = 128 16 LDG per
    # warp and step instead of 32, 291 -> 283 instructions in bf16). Pair row p holds
    # stacked row 2p, unit 2p % BLOCK_H of gate 2p // BLOCK_H, and the unit after it. The tile
    # of step s+1 is loaded during step s, off the dependent chain. The loads are unmasked, so
    # every address is valid:
    # - columns past B read sequence B-1;
    # - padded units (≥ H) read a real unit of their gate (column k·H + H-1 < 4H): unit H-1, or
    #   for even H the pair H-2, H-1 (aligned, as PAIRED_XP's one access needs; a pair is then
    #   all padding or none). Not zeroed:
    #   a padded row of the product only reaches the same padded unit of i, f, g, o, c and h
    #   (elementwise), where h is zeroed before it reaches W_hh and nothing is stored;
    # - a step that processes nothing (s ≥ len_b) reads a position < T of its own sequence:
    #   position s (with lengths, forward: padding, which may hold anything, NaN included) or 0
    #   (with lengths, reverse); the prefetch after the last step (s + 1 = T) reads step T-1's
    #   position again. What those reads return is discarded: the column's h, c and everything
    #   stored for it come from tl.where(keep, ...), and its column of the product W·h depends
    #   only on its own h (MMA columns are independent).
    # Addresses are a scalar pointer at the step's position plus loop-invariant offsets, except
    # with lengths in reverse, where each sequence walks from its own last position.
    PER_COLUMN: tl.constexpr = HAS_LENGTHS and REVERSE
    pair_rows = 2 * tl.arange(0, 2 * BLOCK_H)
    pair_gate = pair_rows // BLOCK_H
    pair_unit = pair_rows % BLOCK_H
    # (H - 1) // 2 · 2: H - 2 for even H keeps a padded pair aligned; H - 1 for odd H.
    xp_lo_rows = (pair_gate * H + tl.minimum(pair_unit, (H - 1) // 2 * 2)) * stride_xg
    xp_hi_rows = (pair_gate * H + tl.minimum(pair_unit + 1, H - 1)) * stride_xg
    xp_seqs = tl.minimum(seqs, B - 1)[None, :] * stride_xb
    xp_lo, xp_hi = xp_seqs + xp_lo_rows[:, None], xp_seqs + xp_hi_rows[:, None]
    pos, valid = _position(0, length, seqs, T, HAS_LENGTHS, REVERSE)
    xp_next = _load_xp(xp_ptr, xp_lo, xp_hi, _step_position(0, T, REVERSE), tl.where(valid, pos, 0), stride_xt,
                       PER_COLUMN, PAIRED_XP)
    # [B, T, H] rows of out and hs, [B, T, 5H] rows of aux: a scalar pointer at the step's
    # position (per column with PER_COLUMN) plus these loop-invariant offsets, of units 2p (lo)
    # and 2p + 1 (hi) with GATE_PAIRS (one access per pair when PAIRED: bf16 training forward at
    # H = 128 28 STG per warp and step instead of 56), else of each row's unit.
    state_offs = seqs[None, :] * T * H + units[:, None]
    aux_offs = seqs[None, :] * T * (5 * H) + units[:, None]
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    hi_units = lo_units + 1
    lo_mask = (lo_units < H)[:, None] & seq_ok[None, :]
    hi_mask = (hi_units < H)[:, None] & seq_ok[None, :]
    state_lo, state_hi = seqs[None, :] * T * H + lo_units[:, None], seqs[None, :] * T * H + hi_units[:, None]
    aux_lo = seqs[None, :] * T * (5 * H) + lo_units[:, None]
    aux_hi = seqs[None, :] * T * (5 * H) + hi_units[:, None]
    for s in range(T):
        acc = xp_next * scale[:, None] + bias[:, None]
        pos_s, valid_s = pos, valid
        pos, valid = _position(s + 1, length, seqs, T, HAS_LENGTHS, REVERSE)
        # Step s + 1 = T (no such step) reads step T-1's position again (discarded).
        xp_next = _load_xp(xp_ptr, xp_lo, xp_hi, _step_position(tl.minimum(s + 1, T - 1), T, REVERSE),
                           tl.where(valid, pos, 0), stride_xt, PER_COLUMN, PAIRED_XP)
        acc = _mm(w, w_lo, h.to(OPERAND_DTYPE), acc, PRECISION)
        u_i, u_f, a_g, u_o = _split_gates(acc, BLOCK_H, BLOCK_B)
        i = _sigmoid_of_half(u_i, FAST_TANH)
        f = _sigmoid_of_half(u_f, FAST_TANH)
        g = _tanh(a_g, FAST_TANH)
        o = _sigmoid_of_half(u_o, FAST_TANH)
        c_new = f * c + i * g
        h_new = o * _tanh(c_new, FAST_TANH)
        if MASK_H:
            # h's padded rows must stay 0: an infinite h0 times a padded (zero)
            # weight row is NaN there, which would reach real rows through W_hh.
            # (c's padded rows only ever reach h's, and are never stored.)
            h_new = tl.where(h_rows_ok[:, None], h_new, 0.0)
        keep = valid_s[None, :]
        # Step s's position: a scalar (every column at position s, or T-1-s in reverse) unless
        # PER_COLUMN. int64: pos·5H may pass 2³¹.
        if PER_COLUMN:
            at = pos_s[None, :]
        else:
            at = _step_position(s, T, REVERSE).to(tl.int64)
        if STORE_SAVED:
            if HAS_LENGTHS:
                i = tl.where(keep, i, 0.0)
                f = tl.where(keep, f, 0.0)
                g = tl.where(keep, g, 0.0)
                o = tl.where(keep, o, 0.0)
                c_prev = tl.where(keep, c, 0.0)
            else:
                c_prev = c
            # Straight from the accumulator's layout (see tile_io).
            aux_at = aux_ptr + at * (5 * H)
            _store_units(aux_at, aux_offs, aux_lo, aux_hi, i, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
            _store_units(aux_at + H, aux_offs, aux_lo, aux_hi, f, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
            _store_units(aux_at + 2 * H, aux_offs, aux_lo, aux_hi, g, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
            _store_units(aux_at + 3 * H, aux_offs, aux_lo, aux_hi, o, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
            _store_units(aux_at + 4 * H, aux_offs, aux_lo, aux_hi, c_prev, h_mask, lo_mask, hi_mask, PAIRED,
                         GATE_PAIRS)
        if HAS_LENGTHS:
            # A finished sequence keeps its last state (a PackedSequence's h_n, c_n).
            h = tl.where(keep, h_new, h)
            c = tl.where(keep, c_new, c)
            h_out = tl.where(keep, h_new, 0.0)
        else:
            h = h_new
            c = c_new
            h_out = h_new
        if STORE_OUT:
            _store_units(out_ptr + at * H, state_offs, state_lo, state_hi, h_out, h_mask, lo_mask, hi_mask, PAIRED,
                         GATE_PAIRS)
        if STORE_SAVED:
            _store_units(hs_ptr + at * H, state_offs, state_lo, state_hi, h_out, h_mask, lo_mask, hi_mask, PAIRED,
                         GATE_PAIRS)

    tl.store(hn_ptr + seqs[None, :] * H + units[:, None], h.to(hn_ptr.dtype.element_ty), mask=h_mask)
    tl.store(cn_ptr + seqs[None, :] * H + units[:, None], c.to(cn_ptr.dtype.element_ty), mask=h_mask)
    if HAS_HEAD:
        # y = h_n fc_Wᵀ + fc_b (y: [B, O]), from the fp32 state still in registers.
        _fused_head(fc_w_ptr, fc_w_lo_ptr, fc_b_ptr, y_ptr, h, units, seqs, seq_ok, H, O, BLOCK_O, HAS_FC_B,
                    PRECISION, OPERAND_DTYPE)


# B and T never specialized (a new kernel for B = 1, T = 1, multiples of 16);
# xp's batch and time strides only in the kernel for strides that are both
# multiples of 16 elements (aligned, vectorizable rows), as rnn_linear does.
_lstm_fwd_kernel = triton.jit(do_not_specialize=["B", "T"])(_lstm_fwd)
_lstm_fwd_kernel_any_stride = triton.jit(do_not_specialize=["B", "T", "stride_xb", "stride_xt"])(_lstm_fwd)


@triton.jit(do_not_specialize=["B", "T", "stride_db", "stride_dt"])
def _lstm_bwd_kernel(
    aux_ptr, w_hh_ptr, w_hh_lo_ptr, dout_ptr, dhn_ptr, dcn_ptr, lengths_ptr,
    dxp_ptr, dh0_ptr, dc0_ptr,
    B, T, H,
    stride_db, stride_dt, stride_dh,
    stride_dhnb, stride_dhnh, stride_dcnb, stride_dcnh,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_DOUT: tl.constexpr, HAS_DHN: tl.constexpr, HAS_DCN: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    REVERSE: tl.constexpr, MASK_H: tl.constexpr, FAST_TANH: tl.constexpr, JOIN_GATES: tl.constexpr,
    PAIRED: tl.constexpr, PAIRED_DOUT: tl.constexpr, GATE_PAIRS: tl.constexpr,
    W_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    """Reverse sweep over processing order; aux [B, T, 5H] and dxp [B, T, 4H] fp32 contiguous."""
    if not MASK_H:
        # H == BLOCK_H: as a constexpr, the gate and unit offsets fold into the instructions.
        H = BLOCK_H
    pid = tl.program_id(0)
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    # Row m of every [BLOCK_H, ·] tile (dh, dc, the gates, each da) holds unit units[m], so that a
    # thread holds units 2k and 2k + 1 and reads or writes both in one access (see
    # tile_io.paired_units).
    units = tile_io.paired_units(BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]

    # dh = Σ_k W_kᵀ · da_k, W_kᵀ[j, r] = W_hh[k·H + r, j]; the A tiles' rows and columns are both
    # in units order (dh's rows; da's rows, the product's K index). With JOIN_GATES one product
    # [BLOCK_H, 4·BLOCK_H] · [4·BLOCK_H, BLOCK_B] (see _join_gates_in_backward); its A, loaded once,
    # has W_kᵀ at columns k·BLOCK_H … k·BLOCK_H + BLOCK_H - 1 (paired_units over 4·BLOCK_H permutes
    # within blocks of 16, so within each gate: _join_gates' row order). Otherwise four products.
    if JOIN_GATES:
        w_t = _load_gates(w_hh_ptr, H, BLOCK_H, 4, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
        if PRECISION == "tf32x3":
            w_t_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 4, True, True, W_IN_REGISTERS)
        else:
            w_t_lo = w_t
    else:
        HH = H * H
        w_i = _load_gates(w_hh_ptr, H, BLOCK_H, 1, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
        w_f = _load_gates(w_hh_ptr + HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
        w_g = _load_gates(w_hh_ptr + 2 * HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
        w_o = _load_gates(w_hh_ptr + 3 * HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
        if PRECISION == "tf32x3":
            w_i_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 1, True, True, W_IN_REGISTERS)
            w_f_lo = _load_gates(w_hh_lo_ptr + HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS)
            w_g_lo = _load_gates(w_hh_lo_ptr + 2 * HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS)
            w_o_lo = _load_gates(w_hh_lo_ptr + 3 * HH, H, BLOCK_H, 1, True, True, W_IN_REGISTERS)
        else:
            w_i_lo, w_f_lo, w_g_lo, w_o_lo = w_i, w_f, w_g, w_o

    zero = tl.zeros([BLOCK_H, BLOCK_B], dtype=tl.float32)
    dh = _load_state(dhn_ptr, seqs, units, stride_dhnb, stride_dhnh, h_mask, HAS_DHN)
    dc = _load_state(dcn_ptr, seqs, units, stride_dcnb, stride_dcnh, h_mask, HAS_DCN)
    length = _lengths(lengths_ptr, seqs, seq_ok, T, HAS_LENGTHS)

    # aux and dout are read, dxp written, straight in the accumulator's layout, with GATE_PAIRS
    # two units per access (tile_io.load_pairs/store_pairs; see _gate_pairs): one 8-byte access
    # per pair of aux and dxp (fp32) when PAIRED, one 4- or 8-byte access per pair of dout
    # (bf16/fp16 or fp32) when PAIRED_DOUT (bf16 at H = 128: 24 LDG and 16 STG per warp and step
    # instead of 48 and 32). Addresses are a scalar pointer at the step's position
    # (per column with lengths in reverse) plus these loop-invariant offsets: of units 2p (lo)
    # and 2p + 1 (hi), or of each row's unit without GATE_PAIRS. The loads are unmasked, so
    # every address is valid:
    # - columns past B read sequence B-1;
    # - padded units (≥ H) read unit H-1, or the pair H-2, H-1 for even H (aligned; a pair is
    #   then all padding or none);
    # - a step that processes nothing (s ≥ len_b) reads a position < T of its own sequence:
    #   position s (with lengths, forward: aux there holds the forward's zeros, dout padding
    #   anything, inf or NaN included) or 0 (with lengths, reverse); the prefetch after step 0
    #   reads step 0's position again.
    # What those reads return is discarded: da is zeroed where nothing was processed and in
    # padded rows, dh and dc keep their value in a column that processed nothing (tl.where),
    # and the padded rows of dh and dc reach no real row (da is zeroed there before the
    # product) and are never stored.
    PER_COLUMN: tl.constexpr = HAS_LENGTHS and REVERSE
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    hi_units = lo_units + 1
    if MASK_H:
        rows_read = tl.minimum(units, H - 1)
        # (H - 1) // 2 · 2: H - 2 for even H keeps a padded pair aligned; H - 1 for odd H.
        lo_read = tl.minimum(lo_units, (H - 1) // 2 * 2)
        hi_read = tl.minimum(hi_units, H - 1)
    else:
        rows_read = units
        lo_read = lo_units
        hi_read = hi_units
    seqs_read = tl.minimum(seqs, B - 1)
    aux_seqs = seqs_read[None, :] * T * (5 * H)
    aux_offs, aux_lo, aux_hi = aux_seqs + rows_read[:, None], aux_seqs + lo_read[:, None], aux_seqs + hi_read[:, None]
    dout_seqs = seqs_read[None, :] * stride_db
    dout_offs = dout_seqs + (rows_read * stride_dh)[:, None]
    dout_lo, dout_hi = dout_seqs + (lo_read * stride_dh)[:, None], dout_seqs + (hi_read * stride_dh)[:, None]
    dxp_seqs = seqs[None, :] * T * (4 * H)
    dxp_offs, dxp_lo, dxp_hi = dxp_seqs + units[:, None], dxp_seqs + lo_units[:, None], dxp_seqs + hi_units[:, None]
    lo_mask = (lo_units < H)[:, None] & seq_ok[None, :]
    hi_mask = (hi_units < H)[:, None] & seq_ok[None, :]
    # What step s reads is loaded during step s + 1, off the dependent chain.
    pos, valid = _position(T - 1, length, seqs, T, HAS_LENGTHS, REVERSE)
    i, f, g, o, c_prev, dout = _load_saved(aux_ptr, aux_offs, aux_lo, aux_hi, dout_ptr, dout_offs, dout_lo, dout_hi,
                                           stride_dt, H, _step_position(T - 1, T, REVERSE), pos, HAS_DOUT,
                                           PER_COLUMN, PAIRED, PAIRED_DOUT, GATE_PAIRS)
    for n in range(T):
        s = T - 1 - n
        pos_s, valid_s = pos, valid
        i_s, f_s, g_s, o_s, c_prev_s = i, f, g, o, c_prev
        # Step s - 1 = -1 (no such step) reads step 0's position again (discarded).
        s_next = tl.maximum(s - 1, 0)
        pos, valid = _position(s_next, length, seqs, T, HAS_LENGTHS, REVERSE)
        if HAS_DOUT:
            dh_s = dh + dout
        else:
            dh_s = dh
        i, f, g, o, c_prev, dout = _load_saved(aux_ptr, aux_offs, aux_lo, aux_hi, dout_ptr, dout_offs, dout_lo,
                                               dout_hi, stride_dt, H, _step_position(s_next, T, REVERSE), pos,
                                               HAS_DOUT, PER_COLUMN, PAIRED, PAIRED_DOUT, GATE_PAIRS)

        tc = _tanh(f_s * c_prev_s + i_s * g_s, FAST_TANH)
        # The shared products first, and a gate's x·(1 - y) as x - x·y (one FFMA, rounded once) where x
        # is bounded (g, tanh c). Not for c_{t-1}, which can be infinite (an infinite c0): inf - inf
        # would be NaN where stock's c·f(1 - f) is ±inf (static, sm_90a, bf16, H = 128: 323 -> 331 loop
        # instructions per warp for c_{t-1}·(1 - f)).
        dh_o = dh_s * o_s
        dc_s = dc + dh_o * (1.0 - tc * tc)
        dc_i = dc_s * i_s
        dc_f = dc_s * f_s
        da_i = dc_i * (g_s - g_s * i_s)             # dc·g·i(1 - i)
        da_f = dc_f * (c_prev_s * (1.0 - f_s))      # dc·c_{t-1}·f(1 - f)
        da_g = dc_i * (1.0 - g_s * g_s)             # dc·i(1 - g²)
        da_o = dh_o * (tc - tc * o_s)               # dh·tanh(c)·o(1 - o)
        # Zeroed where nothing was processed and in padded rows: an infinite
        # gradient times a zero (masked) gate is NaN, which must not reach the
        # real rows through W_hhᵀ nor be written. (Without lengths every step
        # processes every column: nothing to zero there.)
        if HAS_LENGTHS:
            keep = valid_s[None, :]
            if MASK_H:
                keep = keep & h_rows_ok[:, None]
            da_i = tl.where(keep, da_i, 0.0)
            da_f = tl.where(keep, da_f, 0.0)
            da_g = tl.where(keep, da_g, 0.0)
            da_o = tl.where(keep, da_o, 0.0)
        elif MASK_H:
            da_i = tl.where(h_rows_ok[:, None], da_i, 0.0)
            da_f = tl.where(h_rows_ok[:, None], da_f, 0.0)
            da_g = tl.where(h_rows_ok[:, None], da_g, 0.0)
            da_o = tl.where(h_rows_ok[:, None], da_o, 0.0)
        if PER_COLUMN:
            dxp_at = dxp_ptr + (pos_s * (4 * H))[None, :]
        else:
            dxp_at = dxp_ptr + _step_position(s, T, REVERSE).to(tl.int64) * (4 * H)
        _store_units(dxp_at, dxp_offs, dxp_lo, dxp_hi, da_i, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
        _store_units(dxp_at + H, dxp_offs, dxp_lo, dxp_hi, da_f, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
        _store_units(dxp_at + 2 * H, dxp_offs, dxp_lo, dxp_hi, da_g, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)
        _store_units(dxp_at + 3 * H, dxp_offs, dxp_lo, dxp_hi, da_o, h_mask, lo_mask, hi_mask, PAIRED, GATE_PAIRS)

        if JOIN_GATES:
            da = _join_gates(da_i, da_f, da_g, da_o, BLOCK_H, BLOCK_B)
            dh_new = _mm(w_t, w_t_lo, da.to(OPERAND_DTYPE), zero, PRECISION)
        else:
            dh_new = _mm(w_i, w_i_lo, da_i.to(OPERAND_DTYPE), zero, PRECISION)
            dh_new = _mm(w_f, w_f_lo, da_f.to(OPERAND_DTYPE), dh_new, PRECISION)
            dh_new = _mm(w_g, w_g_lo, da_g.to(OPERAND_DTYPE), dh_new, PRECISION)
            dh_new = _mm(w_o, w_o_lo, da_o.to(OPERAND_DTYPE), dh_new, PRECISION)
        if HAS_LENGTHS:
            # Steps that processed nothing were identities: dh and dc pass through.
            dh = tl.where(valid_s[None, :], dh_new, dh)
            dc = tl.where(valid_s[None, :], dc_f, dc)
        else:
            dh = dh_new
            dc = dc_f

    tl.store(dh0_ptr + seqs[None, :] * H + units[:, None], dh, mask=h_mask)
    tl.store(dc0_ptr + seqs[None, :] * H + units[:, None], dc, mask=h_mask)


# ----------------------------------------------------------------------------
# Host side: the layer contract
# ----------------------------------------------------------------------------

def smem_bytes(dtype, block_h, allow_tf32, *, store_saved=False, backward=False, block_o=0):
    """Shared memory one program needs, in bytes: what decides whether a configuration launches.

    ``store_saved`` and ``backward`` name the mode, as every kernel module's
    smem_bytes takes them; one bound covers every mode here.

    W_hh's four [BLOCK_H, BLOCK_H] gate blocks stay resident for the whole
    loop (twice, hi and lo, for "tf32x3"). Beside them Triton stages the
    step's MMA operand (the forward's h, the backward's four da stacked) and
    what crosses layouts: never more than one fp32 [4·BLOCK_H, BLOCK_B] tile
    (twice for "tf32x3", the backward's da split hi and lo) plus 1 KiB in
    Triton 3.6's sm_90 builds of both kernels at BLOCK_H = 16 … 128, H padded
    or not, bf16, fp16 and fp32 (TF32 and 3xTF32), with and without saving,
    on the warps _num_warps picks or the other choice (at most exactly that
    tile, twice: 3xTF32 backward at 64). The weights take 4x what they do for
    an Elman cell, so fp32 stops at BLOCK_H = 64 and bf16/fp16 at 128.
    ``block_o``: the padded output size of a fused head (0: none), counted on
    top (rnn_linear.head_smem_bytes). Always the GPU's figure, also under the
    interpreter.
    """
    prec = precision(dtype, allow_tf32, interpreted=False)
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    weights = item * copies * GATES * block_h * block_h
    staged = copies * 4 * GATES * block_h * BLOCK_B
    return weights + staged + 1024 + rnn_linear.head_smem_bytes(prec, dtype, block_h, block_o)


def _num_warps(prec, block_h, padded, backward, store_saved=False):
    """Warps per program: the fewest issue slots per SM sub-partition without spills (sm_90, Triton 3.6).

    Up to BLOCK_H = 64 one warpgroup (4 warps): 8 warps take more slots there
    (bf16 at 64: forward 348 against 257, backward 392 against 290; 3xTF32
    backward 2646 against 1250), except with H padded (``padded``) in the
    forward that saves for the backward and in the backward, which spill on 4
    warps at 64 (training forward 20 to 144 B at H = 40, 50 and 63, with spill
    loads in the loop; backward 4 to 132 B at H = 63, 8 B with 3xTF32 at 40
    and 50). At 128 two warpgroups, each running half of the [4H, H] product:
    bf16 forward 566 slots against 620 on 4 warps, whose wgmma descriptors
    outgrow the uniform registers (256 B of spills); training forward 730
    against 767, backward 722 against 770.
    """
    if block_h >= 128 or (block_h >= 64 and padded and (backward or store_saved)):
        return 8
    return 4


def _join_gates_in_backward(prec, block_h, padded):
    """Whether the backward forms dh = Σ_k W_kᵀ·da_k as one product over the four gates' stacked da.

    Its operand then crosses shared memory once per step instead of four times (sm_90, Triton 3.6,
    bf16 at H = 128: 2 barriers per step instead of 8; loop 361 instructions per warp against 356,
    the wgmma descriptors of the one K = 4·BLOCK_H product cost more uniform-register arithmetic;
    bf16 at BLOCK_H = 32 30% fewer, at 64 9%, TF32 at 32 41 to 44%, at 64 5%, 3xTF32 at 64 23%).
    Not where the stacked tiles spill and four products do not, or take more instructions: 3xTF32 at
    BLOCK_H = 32 (1228 against 1006 at H = 32; 1425 and 16 B of spills against 1162 at 20), and H
    padded to 128 (``padded``: bf16 at H = 100 56 B of spills against none, 471 instructions
    against 477).
    """
    return not ((prec == "tf32x3" and block_h == 32) or (padded and block_h == 128))


def _weights_in_registers(prec, warps, block_h, hidden_size, *, forward_spills):
    """Whether a kernel holds W_hh in registers for the whole loop: rnn_linear.weights_in_registers,
    except for the forwards that then run out of registers (``forward_spills``: padded H, and the
    training forward in reverse with lengths, see _forward_weights_in_registers).

    In shared memory a step streams all of W_hh into wgmma (rnn_linear.streamed_bytes; 128 KiB at
    H = 128 in bf16). Static, sm_90a, triton 3.6, B64 T1024: at H = 128 (8 warps) the bf16 forward
    takes 478 issue slots per step in registers against 566, the training forward 690 against 730
    (fp16; 4 B spilled, one local load a step) and 844 against 856 with lengths, the backward 646
    against 722; at H = 64 the TF32 training forward 302 against 369 (381 against 437 with lengths,
    8 B spilled, two local loads a step), bf16's 314 against 341; at H = 100 (padded) the backward
    834 against 954 without spills, but the forwards spilled 312 B (inference) and 398 B (training:
    60 local loads a step)."""
    placed = rnn_linear.weights_in_registers(prec, warps, (GATES * block_h, block_h), hidden_size=hidden_size)[0]
    return placed and not forward_spills


def _forward_weights_in_registers(prec, block_h, hidden_size, store_saved, reverse=False, has_lengths=False):
    """W_IN_REGISTERS of the forward kernel (its warps as _num_warps gives them): not at a padded H,
    nor in the training forward that runs in reverse with lengths (a bidirectional LSTM over packed
    sequences), which spills there (static, sm_90a, triton 3.6, B64 T1024: bf16 at H = 128 1086 issue
    slots a step with 65 local loads and 16 stores against 978 with W_hh in shared memory; TF32 at
    H = 64 491 with 52 loads and 12 stores against 501)."""
    padded = hidden_size != block_h
    warps = _num_warps(prec, block_h, padded, backward=False, store_saved=store_saved)
    spills = padded or (store_saved and reverse and has_lengths)
    return _weights_in_registers(prec, warps, block_h, hidden_size, forward_spills=spills)


def _backward_weights_in_registers(prec, block_h, hidden_size):
    """W_IN_REGISTERS of the backward kernel."""
    warps = _num_warps(prec, block_h, hidden_size != block_h, backward=True)
    return _weights_in_registers(prec, warps, block_h, hidden_size, forward_spills=False)


def streamed_weight_bytes(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """Bytes of W_hh a step of the kernels this call launches reads from shared memory, the most of its
    forward and (``needs_grad``) backward (rnn_linear.streamed_bytes): 3xTF32, odd H, and the forwards
    at a padded H (where _weights_in_registers keeps W_hh in shared memory to avoid spills). Counted
    for the forward direction without lengths: a request names neither, and the training forward in
    reverse with lengths keeps W_hh in shared memory too (a bidirectional LSTM over packed sequences).
    """
    _check_cell(cell)
    prec = precision(dtype, allow_tf32, interpreted=False)
    block_h = block(hidden_size)
    tile = (GATES * block_h, block_h)
    streamed = rnn_linear.streamed_bytes(
        prec, dtype, _forward_weights_in_registers(prec, block_h, hidden_size, needs_grad), tile)
    if needs_grad:
        held = _backward_weights_in_registers(prec, block_h, hidden_size)
        streamed = max(streamed, rnn_linear.streamed_bytes(prec, dtype, held, tile))
    return streamed


def _gate_pairs(prec, block_h, warps, backward):
    """Whether the per-step accesses of the per-gate [BLOCK_H, BLOCK_B] tiles (the forward's out, hs and
    aux stores; the backward's aux and dout loads and dxp stores) move two units at once (sm_90, Triton 3.6).

    Splitting a tile into its pairs (tile_io.pairs_from_rows) is free where rows m and m + 8 share a
    thread. In the forward's gates that holds where _split_gates stays in registers: when each gate's
    BLOCK_H rows span the 16 rows of every warp (BLOCK_H ≥ 16·warps). Elsewhere the split already
    crosses shared memory, and the pairs cost another round trip: bf16 training forward at H = 20
    298 slots and 6 barriers against 240 and 4 unit by unit, at H = 50 (8 warps) 656 against 496;
    at BLOCK_H ≥ 16·warps pairs save 26 to 140 slots (bf16 at 64: 341 against 372; at 128: 730
    against 824; at 100: 976 against 1116). The backward's tiles pair in every layout measured
    (bf16 at H = 20: 278 slots against 340, at 128 722 against 854), except 3xTF32 on 8 warps
    (H padded to 64; at H = 50: 18 barriers and 28 B of spills against 8 and none).
    """
    if backward:
        return not (prec == "tf32x3" and warps == 8)
    return block_h >= 16 * warps


def unsupported_reason(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """A sentence saying why these kernels cannot launch this configuration, or None if they can.

    needs_grad changes nothing: one shared-memory bound covers both kernels (see smem_bytes).
    """
    if cell != "lstm":
        return f"fused_rnn.kernels.lstm runs the 'lstm' cell, got {cell!r}"
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"the LSTM kernels take float32, float16 or bfloat16, got {dtype}"
    block_h = block(hidden_size)
    if block_h > rnn_linear.MAX_BLOCK:
        return f"the LSTM kernels hold hidden sizes up to {rnn_linear.MAX_BLOCK}, got hidden_size={hidden_size}"
    need = smem_bytes(dtype, block_h, allow_tf32)
    if need > SMEM_LIMIT:
        return (f"hidden_size={hidden_size} in {str(dtype).removeprefix('torch.')} with "
                f"{precision(dtype, allow_tf32, interpreted=False)} products needs {need} B of shared memory "
                f"per block for the LSTM's four W_hh blocks, more than the {SMEM_LIMIT} B a Hopper block may use")
    return None


def _check_cell(cell):
    if cell != "lstm":
        raise ValueError(f"fused_rnn.kernels.lstm runs the 'lstm' cell, got {cell!r}")


def _fast_tanh(prec):
    return not INTERPRETED and prec in ("tf32", "low")


def _halve_sigmoid_rows(w_hh):
    """W_hh with the rows of gates i, f and o halved: the forward kernel's product is then a/2 for them.

    Exact (a power of two) in every dtype down to its smallest normal number,
    and so is the product: h·(w/2) = (h·w)/2 and fp32 sums of halved terms
    round as the whole ones do.
    """
    H = w_hh.shape[1]
    w = w_hh.reshape(GATES, H, H).clone()
    w[[0, 1, 3]] *= 0.5
    return w.reshape(GATES * H, H)


def recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, allow_tf32, store_out=True,
                   store_saved=False, head=None, wrap=None):
    """The contract's forward (see /fused_rnn/cells/__init__.py): (out, h_n, c_n, hs, aux).

    aux: [B, T, 5H] fp32, the activated gates i, f, g, o and c_{t-1} per position (0 past a length).
    With a ``head`` (fc_w [O, H], fc_b [O] or None, contiguous; store_out False) the first result
    is y = h_n fc_wᵀ + fc_b [B, O] instead of out.
    """
    _check_cell(cell)
    B, T, _ = xp.shape
    H = w_hh.shape[1]
    new_empty = rnn_linear.new_empty
    out = new_empty((B, T, H), device=xp.device, dtype=xp.dtype) if store_out else None
    h_n = new_empty((B, H), device=xp.device, dtype=xp.dtype)
    c_n = new_empty((B, H), device=xp.device, dtype=xp.dtype)
    hs = new_empty((B, T, H), device=xp.device, dtype=torch.float32) if store_saved else None
    aux = new_empty((B, T, AUX_BLOCKS * H), device=xp.device, dtype=torch.float32) if store_saved else None
    fc_w, fc_b, y = rnn_linear.head_outputs(head, xp, store_out)
    if T == 0:
        # No step: the states pass through (the kernel would prefetch position 0, which does not exist).
        set_state(h_n, h0)
        set_state(c_n, c0)
        return rnn_linear.head_of_state(head, h_n, out), h_n, c_n, hs, aux
    block_h = block(H)
    prec = precision(xp.dtype, allow_tf32)
    warps = _num_warps(prec, block_h, H != block_h, backward=False, store_saved=bool(store_saved))
    w_hh = _halve_sigmoid_rows(w_hh)
    O = 0 if y is None else y.shape[1]
    weights = operand_weights(prec, w_hh, *([fc_w] if head else []), wrap=wrap)
    (w_hh, w_hh_lo), (fc_w, fc_w_lo) = weights[0], weights[1] if head else (None, None)
    aligned = xp.stride(0) % 16 == 0 and xp.stride(1) % 16 == 0
    _launch(
        _lstm_fwd_kernel if aligned else _lstm_fwd_kernel_any_stride, (cdiv(B, BLOCK_B),), wrap,
        xp, w_hh, w_hh_lo, b_hh, h0, c0, lengths, fc_w, fc_w_lo, fc_b,
        out, h_n, c_n, hs, aux, y,
        B, T, H, O,
        xp.stride(0), xp.stride(1), xp.stride(2),
        h0.stride(0) if h0 is not None else 0, h0.stride(1) if h0 is not None else 0,
        c0.stride(0) if c0 is not None else 0, c0.stride(1) if c0 is not None else 0,
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_O=block(O),
        HAS_H0=h0 is not None, HAS_C0=c0 is not None, HAS_LENGTHS=lengths is not None,
        HAS_B_HH=b_hh is not None, REVERSE=bool(reverse), STORE_OUT=bool(store_out),
        STORE_SAVED=bool(store_saved), HAS_HEAD=head is not None, HAS_FC_B=fc_b is not None,
        MASK_H=H != block_h, FAST_TANH=_fast_tanh(prec),
        PAIRED=H % 2 == 0, PAIRED_XP=H % 2 == 0 and tile_io.pairs_fit(xp),
        GATE_PAIRS=_gate_pairs(prec, block_h, warps, backward=False),
        W_IN_REGISTERS=_forward_weights_in_registers(prec, block_h, H, bool(store_saved), bool(reverse),
                                                     lengths is not None),
        PRECISION=prec, OPERAND_DTYPE=rnn_linear._operand_dtype(xp.dtype, prec),
        num_warps=warps,
    )
    return (y if head else out), h_n, c_n, hs, aux


def recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, *, reverse, allow_tf32,
                   wrap=None):
    """The contract's backward: (dxp, dgh, dh0, dc0), dgh the same tensor as dxp (∂L/∂xp = ∂L/∂gh).

    Reads aux (gates and c_{t-1}, see recurrence_fwd); hs, b_hh, h0 and c0 are
    not needed here (the caller's weight-gradient GEMMs use hs and h0).
    """
    _check_cell(cell)
    B, T, H = hs.shape
    new_empty = rnn_linear.new_empty
    dxp = new_empty((B, T, GATES * H), device=aux.device, dtype=torch.float32)
    dh0 = new_empty((B, H), device=aux.device, dtype=torch.float32)
    dc0 = new_empty((B, H), device=aux.device, dtype=torch.float32)
    if T == 0:
        set_state(dh0, dh_n)
        set_state(dc0, dc_n)
        return dxp, dxp, dh0, dc0
    block_h = block(H)
    prec = precision(w_hh.dtype, allow_tf32)
    warps = _num_warps(prec, block_h, H != block_h, backward=True)
    (w_hh, w_hh_lo), = operand_weights(prec, w_hh, wrap=wrap)
    _launch(
        _lstm_bwd_kernel, (cdiv(B, BLOCK_B),), wrap,
        aux, w_hh, w_hh_lo, dout, dh_n, dc_n, lengths,
        dxp, dh0, dc0,
        B, T, H,
        *(dout.stride() if dout is not None else (0, 0, 0)),
        *(dh_n.stride() if dh_n is not None else (0, 0)),
        *(dc_n.stride() if dc_n is not None else (0, 0)),
        BLOCK_B=BLOCK_B, BLOCK_H=block_h,
        HAS_DOUT=dout is not None, HAS_DHN=dh_n is not None, HAS_DCN=dc_n is not None,
        HAS_LENGTHS=lengths is not None, REVERSE=bool(reverse), MASK_H=H != block_h,
        FAST_TANH=_fast_tanh(prec), JOIN_GATES=_join_gates_in_backward(prec, block_h, H != block_h),
        PAIRED=H % 2 == 0 and tile_io.pairs_fit(aux),
        PAIRED_DOUT=dout is not None and H % 2 == 0 and tile_io.pairs_fit(dout),
        GATE_PAIRS=_gate_pairs(prec, block_h, warps, backward=True),
        W_IN_REGISTERS=_backward_weights_in_registers(prec, block_h, H),
        PRECISION=prec, OPERAND_DTYPE=rnn_linear._operand_dtype(w_hh.dtype, prec),
        num_warps=warps,
    )
    return dxp, dxp, dh0, dc0
