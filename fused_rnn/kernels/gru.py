"""Triton kernels of the layer contract (fused_rnn/cells/__init__.py) for the GRU cell.

One program per tile of ``BLOCK_B`` sequences walks the recurrence, gates r, z, n as torch.nn.GRU::

    gh_t = W_hh h_{t-1} + b_hh                       (three [H, H] gate blocks: gh_r, gh_z, gh_n)
    r = σ(xp_r + gh_r)    z = σ(xp_z + gh_z)    n = tanh(xp_n + r ⊙ gh_n)
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

with xp = x W_ihᵀ + b_ih computed by the caller. As in kernels/rnn_linear.py (whose helpers are
reused) everything is transposed: the state is ``hᵀ`` [BLOCK_H, BLOCK_B] in fp32 registers, W_hh is
the MMAs' A operand (the r and z blocks stacked as one [2·BLOCK_H, BLOCK_H] tile, the n block as
another; M ≥ H: wgmma on Hopper at H ≥ 64), loaded once before the loop into registers where it
fits (see weights_in_registers), else into shared memory, and xp_{t+1}'s gate tiles are loaded
during step t. Every tile's rows hold the hidden units in tile_io.paired_units order, so that the
loop's global accesses move two adjacent units each. Where H is padded (``MASK_H``) the padded rows of
the state (forward) and of ∂L/∂gh (backward) are forced to 0 every step: an infinite value times a
padded (zero) weight is NaN, which would otherwise reach real rows through W_hh.

The backward walks the processing order in reverse and writes ∂L/∂xp and ∂L/∂gh (they differ in the
n block by the factor r); the weight gradients are GEMMs over all steps, done by the caller.

Positions: the forward's step s processes position ``p = s`` (``p = len_b - 1 - s`` when
``reverse``) while s < len_b; at steps s ≥ len_b it writes 0 at position s, so every position of
every output is written exactly once whatever the direction.
"""

import torch
import triton
import triton.language as tl

from . import rnn_linear, tile_io
from .rnn_linear import (BLOCK_B, FP32_OPERANDS, INTERPRETED, MAX_BLOCK, SMEM_LIMIT, _fused_head, _launch,
                         _load_gates, cdiv, _load_state, _mm, _operand_dtype, _sigmoid_of_half, _tanh, block,
                         precision, operand_weights, set_state)

CELL = "gru"
GATES = 3
# recurrence_fwd takes ``head=``: a Linear on h_n after the loop (rnn_linear.head_unsupported_reason).
FUSED_HEAD = True
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# aux [B, T, AUX_ROWS·H] fp32, saved by the forward for the backward: the gates r and z and the
# three factors the backward multiplies by (so it reads neither hs nor n nor gh_n):
#   a = (1 - z)(1 - n²) = ∂h_t/∂n_pre,  q = gh_n·r(1 - r) = ∂n_pre/∂r_pre,
#   c = (h_{t-1} - n)·z(1 - z) = ∂h_t/∂z_pre.
AUX_R, AUX_Z, AUX_A, AUX_Q, AUX_C = (tl.constexpr(i) for i in range(5))
AUX_ROWS = tl.constexpr(5)


# ----------------------------------------------------------------------------
# Device helpers
# ----------------------------------------------------------------------------

@triton.jit
def _bias_tile(b_ptr, gate, offs_h, H, HAS_B: tl.constexpr, BLOCK_B: tl.constexpr):
    """[BLOCK_H, BLOCK_B] fp32 tile of gate ``gate``'s bias ``b[gate·H + offs_h]`` repeated over the columns
    (0 without a bias)."""
    tile = tl.zeros([offs_h.shape[0], BLOCK_B], dtype=tl.float32)
    if HAS_B:
        tile += tl.load(b_ptr + gate * H + offs_h, mask=offs_h < H, other=0.0).to(tl.float32)[:, None]
    return tile


@triton.jit
def _load_rows(ptrs, hi_ptrs, PAIRED: tl.constexpr, IN_PLACE: tl.constexpr):
    """An fp32 tile. IN_PLACE: tile_io.load_pairs (``ptrs``: the pairs' lo units, ``hi_ptrs``: their hi
    units; rows in tile_io.paired_units order); else tl.load (tile_io.load with IN_PLACE=False) of the
    whole tile at ``ptrs`` (``hi_ptrs`` unused)."""
    if IN_PLACE:
        tile = tile_io.load_pairs(ptrs, hi_ptrs, PAIRED)
    else:
        tile = tile_io.load(ptrs, False).to(tl.float32)
    return tile


@triton.jit
def _load_step(aux_step, aux_offs, aux_hi, row_h, dout_step, dout_offs, dout_hi, HAS_DOUT: tl.constexpr,
               PAIRED: tl.constexpr, DOUT_PAIRED: tl.constexpr, IN_PLACE: tl.constexpr):
    """What the backward reads for one step: r, z, a, q, c from aux (see AUX_ROWS) and dout (0.0 without
    HAS_DOUT), fp32 tiles, through _load_rows at the step's pointers plus the lo/hi offsets."""
    aux_at = aux_step + aux_offs
    aux_at_hi = aux_step + aux_hi
    r = _load_rows(aux_at + AUX_R * row_h, aux_at_hi + AUX_R * row_h, PAIRED, IN_PLACE)
    z = _load_rows(aux_at + AUX_Z * row_h, aux_at_hi + AUX_Z * row_h, PAIRED, IN_PLACE)
    a = _load_rows(aux_at + AUX_A * row_h, aux_at_hi + AUX_A * row_h, PAIRED, IN_PLACE)
    q = _load_rows(aux_at + AUX_Q * row_h, aux_at_hi + AUX_Q * row_h, PAIRED, IN_PLACE)
    c = _load_rows(aux_at + AUX_C * row_h, aux_at_hi + AUX_C * row_h, PAIRED, IN_PLACE)
    if HAS_DOUT:
        do = _load_rows(dout_step + dout_offs, dout_step + dout_hi, DOUT_PAIRED, IN_PLACE)
    else:
        do = 0.0
    return r, z, a, q, c, do


@triton.jit
def _store_rows(ptrs, hi_ptrs, value, mask, hi_mask, PAIRED: tl.constexpr, IN_PLACE: tl.constexpr):
    """Stores a tile: IN_PLACE as tile_io.store_pairs, else tl.store (tile_io.store with IN_PLACE=False)
    of the whole tile at ``ptrs`` where ``mask`` (``hi_ptrs``, ``hi_mask`` unused)."""
    if IN_PLACE:
        tile_io.store_pairs(ptrs, hi_ptrs, value, mask, hi_mask, PAIRED)
    else:
        tile_io.store(ptrs, value, mask, False)


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------

def _gru_fwd(
    xp_ptr, w_hh_ptr, w_hh_lo_ptr, b_hh_ptr, h0_ptr, lengths_ptr, fc_w_ptr, fc_w_lo_ptr, fc_b_ptr,
    out_ptr, hn_ptr, hs_ptr, aux_ptr, y_ptr,
    B, T, H, O,
    stride_xb, stride_xt, stride_xg,
    stride_h0b, stride_h0h,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    HAS_B_HH: tl.constexpr, HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    STORE_OUT: tl.constexpr, STORE_SAVED: tl.constexpr, HAS_HEAD: tl.constexpr, HAS_FC_B: tl.constexpr,
    MASK_H: tl.constexpr, PAIRED: tl.constexpr, XP_PAIRED: tl.constexpr, W_IN_REGISTERS: tl.constexpr,
    FAST_TANH: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    """xp: [B, T, 3H] (strides given); out: [B, T, H] xp's dtype; hn: [B, H] xp's dtype;
    hs: [B, T, H] fp32 and aux: [B, T, 5H] fp32 (see AUX_ROWS), written when STORE_SAVED;
    y: [B, O] = h_n fc_Wᵀ + fc_b, written when HAS_HEAD (rnn_linear._fused_head).
    PAIRED: H is even (out, hs, aux take two units per access); XP_PAIRED: xp does too (see tile_io.pairs_fit)."""
    pid = tl.program_id(0)
    # Columns are sequences. int64: B·T·3H may pass 2³¹.
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    # Row m of every [BLOCK_H, ·] tile (state, gates, W_hh's rows and columns) holds unit units[m]
    # (tile_io.paired_units), and row m of the stacked [2·BLOCK_H, ·] r-z tile holds stacked index
    # rz[m] (gate rz[m] // BLOCK_H, unit rz[m] % BLOCK_H: the permutation works in blocks of 16 and
    # never crosses a gate), so that the time loop's accesses move two adjacent units at once.
    units = tile_io.paired_units(BLOCK_H)
    rz = tile_io.paired_units(2 * BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]

    # r and z come from one product with M = 2·BLOCK_H (rows: W_hr, then W_hz), n from its own (r
    # multiplies gh_n): one wgmma sequence and one xp tile fewer per step than three gate products
    # (static, sm_90, bf16, H = 128, 8 warps, no out: 510 issue slots per SM sub-partition per step
    # against 558). rz_rows: the row of W_hh and b_hh behind each row of the stacked tile.
    rz_rows = (rz // BLOCK_H) * H + rz % BLOCK_H
    rz_ok = (rz % BLOCK_H) < H
    # Loop invariants: the gate blocks of W_hh (and their TF32 remainders for "tf32x3", split before
    # this launch: see rnn_linear.split_tf32_weights), in registers or shared memory (W_IN_REGISTERS), columns in
    # units order too: the product's K index is the state's row.
    # (Padded rows of the stacked tile would point at the next gate's real rows: the mask zeroes them.)
    w_rz = _load_gates(w_hh_ptr, H, BLOCK_H, 2, False, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
    w_n = _load_gates(w_hh_ptr + 2 * H * H, H, BLOCK_H, 1, False, True, W_IN_REGISTERS).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_rz_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 2, False, True, W_IN_REGISTERS)
        w_n_lo = _load_gates(w_hh_lo_ptr + 2 * H * H, H, BLOCK_H, 1, False, True, W_IN_REGISTERS)
    else:
        w_rz_lo = w_rz
        w_n_lo = w_n
    # r and z are computed from half their pre-activations (see rnn_linear._sigmoid_of_half): W_hr and
    # W_hz come halved from the launcher, xp_r, xp_z and their biases are halved here.
    b_rz_half = tl.zeros([2 * BLOCK_H, BLOCK_B], dtype=tl.float32)
    if HAS_B_HH:
        b_rz_half += 0.5 * tl.load(b_hh_ptr + rz_rows, mask=rz_ok, other=0.0).to(tl.float32)[:, None]
    b_n = _bias_tile(b_hh_ptr, 2, units, H, HAS_B_HH, BLOCK_B)

    h = _load_state(h0_ptr, seqs, units, stride_h0b, stride_h0h, h_mask, HAS_H0)
    # int32 (lengths ≤ T < 2³¹): the per-step comparisons with s are then one instruction, not two.
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0).to(tl.int32)
    else:
        length = tl.zeros([BLOCK_B], dtype=tl.int32) + T

    # The time loop's tiles move between global memory and the MMA's register layout through
    # tile_io (no shared-memory round trip, no barrier), two adjacent units per access where the
    # pairs are aligned (PAIRED, XP_PAIRED; else two accesses). Addresses: a scalar pointer that
    # moves each step plus loop-invariant offsets of the pairs' lo units 2p and hi units 2p + 1
    # (REVERSE: a pointer per column, the sequences' positions differ). Without MASK_H
    # (H == BLOCK_H) the row offsets are written with BLOCK_H, compile-time constants that fold
    # into the instructions. (Static,
    # sm_90a, H = 128, bf16, against the coalesced tl.load and tl.store: forward 255 -> 230 loop
    # instructions and 6 -> 2 barriers, with the saved tensors 500 -> 413 and 20 -> 2; pairs then
    # took them to 217 and 364, and at H = 100 (padded) 280 -> 241 and 603 -> 467 with no more
    # spill: 21 LDL per step before.)
    #
    # xpᵀ tiles: [2·BLOCK_H, BLOCK_B] for r and z, [BLOCK_H, BLOCK_B] for n; xp_{t+1}'s are loaded
    # during step t, in fp32 (tile_io.load_pairs widens bf16 and fp16 in the load). The loads are
    # unmasked: every address is valid memory of xp (never written here), and what a read past the
    # data returns is discarded, as the masked loads' zeros were before:
    # - columns past B read sequence B - 1; their state and outputs are never stored (h_mask);
    # - padded units (MASK_H) read unit H - 1 of their gate (a pair's lo unit the last even unit
    #   below H, so that an aligned pair stays aligned and inside its gate); the where below forces
    #   h_new there to 0 and the stores skip them (h_mask), so r, z, n of padded rows reach nothing;
    # - steps past a length read a position inside [0, T) (forward: position s + 1, clamped to
    #   T - 1 after the last step; reverse: position 0); step s's h_new is kept only where
    #   s < length, and r, z and the aux factors are stored as 0 there.
    # Every configuration takes tile_io. Before the pairs REVERSE below BLOCK_H = 64 (4 warps hold
    # few rows and many columns each, and every column's position is computed per step) and the
    # stores where H is padded below 64 (rows clamped at H - 1, gates at runtime multiples of H: no
    # offset folds into an instruction) took tl.load and tl.store, for fewer instructions (static,
    # sm_90a, bf16: H = 32 reverse with lengths 289 loop instructions against 221; H = 20 forward
    # 225 against 207). With the pairs tile_io takes about as many or fewer there and 2 to 14
    # barriers fewer per step (static, sm_90a, no lengths, tile_io against tl.load and tl.store:
    # bf16 H = 16 reverse 184 and 4 barriers against 165 and 10, reverse training 315 and 6 against
    # 317 and 20; H = 32 reverse 189 and 6 against 195 and 10, reverse training 334 and 8 against
    # 352 and 20; H = 20 forward 175 and 6 against 181 and 8, training 371 and 8 against 437 and
    # 18, reverse 214 and 6 against 267 and 12; fp32 H = 20 training 251 against 363; odd H = 21,
    # one unit per access: forward 222 and 6 against 206 and 8, reverse training 496 and 8 against
    # 476 and 22).
    seqs_in = tl.minimum(seqs, B - 1)
    # The xp rows read (offset of the unit in xp's last dimension): *_lo of the pairs' lo units,
    # *_hi of their hi units (rz_lo[p] = 2p: the stacked index of the r-z tile's pair p).
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    rz_lo = 2 * tl.arange(0, BLOCK_H)
    if MASK_H:
        last_lo = (H - 1) // 2 * 2
        rz_xp_lo = (rz_lo // BLOCK_H) * H + tl.minimum(rz_lo % BLOCK_H, last_lo)
        rz_xp_hi = (rz_lo // BLOCK_H) * H + tl.minimum(rz_lo % BLOCK_H + 1, H - 1)
        n_xp_lo = 2 * H + tl.minimum(lo_units, last_lo)
        n_xp_hi = 2 * H + tl.minimum(lo_units + 1, H - 1)
    else:
        rz_xp_lo = rz_lo
        rz_xp_hi = rz_lo + 1
        n_xp_lo = 2 * BLOCK_H + lo_units
        n_xp_hi = n_xp_lo + 1
    if REVERSE:
        # Sequences start at different positions (length - 1): a pointer per column that walks back
        # one position per step down to position 0, plus the rows. (The position is widened first:
        # position·stride_xt may pass 2³¹ in a time-major xp.)
        x_col = 0
        first = tl.where(0 < length, length - 1, 0).to(tl.int64)
        xp_step = (xp_ptr + seqs_in * stride_xb + first * stride_xt)[None, :]
    else:
        x_col = seqs_in[None, :] * stride_xb
        xp_step = xp_ptr
    xrz_lo = x_col + rz_xp_lo[:, None] * stride_xg
    xrz_hi = x_col + rz_xp_hi[:, None] * stride_xg
    xn_lo = x_col + n_xp_lo[:, None] * stride_xg
    xn_hi = x_col + n_xp_hi[:, None] * stride_xg
    rz_acc_next = 0.5 * tile_io.load_pairs(xp_step + xrz_lo, xp_step + xrz_hi, XP_PAIRED) + b_rz_half
    xn_next = tile_io.load_pairs(xp_step + xn_lo, xp_step + xn_hi, XP_PAIRED)

    # out, hs and aux: [B, T, ·] contiguous, position p of sequence b at row b·T + p. Offsets and
    # masks of the pairs' lo and hi units.
    if MASK_H:
        row_h = H
    else:
        row_h = BLOCK_H
    store_lo = lo_units[:, None]
    store_hi = store_lo + 1
    if MASK_H:
        lo_mask = (store_lo < H) & seq_ok[None, :]
        hi_mask = (store_hi < H) & seq_ok[None, :]
    else:
        lo_mask = tl.broadcast_to(seq_ok[None, :], [BLOCK_H // 2, BLOCK_B])
        hi_mask = lo_mask
    if REVERSE:
        out_lo = store_lo
        out_hi = store_hi
        aux_lo = store_lo
        aux_hi = store_hi
        seq_rows = seqs * T
    else:
        out_lo = seqs[None, :] * T * row_h + store_lo
        out_hi = seqs[None, :] * T * row_h + store_hi
        aux_lo = seqs[None, :] * T * (AUX_ROWS * row_h) + store_lo
        aux_hi = seqs[None, :] * T * (AUX_ROWS * row_h) + store_hi
        out_step = out_ptr
        hs_step = hs_ptr
        aux_step = aux_ptr
    for s in range(T):
        rz_acc = rz_acc_next
        xn = xn_next
        if REVERSE:
            xp_step -= tl.where(s + 1 < length, stride_xt, 0).to(tl.int64)[None, :]
        else:
            xp_step += tl.where(s + 1 < T, stride_xt, 0)
        rz_acc_next = 0.5 * tile_io.load_pairs(xp_step + xrz_lo, xp_step + xrz_hi, XP_PAIRED) + b_rz_half
        xn_next = tile_io.load_pairs(xp_step + xn_lo, xp_step + xn_hi, XP_PAIRED)

        h_op = h.to(OPERAND_DTYPE)
        # xp_r and xp_z enter as the accumulator (rz_acc: halved, plus the halved biases, prepared
        # with the load a step ahead: 242 -> 230 loop instructions at H = 128, bf16, against here);
        # gh_n must stay apart (r multiplies it).
        rz_gates = _sigmoid_of_half(_mm(w_rz, w_rz_lo, h_op, rz_acc, PRECISION), FAST_TANH)
        r, z = tl.split(tl.permute(tl.reshape(rz_gates, [2, BLOCK_H, BLOCK_B]), [1, 2, 0]))
        gh_n = _mm(w_n, w_n_lo, h_op, b_n, PRECISION)
        n = _tanh(xn + r * gh_n, FAST_TANH)
        h_minus_n = h - n
        h_new = n + z * h_minus_n
        if MASK_H:
            h_new = tl.where(h_rows_ok[:, None], h_new, 0.0)
        valid = (s < length)[None, :]
        # A finished sequence keeps its last state: h_n is the state after its own last step.
        h = tl.where(valid, h_new, h)

        # Where step s writes: its position, or (past the length) position s, with 0.
        if REVERSE:
            # Pointers per column at row (sequence, position) of [B·T, ·].
            at = (seq_rows + tl.where(s < length, length - 1 - s, s))[None, :]
            if STORE_OUT:
                out_step = out_ptr + at * row_h
            if STORE_SAVED:
                hs_step = hs_ptr + at * row_h
                aux_step = aux_ptr + at * (AUX_ROWS * row_h)
        if STORE_OUT:
            tile_io.store_pairs(out_step + out_lo, out_step + out_hi, tl.where(valid, h, 0.0), lo_mask, hi_mask,
                                PAIRED)
        if STORE_SAVED:
            tile_io.store_pairs(hs_step + out_lo, hs_step + out_hi, tl.where(valid, h, 0.0), lo_mask, hi_mask,
                                PAIRED)
            aux_at = aux_step + aux_lo
            aux_at_hi = aux_step + aux_hi
            tile_io.store_pairs(aux_at + AUX_R * row_h, aux_at_hi + AUX_R * row_h, tl.where(valid, r, 0.0),
                                lo_mask, hi_mask, PAIRED)
            tile_io.store_pairs(aux_at + AUX_Z * row_h, aux_at_hi + AUX_Z * row_h, tl.where(valid, z, 0.0),
                                lo_mask, hi_mask, PAIRED)
            tile_io.store_pairs(aux_at + AUX_A * row_h, aux_at_hi + AUX_A * row_h,
                                tl.where(valid, (1.0 - z) * (1.0 - n * n), 0.0), lo_mask, hi_mask, PAIRED)
            tile_io.store_pairs(aux_at + AUX_Q * row_h, aux_at_hi + AUX_Q * row_h,
                                tl.where(valid, gh_n * r * (1.0 - r), 0.0), lo_mask, hi_mask, PAIRED)
            tile_io.store_pairs(aux_at + AUX_C * row_h, aux_at_hi + AUX_C * row_h,
                                tl.where(valid, h_minus_n * z * (1.0 - z), 0.0), lo_mask, hi_mask, PAIRED)
        if not REVERSE:
            if STORE_OUT:
                out_step += row_h
            if STORE_SAVED:
                hs_step += row_h
                aux_step += AUX_ROWS * row_h

    # As the loop's stores: tl.store would convert h's layout through shared memory (static, sm_90a,
    # fp32, H = 128, rows in paired order: 4 barriers after the loop, none this way).
    hn_at = hn_ptr + seqs[None, :] * H
    tile_io.store_pairs(hn_at + store_lo, hn_at + store_hi, h, lo_mask, hi_mask, PAIRED)
    if HAS_HEAD:
        _fused_head(fc_w_ptr, fc_w_lo_ptr, fc_b_ptr, y_ptr, h, units, seqs, seq_ok, H, O, BLOCK_O, HAS_FC_B,
                    PRECISION, OPERAND_DTYPE)


# B and T are never specialized (Triton would compile a new kernel for B = 1, T = 1 and multiples
# of 16). xp's batch and time strides are specialized only in the kernel for xp whose strides are
# both multiples of 16 elements, as in rnn_linear: a contiguous xp's batch stride is T·3H, and
# which kernel runs must not depend on T.
_gru_fwd_kernel = triton.jit(do_not_specialize=["B", "T"])(_gru_fwd)
_gru_fwd_kernel_any_stride = triton.jit(do_not_specialize=["B", "T", "stride_xb", "stride_xt"])(_gru_fwd)


@triton.jit(do_not_specialize=["B", "T", "stride_db", "stride_dt"])
def _gru_bwd_kernel(
    aux_ptr, w_hh_ptr, w_hh_lo_ptr, dout_ptr, dhn_ptr, lengths_ptr,
    dxp_ptr, dgh_ptr, dh0_ptr,
    B, T, H,
    stride_db, stride_dt, stride_dh, stride_dhnb, stride_dhnh,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_DOUT: tl.constexpr, HAS_DHN: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    REVERSE: tl.constexpr, MASK_H: tl.constexpr, PAIRED: tl.constexpr, DOUT_PAIRED: tl.constexpr,
    W_IN_REGISTERS: tl.constexpr, PRECISION: tl.constexpr, OPERAND_DTYPE: tl.constexpr,
):
    """Reverse sweep over the forward's processing order, steps s = T-1 … 0, from the factors in aux::

        dh += dout_p
        dn_pre = dh ⊙ a        dr_pre = dn_pre ⊙ q        dz_pre = dh ⊙ c
        dxp_p = [dr_pre, dz_pre, dn_pre]        dgh_p = [dr_pre, dz_pre, dn_pre ⊙ r]
        dh = W_rᵀ dr_pre + W_zᵀ dz_pre + W_nᵀ (dn_pre ⊙ r) + dh ⊙ z

    At steps past a length dxp and dgh are 0 (at position s) and dh passes unchanged.
    aux: [B, T, 5H] fp32 (see AUX_ROWS); dxp, dgh: [B, T, 3H] fp32; dh0: [B, H] fp32.
    PAIRED: aux, dxp, dgh and dh0 take two units per access (even H); DOUT_PAIRED: dout does too.
    """
    pid = tl.program_id(0)
    seqs = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    seq_ok = seqs < B
    # tile_io (IN_PLACE, see the time loop) reads and writes two adjacent units per access: row m of
    # every [BLOCK_H, ·] tile (dh, the gates' gradients, W_gᵀ's rows and columns) holds unit
    # units[m] (tile_io.paired_units). tl.load and tl.store keep the natural order, whose rows are
    # contiguous.
    IN_PLACE: tl.constexpr = BLOCK_H >= 64 or PAIRED
    if IN_PLACE:
        units = tile_io.paired_units(BLOCK_H)
    else:
        units = tl.arange(0, BLOCK_H)
    h_rows_ok = units < H
    h_mask = h_rows_ok[:, None] & seq_ok[None, :]

    # A_g[m, k] = W_gᵀ[units[m], units[k]] = W_g[units[k], units[m]]: the MMA's A for
    # dh_prev = W_gᵀ · dgh_g (K runs over dgh_g's rows, in units order too).
    # (Reordered in registers only where the rows are paired: see units.)
    W_REG: tl.constexpr = W_IN_REGISTERS and IN_PLACE
    w_r_t = _load_gates(w_hh_ptr, H, BLOCK_H, 1, True, IN_PLACE, W_REG).to(OPERAND_DTYPE)
    w_z_t = _load_gates(w_hh_ptr + H * H, H, BLOCK_H, 1, True, IN_PLACE, W_REG).to(OPERAND_DTYPE)
    w_n_t = _load_gates(w_hh_ptr + 2 * H * H, H, BLOCK_H, 1, True, IN_PLACE, W_REG).to(OPERAND_DTYPE)
    if PRECISION == "tf32x3":
        w_r_t_lo = _load_gates(w_hh_lo_ptr, H, BLOCK_H, 1, True, IN_PLACE, W_REG)
        w_z_t_lo = _load_gates(w_hh_lo_ptr + H * H, H, BLOCK_H, 1, True, IN_PLACE, W_REG)
        w_n_t_lo = _load_gates(w_hh_lo_ptr + 2 * H * H, H, BLOCK_H, 1, True, IN_PLACE, W_REG)
    else:
        w_r_t_lo = w_r_t
        w_z_t_lo = w_z_t
        w_n_t_lo = w_n_t

    # int32 (lengths ≤ T < 2³¹): the per-step comparisons with s are then one instruction, not two.
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + seqs, mask=seq_ok, other=0).to(tl.int32)
    else:
        length = tl.zeros([BLOCK_B], dtype=tl.int32) + T
    dh = _load_state(dhn_ptr, seqs, units, stride_dhnb, stride_dhnh, h_mask, HAS_DHN)

    # The time loop's tiles move between global memory and the MMA's register layout through
    # tile_io, two adjacent units per access where the pairs are aligned (PAIRED, DOUT_PAIRED),
    # addressed as in _gru_fwd (static, sm_90a, H = 128, bf16, against the coalesced tl.load and
    # tl.store: 537 -> 313 loop instructions, 26 -> 6 barriers; pairs and the prefetch's place
    # below then 264, and at H = 100 (padded) 650 -> 420). Step s's factors and dout are loaded
    # during step s + 1, off the dependent chain. The loads are unmasked: every address is valid
    # memory of aux and dout (neither written here), and what a read past the data returns is
    # discarded, as the masked loads' zeros were before:
    # - columns past B read sequence B - 1; nothing of theirs is stored (h_mask);
    # - padded units (MASK_H) read unit H - 1 (a pair's lo unit the last even unit below H, so
    #   that an aligned pair stays aligned); `keep` zeroes dxp, dgh and the MMA operands there and
    #   dout is zeroed there, so dh's padded rows stay 0;
    # - a step past a length (s ≥ length) reads position s (forward: s; reverse: the position it
    #   writes, s) and after step 0 the prefetch reads step 0 again; there `keep` zeroes dxp, dgh
    #   and the MMA operands, and dh keeps its value from before the step (dout is added only to
    #   the step's own copy, dh_in, and dh_prev is discarded by the last where).
    # tile_io (IN_PLACE) except below BLOCK_H = 64 without aligned pairs (odd H: one unit per
    # access), where tl.load and tl.store take fewer instructions (static, sm_90a, bf16, H = 21: 571
    # loop instructions and 6 barriers with tile_io against 457 and 26, reverse 582 against 464).
    # Before the pairs that held wherever H was padded or REVERSE below 64 (H = 20, bf16: 597
    # against 458; H = 32, fp32 with TF32, reverse with lengths: 519 against 446); with them
    # tile_io takes fewer there too (no lengths: H = 20, bf16: 381 and 6 barriers against 457 and
    # 26, reverse 388 against 464, fp32 492 and 2 against 562 and 20; H = 16 reverse, bf16: 279
    # and 1 against 316 and 20; H = 32 reverse, bf16: 264 and 6 against 331 and 26, fp32: 377 and
    # 2 against 411 and 20). From 64 on tile_io wins padded too (H = 100, before the pairs: bf16
    # 1300 slots, 6 barriers, no spill against 1580, 44 and 120 B spilled; fp32 1522, 2, none
    # against 1812, 40, 104 B).
    seqs_in = tl.minimum(seqs, B - 1)
    # The units read and written (stores masked where they are padded): IN_PLACE, rows_in of the
    # pairs' lo units and rows_hi of their hi units; else rows_in of every row and rows_hi unused.
    lo_units = 2 * tl.arange(0, BLOCK_H // 2)
    if IN_PLACE:
        if MASK_H:
            rows_in = tl.minimum(lo_units, (H - 1) // 2 * 2)
            rows_hi = tl.minimum(lo_units + 1, H - 1)
            lo_mask = (lo_units < H)[:, None] & seq_ok[None, :]
            hi_mask = (lo_units + 1 < H)[:, None] & seq_ok[None, :]
        else:
            rows_in = lo_units
            rows_hi = lo_units + 1
            lo_mask = tl.broadcast_to(seq_ok[None, :], [BLOCK_H // 2, BLOCK_B])
            hi_mask = lo_mask
        dh0_rows = lo_units
    else:
        if MASK_H:
            rows_in = tl.minimum(units, H - 1)
            lo_mask = h_mask
        else:
            rows_in = units
            lo_mask = tl.broadcast_to(seq_ok[None, :], [BLOCK_H, BLOCK_B])
        rows_hi = rows_in
        hi_mask = lo_mask
        dh0_rows = units
    if MASK_H:
        row_h = H
    else:
        row_h = BLOCK_H
    dout_step = dout_ptr  # (replaced below with HAS_DOUT; without it _load_step reads no dout)
    if REVERSE or MASK_H:
        # A pointer per column at each step's positions (REVERSE: they differ per sequence), plus
        # the rows. (MASK_H: in the scalar form below the runtime row offsets gave every element
        # a pointer of its own that moved each step: at H = 20 the bf16 backward spilled 160 B.)
        col = 0
        dout_col = 0
        seq_rows = seqs_in * T
    else:
        # Scalar parts at position T - 1 (widened first: (T - 1)·5H in int32 may pass 2³¹), walking
        # back one position per step.
        col = seqs_in[None, :] * T
        dout_col = seqs_in[None, :] * stride_db
        last = T.to(tl.int64) - 1
        aux_step = aux_ptr + last * (AUX_ROWS * row_h)
        dxp_step = dxp_ptr + last * (3 * row_h)
        dgh_step = dgh_ptr + last * (3 * row_h)
        if HAS_DOUT:
            dout_step = dout_ptr + last * stride_dt
    aux_offs = col * (AUX_ROWS * row_h) + rows_in[:, None]
    aux_hi = col * (AUX_ROWS * row_h) + rows_hi[:, None]
    dxp_offs = col * (3 * row_h) + rows_in[:, None]
    dxp_hi = col * (3 * row_h) + rows_hi[:, None]
    dout_offs = dout_col + rows_in[:, None] * stride_dh
    dout_hi = dout_col + rows_hi[:, None] * stride_dh
    # Step T - 1's position (REVERSE: position T - 1 past a length, else length - T = 0).
    if REVERSE:
        pos_next = tl.where(T - 1 < length, length - T, T - 1)
    else:
        pos_next = seqs.to(tl.int32) * 0 + T - 1
    if REVERSE or MASK_H:
        aux_step = aux_ptr + ((seq_rows + pos_next) * (AUX_ROWS * row_h))[None, :]
        if HAS_DOUT:
            dout_step = dout_ptr + (seqs_in * stride_db + pos_next.to(tl.int64) * stride_dt)[None, :]
    r_next, z_next, a_next, q_next, c_next, do_next = _load_step(
        aux_step, aux_offs, aux_hi, row_h, dout_step, dout_offs, dout_hi, HAS_DOUT, PAIRED, DOUT_PAIRED, IN_PLACE)
    for i in range(T):
        s = T - 1 - i
        pos = pos_next
        r = r_next
        z = z_next
        a = a_next
        q = q_next
        c = c_next
        if HAS_DOUT:
            d_out = do_next

        valid = (s < length)[None, :]
        dh_in = dh
        if HAS_DOUT:
            if MASK_H:
                d_out = tl.where(h_rows_ok[:, None], d_out, 0.0)
            dh_in = dh + d_out
        dn_pre = dh_in * a
        dr_pre = dn_pre * q
        dz_pre = dh_in * c
        dgh_n = dn_pre * r
        # Past a length: 0 (dh there may be non-finite, and 0·inf is NaN). Padded rows: 0, so that
        # they cannot reach real rows through W_hhᵀ's zero padding.
        keep = valid
        if MASK_H:
            keep = keep & h_rows_ok[:, None]
        dr_pre = tl.where(keep, dr_pre, 0.0)
        dz_pre = tl.where(keep, dz_pre, 0.0)
        dn_pre = tl.where(keep, dn_pre, 0.0)
        dgh_n = tl.where(keep, dgh_n, 0.0)
        dh_through_z = dh_in * z

        # Prefetch step s - 1 (step 0 again when s = 0), after this step's last use of r, z, a, q,
        # c and dout: the loads then write the registers those held. Placed before, every loaded register
        # pair was copied at the step's end (static, sm_90a, H = 128, bf16: 293 -> 264 loop
        # instructions, 41 -> 13 moves). Where the source puts them changes little else: LLVM
        # sinks the (pure) loads, and ptxas issues 21 of the 24 during the last product, 3 after
        # it, against all 24 during it placed before (and, before the pairs, 48 over the last two).
        if REVERSE or MASK_H:
            s_next = tl.maximum(s - 1, 0)
            if REVERSE:
                pos_next = tl.where(s_next < length, length - 1 - s_next, s_next)
            else:
                pos_next = seqs.to(tl.int32) * 0 + s_next
            aux_step = aux_ptr + ((seq_rows + pos_next) * (AUX_ROWS * row_h))[None, :]
            if HAS_DOUT:
                dout_step = dout_ptr + (seqs_in * stride_db + pos_next.to(tl.int64) * stride_dt)[None, :]
        else:
            back = tl.where(s >= 1, 1, 0)
            aux_step -= back * (AUX_ROWS * row_h)
            if HAS_DOUT:
                dout_step -= back * stride_dt
        r_next, z_next, a_next, q_next, c_next, do_next = _load_step(
            aux_step, aux_offs, aux_hi, row_h, dout_step, dout_offs, dout_hi, HAS_DOUT, PAIRED, DOUT_PAIRED,
            IN_PLACE)

        if REVERSE or MASK_H:
            at = ((seq_rows + pos) * (3 * row_h))[None, :]
            dxp_at = dxp_ptr + at
            dgh_at = dgh_ptr + at
        else:
            dxp_at = dxp_step
            dgh_at = dgh_step
        dxp_lo, dxp_hi_at = dxp_at + dxp_offs, dxp_at + dxp_hi
        dgh_lo, dgh_hi_at = dgh_at + dxp_offs, dgh_at + dxp_hi
        _store_rows(dxp_lo, dxp_hi_at, dr_pre, lo_mask, hi_mask, PAIRED, IN_PLACE)
        _store_rows(dxp_lo + row_h, dxp_hi_at + row_h, dz_pre, lo_mask, hi_mask, PAIRED, IN_PLACE)
        _store_rows(dxp_lo + 2 * row_h, dxp_hi_at + 2 * row_h, dn_pre, lo_mask, hi_mask, PAIRED, IN_PLACE)
        _store_rows(dgh_lo, dgh_hi_at, dr_pre, lo_mask, hi_mask, PAIRED, IN_PLACE)
        _store_rows(dgh_lo + row_h, dgh_hi_at + row_h, dz_pre, lo_mask, hi_mask, PAIRED, IN_PLACE)
        _store_rows(dgh_lo + 2 * row_h, dgh_hi_at + 2 * row_h, dgh_n, lo_mask, hi_mask, PAIRED, IN_PLACE)
        if not (REVERSE or MASK_H):
            dxp_step -= 3 * row_h
            dgh_step -= 3 * row_h

        dh_prev = _mm(w_n_t, w_n_t_lo, dgh_n.to(OPERAND_DTYPE), dh_through_z, PRECISION)
        dh_prev = _mm(w_z_t, w_z_t_lo, dz_pre.to(OPERAND_DTYPE), dh_prev, PRECISION)
        dh_prev = _mm(w_r_t, w_r_t_lo, dr_pre.to(OPERAND_DTYPE), dh_prev, PRECISION)
        dh = tl.where(valid, dh_prev, dh)

    # As the loop's stores: tl.store would convert dh's layout through shared memory (static,
    # sm_90a, bf16, H = 128: 2 barriers after the loop, none this way).
    dh0_at = dh0_ptr + seqs[None, :] * H + dh0_rows[:, None]
    _store_rows(dh0_at, dh0_at + 1, dh, lo_mask, hi_mask, PAIRED, IN_PLACE)


# ----------------------------------------------------------------------------
# Host side: limits and launches. Inputs are assumed already checked by the caller (shapes,
# dtypes, devices); w_hh must be contiguous.
# ----------------------------------------------------------------------------

def _check_cell(cell):
    if cell != CELL:
        raise ValueError(f"fused_rnn.kernels.gru runs the cell {CELL!r}, got {cell!r}")


def num_warps(block_h, prec, train):
    """Warps per program, the choice with the fewest issue slots per SM sub-partition per step and no spills
    (static, sm_90, triton 3.6, B64 T1024): 4 up to H = 64 (bf16 forward at H = 64, measured with W_hh
    in shared memory: 245 against 358 with 8), 8 from H = 128 (bf16 forward: 362 against 464 with 4,
    where W_hh passes the register budget of rnn_linear.weights_in_registers; with 4 the fp32 backward
    spilled 24 B). With 8 each sub-partition also has a second warp to issue from while one waits on a
    step's loads or MMA. 3xTF32 (two tiles per operand) when
    training takes 8 at every H: with 4 the training forward at H = 16 and the backward at H = 64
    spilled 8 B.
    """
    return 8 if block_h >= 128 or (prec == "tf32x3" and train) else 4


def weights_in_registers(prec, warps, block_h, hidden_size):
    """Whether the kernel holds W_hh in registers for the whole loop: rnn_linear.weights_in_registers
    for its three gate blocks."""
    placed = rnn_linear.weights_in_registers(prec, warps, *((block_h, block_h),) * GATES, hidden_size=hidden_size)
    return placed[0]


def streamed_weight_bytes(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """Bytes of W_hh a step reads from shared memory (rnn_linear.streamed_bytes): fp32 with TF32 at
    BLOCK_H = 128 (three 64 KiB blocks, past the register budget), 3xTF32, odd H.

    Training (``needs_grad``) launches both kernels on num_warps(..., train=True), so they place W_hh alike.
    """
    _check_cell(cell)
    prec = precision(dtype, allow_tf32, interpreted=False)
    block_h = block(hidden_size)
    held = weights_in_registers(prec, num_warps(block_h, prec, needs_grad), block_h, hidden_size)
    return rnn_linear.streamed_bytes(prec, dtype, held, *((block_h, block_h),) * GATES)


def smem_bytes(dtype, block_h, allow_tf32, *, store_saved=False, backward=False, block_o=0):
    """Shared memory one program needs, in bytes: what decides whether a configuration launches.

    ``store_saved`` and ``backward`` name the mode, as every kernel module's
    smem_bytes takes them; one bound covers every mode here.

    The three gate blocks of W_hh stay resident (twice, hi and lo, for "tf32x3"); beside them Triton
    stages the step's MMA operands and the layout conversions of what is loaded and stored each step
    (the time loop's tiles mostly go through tile_io, which stages nothing): at most 4 fp32
    [BLOCK_H, BLOCK_B] tiles, 6 for "tf32x3" below H = 64 (mma.sync stages b_hi and b_lo apart), in
    every configuration compiled for sm_90 with triton 3.6 (H = 16, 20, 32, 64, 128; fp32 with TF32
    and 3xTF32, bf16, fp16; forward and reverse, with and without lengths; forward with and without
    the saved tensors, and backward). The figure is never below Triton's there, at most 14 KiB above
    it up to H = 64 and 28% above at H = 128 (bf16: 131072 B against 102400). It lets fp32 with TF32
    at H = 128 launch (backward: Triton's 221184 B of 232448) and refuses 3xTF32 at H = 128 and
    bf16/fp16 at H = 256, whose weights alone pass the limit. ``block_o``: the padded output size
    of a fused head (0: none), counted on top (rnn_linear.head_smem_bytes). Always the GPU's figure,
    also under the interpreter, so that what launches does not depend on where it is tested.
    """
    prec = precision(dtype, allow_tf32, interpreted=False)
    item = 4 if prec in FP32_OPERANDS else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    staged_tiles = 6 if prec == "tf32x3" and block_h < 64 else 4
    return (item * copies * GATES * block_h * block_h + staged_tiles * 4 * block_h * BLOCK_B
            + rnn_linear.head_smem_bytes(prec, dtype, block_h, block_o))


def unsupported_reason(cell, dtype, hidden_size, allow_tf32, needs_grad):
    """Why these kernels cannot launch this configuration (a sentence), or None if they can.

    ``needs_grad`` changes nothing: the training forward and the backward need what the forward does
    (see smem_bytes).
    """
    _check_cell(cell)
    if dtype not in KERNEL_DTYPES:
        return f"the Triton GRU kernels take float32, float16 or bfloat16, got {dtype}"
    if block(hidden_size) > MAX_BLOCK:
        return f"the Triton GRU kernel holds hidden sizes up to {MAX_BLOCK}, got hidden_size={hidden_size}"
    need = smem_bytes(dtype, block(hidden_size), allow_tf32)
    if need > SMEM_LIMIT:
        return (f"the GRU kernels at hidden_size={hidden_size} in {str(dtype).removeprefix('torch.')} with "
                f"{precision(dtype, allow_tf32, interpreted=False)} products need {need} B of shared memory "
                f"per block, more than the {SMEM_LIMIT} B a Hopper block may use")
    return None


def _halve_rz(w_hh):
    """W_hh with its r and z blocks halved, as the forward kernel takes it (see rnn_linear._sigmoid_of_half).

    A power-of-two scaling is exact (for weights above 2^-125, below which a bf16/fp32 weight loses a
    bit), so the kernel's σ(2u) is σ of the same pre-activation; it saves the kernel a multiply per
    gate element per step (32 of the ~590 issue slots per step at H = 128).
    """
    H = w_hh.shape[1]
    return torch.cat([w_hh[:2 * H] * 0.5, w_hh[2 * H:]])


def recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, allow_tf32, store_out=True,
                   store_saved=False, head=None, wrap=None):
    """The layer contract's forward for the GRU (see fused_rnn/cells/__init__.py); c0 is ignored.

    Returns (out [B, T, H] xp.dtype or None, h_n [B, H] xp.dtype, None, hs [B, T, H] fp32 or None,
    aux [B, T, 5H] fp32 (see AUX_ROWS) or None); with a ``head`` (fc_w [O, H], fc_b [O] or None,
    contiguous; store_out False) the first result is y = h_n fc_wᵀ + fc_b [B, O] instead.
    """
    _check_cell(cell)
    B, T, _ = xp.shape
    H = w_hh.shape[1]
    new_empty = rnn_linear.new_empty   # looked up per call: the tests poison it
    out = new_empty((B, T, H), device=xp.device, dtype=xp.dtype) if store_out else None
    h_n = new_empty((B, H), device=xp.device, dtype=xp.dtype)
    hs = new_empty((B, T, H), device=xp.device, dtype=torch.float32) if store_saved else None
    aux = new_empty((B, T, AUX_ROWS.value * H), device=xp.device, dtype=torch.float32) if store_saved else None
    fc_w, fc_b, y = rnn_linear.head_outputs(head, xp, store_out)
    if T == 0:
        # No step: h_n is h0. (The kernel's loads are unmasked and it prefetches position 0, which does not exist.)
        set_state(h_n, h0)
        return rnn_linear.head_of_state(head, h_n, out), h_n, None, hs, aux
    block_h = block(H)
    prec = precision(xp.dtype, allow_tf32)
    w_hh = _halve_rz(w_hh)
    O = 0 if y is None else y.shape[1]
    weights = operand_weights(prec, w_hh, *([fc_w] if head else []), wrap=wrap)
    (w_hh, w_hh_lo), (fc_w, fc_w_lo) = weights[0], weights[1] if head else (None, None)
    aligned = xp.stride(0) % 16 == 0 and xp.stride(1) % 16 == 0
    _launch(
        _gru_fwd_kernel if aligned else _gru_fwd_kernel_any_stride, (cdiv(B, BLOCK_B),), wrap,
        xp, w_hh, w_hh_lo, b_hh, h0, lengths, fc_w, fc_w_lo, fc_b,
        out, h_n, hs, aux, y,
        B, T, H, O,
        xp.stride(0), xp.stride(1), xp.stride(2),
        h0.stride(0) if h0 is not None else 0, h0.stride(1) if h0 is not None else 0,
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_O=block(O),
        HAS_B_HH=b_hh is not None, HAS_H0=h0 is not None, HAS_LENGTHS=lengths is not None, REVERSE=reverse,
        STORE_OUT=store_out, STORE_SAVED=store_saved, HAS_HEAD=head is not None, HAS_FC_B=fc_b is not None,
        MASK_H=H != block_h, PAIRED=H % 2 == 0, XP_PAIRED=H % 2 == 0 and tile_io.pairs_fit(xp),
        W_IN_REGISTERS=weights_in_registers(prec, num_warps(block_h, prec, store_saved), block_h, H),
        FAST_TANH=not INTERPRETED and prec in ("tf32", "low"),
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(xp.dtype, prec),
        num_warps=num_warps(block_h, prec, store_saved),
    )
    return (y if head else out), h_n, None, hs, aux


def recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, *, reverse, allow_tf32,
                   wrap=None):
    """The layer contract's backward sweep for the GRU; hs, b_hh, h0, c0 and dc_n are not needed (aux holds
    what it multiplies by).

    Returns (dxp, dgh [B, T, 3H] fp32, two tensors; dh0 [B, H] fp32; None).
    """
    _check_cell(cell)
    B, T, H = hs.shape
    new_empty = rnn_linear.new_empty
    dxp = new_empty((B, T, GATES * H), device=hs.device, dtype=torch.float32)
    dgh = new_empty((B, T, GATES * H), device=hs.device, dtype=torch.float32)
    dh0 = new_empty((B, H), device=hs.device, dtype=torch.float32)
    if T == 0:
        # No step: dh0 is dh_n. (The kernel's loads are unmasked and it prefetches position T - 1 = -1 of aux.)
        set_state(dh0, dh_n)
        return dxp, dgh, dh0, None
    block_h = block(H)
    prec = precision(w_hh.dtype, allow_tf32)
    (w_hh, w_hh_lo), = operand_weights(prec, w_hh, wrap=wrap)
    _launch(
        _gru_bwd_kernel, (cdiv(B, BLOCK_B),), wrap,
        aux, w_hh, w_hh_lo, dout, dh_n, lengths,
        dxp, dgh, dh0,
        B, T, H,
        *(dout.stride() if dout is not None else (0, 0, 0)),
        *(dh_n.stride() if dh_n is not None else (0, 0)),
        BLOCK_B=BLOCK_B, BLOCK_H=block_h,
        HAS_DOUT=dout is not None, HAS_DHN=dh_n is not None,
        HAS_LENGTHS=lengths is not None, REVERSE=reverse, MASK_H=H != block_h,
        PAIRED=H % 2 == 0 and tile_io.pairs_fit(aux),
        DOUT_PAIRED=H % 2 == 0 and dout is not None and tile_io.pairs_fit(dout),
        W_IN_REGISTERS=weights_in_registers(prec, num_warps(block_h, prec, True), block_h, H),
        PRECISION=prec, OPERAND_DTYPE=_operand_dtype(w_hh.dtype, prec),
        num_warps=num_warps(block_h, prec, True),
    )
    return dxp, dgh, dh0, None
