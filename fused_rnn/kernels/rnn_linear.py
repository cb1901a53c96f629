"""Triton kernels for a one-layer Elman RNN followed by a Linear on the last step.

Forward, one program per tile of ``BLOCK_B`` sequences::

    h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)      t = 1 … T
    y   = h_T fc_Wᵀ + fc_b

The hidden state lives in fp32 registers for the whole loop; the ``[B, T, H]``
sequence is written only when autograd needs it (``STORE_HS``), so inference
memory is O(B·H) whatever T is.

Backward walks time in reverse (the only sequential part) and writes
``g_t = ∂L/∂pre_t``; the weight and input gradients are then single large
matmuls over all steps, done by the caller (see ``fused_rnn/ops.py``).

Every block dimension is a power of two and at least 16 (``tl.dot``'s minimum
on older Triton); padded lanes are loaded as 0 so padded hidden units stay 0
through tanh/relu (act(0) = 0) and never leak into real ones.
"""

import torch
import triton
import triton.language as tl

# Lets the tests poison every output buffer (fill it with NaN) before a kernel
# writes it, so a lane the kernel forgot to write cannot pass by being zero.
new_empty = torch.empty


@triton.jit
def _tanh(x):
    # libdevice.tanh returns None under the interpreter (triton 3.9), so build
    # it from exp. exp(-2|x|) ∈ (0, 1] never overflows; the absolute error is
    # ~1e-7 near 0 (one fp32 ulp of 1), well inside the fp32 test tolerance.
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _to_dot(v, like_ptr, DOT_FP32: tl.constexpr):
    """Cast v to the tl.dot operand dtype: fp32, or the element type of like_ptr."""
    if DOT_FP32:
        out = v.to(tl.float32)
    else:
        out = v.to(like_ptr.dtype.element_ty)
    return out


@triton.jit
def _load_tile(ptr, rows, cols, n_rows, n_cols, stride_r, stride_c):
    """Load ``ptr[rows, cols]`` as a 2-D tile, zero outside ``[n_rows, n_cols]``."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=mask, other=0.0)


@triton.jit
def _rnn_linear_fwd_kernel(
    x_ptr, h0_ptr, lengths_ptr,
    w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, fc_w_ptr, fc_b_ptr,
    y_ptr, hn_ptr, hs_ptr,
    B, T, I, H, O,
    stride_xb, stride_xt, stride_xi,
    stride_h0b, stride_h0h,
    BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_B_IH: tl.constexpr, HAS_B_HH: tl.constexpr, HAS_FC_B: tl.constexpr,
    STORE_HN: tl.constexpr, STORE_HS: tl.constexpr,
    RELU: tl.constexpr, HOIST_W: tl.constexpr,
    DOT_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    # int64 row offsets: B·T·I (and B·T·H for hs) may pass 2³¹.
    rows = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < B
    offs_i = tl.arange(0, BLOCK_I)
    offs_h = tl.arange(0, BLOCK_H)
    offs_o = tl.arange(0, BLOCK_O)

    # Weights are read transposed (W_ihᵀ: [I, H], W_hhᵀ: [H, H]) so each step
    # is a plain [BLOCK_B, K] @ [K, BLOCK_H] product. Small ones stay in
    # registers for the whole loop; large ones are re-read every step (from L1/L2)
    # rather than spilled.
    if HOIST_W:
        w_ih_t = _to_dot(_load_tile(w_ih_ptr, offs_i, offs_h, I, H, 1, I), x_ptr, DOT_FP32)
        w_hh_t = _to_dot(_load_tile(w_hh_ptr, offs_h, offs_h, H, H, 1, H), x_ptr, DOT_FP32)

    bias = tl.zeros([BLOCK_H], dtype=tl.float32)
    if HAS_B_IH:
        bias += tl.load(b_ih_ptr + offs_h, mask=offs_h < H, other=0.0).to(tl.float32)
    if HAS_B_HH:
        bias += tl.load(b_hh_ptr + offs_h, mask=offs_h < H, other=0.0).to(tl.float32)

    if HAS_H0:
        h = _load_tile(h0_ptr, rows, offs_h, B, H, stride_h0b, stride_h0h).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)

    x_mask = row_ok[:, None] & (offs_i[None, :] < I)
    h_mask = row_ok[:, None] & (offs_h[None, :] < H)
    # Pointers advance by one step per iteration (64-bit pointer arithmetic),
    # so a transposed x with a huge time stride cannot overflow an int32 index.
    x_ptrs = x_ptr + rows[:, None] * stride_xb + offs_i[None, :] * stride_xi
    if STORE_HS:
        hs_ptrs = hs_ptr + rows[:, None] * T * H + offs_h[None, :]
    for t in range(T):
        if not HOIST_W:
            w_ih_t = _to_dot(_load_tile(w_ih_ptr, offs_i, offs_h, I, H, 1, I), x_ptr, DOT_FP32)
            w_hh_t = _to_dot(_load_tile(w_hh_ptr, offs_h, offs_h, H, H, 1, H), x_ptr, DOT_FP32)
        x_t = _to_dot(tl.load(x_ptrs, mask=x_mask, other=0.0), x_ptr, DOT_FP32)
        pre = tl.dot(x_t, w_ih_t, input_precision=INPUT_PRECISION)
        pre += tl.dot(_to_dot(h, x_ptr, DOT_FP32), w_hh_t, input_precision=INPUT_PRECISION)
        pre += bias[None, :]
        if RELU:
            h_new = tl.maximum(pre, 0.0)
        else:
            h_new = _tanh(pre)
        if HAS_LENGTHS:
            # A finished sequence keeps its last valid state: h_T is then the
            # state at its own last step, as a PackedSequence's h_n is.
            h = tl.where((t < length)[:, None], h_new, h)
        else:
            h = h_new
        if STORE_HS:
            tl.store(hs_ptrs, h, mask=h_mask)
            hs_ptrs += H
        x_ptrs += stride_xt

    if STORE_HN:
        tl.store(hn_ptr + rows[:, None] * H + offs_h[None, :], h.to(hn_ptr.dtype.element_ty), mask=h_mask)

    fc_w_t = _to_dot(_load_tile(fc_w_ptr, offs_h, offs_o, H, O, 1, H), x_ptr, DOT_FP32)
    y = tl.dot(_to_dot(h, x_ptr, DOT_FP32), fc_w_t, input_precision=INPUT_PRECISION)
    if HAS_FC_B:
        y += tl.load(fc_b_ptr + offs_o, mask=offs_o < O, other=0.0).to(tl.float32)[None, :]
    y_mask = row_ok[:, None] & (offs_o[None, :] < O)
    tl.store(y_ptr + rows[:, None] * O + offs_o[None, :], y.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _rnn_linear_bwd_kernel(
    hs_ptr, lengths_ptr, w_hh_ptr, fc_w_ptr, dy_ptr, dhn_ptr,
    g_ptr, dh0_ptr,
    B, T, H, O,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_DHN: tl.constexpr,
    RELU: tl.constexpr, HOIST_W: tl.constexpr,
    DOT_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """Reverse-time sweep: dh_T = dy·fc_W (+ dh_n); g_t = dh_t ⊙ act'(h_t); dh_{t-1} = g_t W_hh.

    hs, g: [B, T, H] fp32 (contiguous); dy: [B, O]; dhn, dh0: [B, H].
    """
    pid = tl.program_id(0)
    rows = (pid * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    row_ok = rows < B
    offs_h = tl.arange(0, BLOCK_H)
    offs_o = tl.arange(0, BLOCK_O)
    h_mask = row_ok[:, None] & (offs_h[None, :] < H)

    # dh_T = dy @ fc_W: [BLOCK_B, O] @ [O, H].
    dy = _to_dot(_load_tile(dy_ptr, rows, offs_o, B, O, O, 1), w_hh_ptr, DOT_FP32)
    fc_w = _to_dot(_load_tile(fc_w_ptr, offs_o, offs_h, O, H, H, 1), w_hh_ptr, DOT_FP32)
    dh = tl.dot(dy, fc_w, input_precision=INPUT_PRECISION)
    if HAS_DHN:
        dh += _load_tile(dhn_ptr, rows, offs_h, B, H, H, 1).to(tl.float32)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    if HOIST_W:
        w_hh = _to_dot(_load_tile(w_hh_ptr, offs_h, offs_h, H, H, H, 1), w_hh_ptr, DOT_FP32)

    # Start at step T-1 and walk back one row of H per step.
    offs = rows[:, None] * T * H + (T - 1) * H + offs_h[None, :]
    hs_ptrs = hs_ptr + offs
    g_ptrs = g_ptr + offs
    for i in range(T):
        if not HOIST_W:
            w_hh = _to_dot(_load_tile(w_hh_ptr, offs_h, offs_h, H, H, H, 1), w_hh_ptr, DOT_FP32)
        h_t = tl.load(hs_ptrs, mask=h_mask, other=0.0)
        if RELU:
            g = tl.where(h_t > 0, dh, 0.0)
        else:
            g = dh * (1.0 - h_t * h_t)
        dh_prev = tl.dot(_to_dot(g, w_hh_ptr, DOT_FP32), w_hh, input_precision=INPUT_PRECISION)
        if HAS_LENGTHS:
            # Steps past a sequence's length were identities (h_t = h_{t-1}):
            # no gradient to the pre-activation, dh passes through unchanged.
            valid = ((T - 1 - i) < length)[:, None]
            g = tl.where(valid, g, 0.0)
            dh = tl.where(valid, dh_prev, dh)
        else:
            dh = dh_prev
        tl.store(g_ptrs, g, mask=h_mask)
        hs_ptrs -= H
        g_ptrs -= H

    tl.store(dh0_ptr + rows[:, None] * H + offs_h[None, :], dh, mask=h_mask)


# ----------------------------------------------------------------------------
# Host side: block sizes and launches. Inputs are assumed already checked by
# fused_rnn.ops (shapes, dtypes, devices); weights must be contiguous.
# ----------------------------------------------------------------------------

# Rows of the batch per program. 16 is tl.dot's minimum M; more rows per program
# would only serialise work that could run on another SM (the time loop is
# latency-bound, not throughput-bound, at the shapes RNNs are run at).
BLOCK_B = 16

# Largest padded size of I, H and O one program holds (backend="triton"); past
# it the stock path runs. A [256, 256] fp32 tile is already 256 KiB, more than
# an SM's registers, so at 256 each step re-reads W_hh and registers spill.
MAX_BLOCK = 256

# Largest padded size backend="auto" gives the kernel. ptxas on sm_90a (see
# tests/aot_sm90.py, benchmarks/results/ptxas_sm90a_triton*.txt) reports no spills
# up to I = 64, H = 128 in every dtype, 1-4 KiB per thread in fp32 with I or O at
# 128, and 4-8 KiB at H = 256 in fp32. Not yet timed on a GPU.
AUTO_MAX_BLOCK = 128

# Weights are kept in registers across the loop while they need at most this
# many 32-bit registers per thread; above it they are re-read every step.
# An estimate, not yet measured on a GPU: 96 of the 255 registers a thread may
# use leaves room for h, the products and the x tile. It hoists fp32 I=64, H=128
# (96 KiB over 8 warps) and bf16 H=256 up to I=128 (192 KiB over 16 warps), and
# re-reads fp32 H=256 (≥ 256 KiB).
HOIST_REGS_PER_THREAD = 96


def block(n):
    """Padded block size for a dimension of size ``n``: a power of two, at least 16."""
    return max(16, triton.next_power_of_2(n))


def _interpreted():
    # triton.jit returns an InterpretedFunction when TRITON_INTERPRET=1 was set
    # before this module was imported; that, not the variable now, decides.
    return type(_rnn_linear_fwd_kernel).__name__ == "InterpretedFunction"


INTERPRETED = _interpreted()


def _launch_config(dtype, block_i, block_h, allow_tf32):
    num_warps = 4 if block_h <= 64 else 8 if block_h <= 128 else 16
    weight_bytes = (block_i * block_h + block_h * block_h) * dtype.itemsize
    hoist = weight_bytes <= HOIST_REGS_PER_THREAD * 4 * 32 * num_warps
    # The interpreter computes bf16 tl.dot wrongly (numpy has no bfloat16; errors
    # of O(1) seen with triton 3.9), so it multiplies in fp32 there. On a GPU
    # the operands are bf16 with fp32 accumulation.
    dot_fp32 = dtype == torch.float32 or (dtype == torch.bfloat16 and INTERPRETED)
    precision = "tf32" if (allow_tf32 and dtype == torch.float32) else "ieee"
    return dict(HOIST_W=hoist, DOT_FP32=dot_fp32, INPUT_PRECISION=precision, num_warps=num_warps)


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
    block_i, block_h, block_o = block(I), block(H), block(O)
    grid = (triton.cdiv(B, BLOCK_B),)
    kernel = _rnn_linear_fwd_kernel if wrap is None else wrap(_rnn_linear_fwd_kernel)
    kernel[grid](
        x, h0, lengths,
        w_ih, w_hh, b_ih, b_hh, fc_w, fc_b,
        y, hn, hs,
        B, T, I, H, O,
        x.stride(0), x.stride(1), x.stride(2),
        h0.stride(0) if h0 is not None else 0, h0.stride(1) if h0 is not None else 0,
        BLOCK_B=BLOCK_B, BLOCK_I=block_i, BLOCK_H=block_h, BLOCK_O=block_o,
        HAS_H0=h0 is not None, HAS_LENGTHS=lengths is not None,
        HAS_B_IH=b_ih is not None, HAS_B_HH=b_hh is not None, HAS_FC_B=fc_b is not None,
        STORE_HN=store_hn, STORE_HS=store_hs, RELU=relu,
        **_launch_config(x.dtype, block_i, block_h, allow_tf32),
    )
    return y, hn, hs


def rnn_linear_bwd_sweep(hs, w_hh, fc_w, dy, dhn=None, lengths=None, *, relu=False, allow_tf32=False,
                         wrap=None):
    """Launch the reverse-time sweep.

    hs: [B, T, H] fp32 from the forward; dy: [B, O]; dhn: [B, H] or None.
    Returns (g [B, T, H] fp32, dh0 [B, H] fp32), g_t being ∂L/∂(pre-activation at t).
    """
    B, T, H = hs.shape
    O = fc_w.shape[0]
    g = new_empty((B, T, H), device=hs.device, dtype=torch.float32)
    dh0 = new_empty((B, H), device=hs.device, dtype=torch.float32)
    block_h, block_o = block(H), block(O)
    config = _launch_config(w_hh.dtype, 0, block_h, allow_tf32)
    kernel = _rnn_linear_bwd_kernel if wrap is None else wrap(_rnn_linear_bwd_kernel)
    kernel[(triton.cdiv(B, BLOCK_B),)](
        hs, lengths, w_hh, fc_w, dy.contiguous(), dhn.contiguous() if dhn is not None else None,
        g, dh0,
        B, T, H, O,
        BLOCK_B=BLOCK_B, BLOCK_H=block_h, BLOCK_O=block_o,
        HAS_LENGTHS=lengths is not None, HAS_DHN=dhn is not None, RELU=relu,
        **config,
    )
    return g, dh0
