"""The layer contract (fused_rnn/cells/__init__.py) in plain PyTorch, for every cell.

The same functions, with the same arguments and results, as the Triton kernel
modules (fused_rnn/kernels/elman.py, gru.py, lstm.py): ``recurrence_fwd`` and
``recurrence_bwd``. It is what the registered ops (fused_rnn/recurrence.py) run
off CUDA (and for backend "torch" on CUDA), so that torch.compile and
torch.export work there with T symbolic. The forward
steps with the cell's own ``step`` (fused_rnn.cells); the backward steps with
the derivatives of that step written out in its cell file (``Cell.step_backward``,
checked against autograd on the float64 oracle): a custom
op's body runs with autograd excluded, and torch.func.vjp there breaks any
TorchDispatchMode (FlopCounterMode, opcheck's schema check) around the call.

``recurrence_unrolled`` is the same forward as a loop of differentiable ops:
backend="torch" runs it under autograd, and it gives double backward
(create_graph=True) to the kernel path.

Lengths: sequence b runs its steps t < lengths[b] (forward t = 0 … len_b - 1,
reverse t = len_b - 1 … 0); at the other steps its state is held and its
output is 0. Rows past a length are computed on zeros and then discarded by
torch.where, never multiplied by a 0 mask, so NaN padding reaches nothing.
"""

import torch
import torch.nn.functional as F

from .cells import cell as get_cell


def wide_dtype(dtype):
    """The dtype the state is kept in: fp32 (as the kernels keep it), float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def aux_size(cell, hidden_size):
    """K of the [B, T, K] aux this module saves: xp (G·H) and, for a cell with c, the c_t (H)."""
    spec = get_cell(cell)
    return spec.gates * hidden_size + (hidden_size if spec.has_cell_state else 0)


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def recurrence_unrolled(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, store_out=True):
    """The recurrence as differentiable ops in the wide dtype (any order of derivative, torch.func).

    xp: [B, T, G·H]; w_hh: [G·H, H]; b_hh, h0, c0, lengths: or None.
    Returns (out [B, T, H] or None, h_n [B, H], c_n [B, H] or None, cs [B, T, H] or None), all wide;
    out is 0 past each length (and is then also the saved states hs); cs are the c_t of a cell with c.
    """
    spec = get_cell(cell)
    B, T, _ = xp.shape
    H = w_hh.shape[1]
    wide = wide_dtype(xp.dtype)
    w_hh, b_hh = w_hh.to(wide), (b_hh.to(wide) if b_hh is not None else None)
    h = h0.to(wide) if h0 is not None else xp.new_zeros(B, H, dtype=wide)
    c = None
    if spec.has_cell_state:
        c = c0.to(wide) if c0 is not None else xp.new_zeros(B, H, dtype=wide)
    outs, cs = [None] * T, [None] * T
    for t in _steps(T, reverse):
        xp_t = xp[:, t].to(wide)
        valid = None
        if lengths is not None:
            valid = (t < lengths)[:, None]
            xp_t = torch.where(valid, xp_t, 0)   # padding never enters a step
        h_new, c_new = spec.step(xp_t, F.linear(h, w_hh, b_hh), h, c)
        if valid is None:
            h, c = h_new, c_new
            outs[t], cs[t] = h, c
        else:
            h = torch.where(valid, h_new, h)
            outs[t] = torch.where(valid, h_new, 0)
            if c is not None:
                c = torch.where(valid, c_new, c)
                cs[t] = torch.where(valid, c_new, 0)
    out = torch.stack(outs, 1) if store_out else None
    return out, h, c, (torch.stack(cs, 1) if c is not None else None)


@torch.no_grad()
def recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, *, reverse, allow_tf32=False, store_out=True,
                   store_saved=False, head=None, wrap=None):
    """The kernel modules' ``recurrence_fwd`` (see contract.md), in plain PyTorch; allow_tf32, wrap unused.

    Returns (out [B, T, H] in xp's dtype or None, h_n, c_n or None, hs [B, T, H] wide or None,
    aux [B, T, aux_size] wide or None). The aux is xp (widened) then, for a cell with c, the c_t.
    With a ``head`` (fc_w, fc_b; store_out False) the first result is y = fc(h_n) in xp's dtype,
    as the user model's ``fc`` computes it from the h_n it returns.
    """
    if head is not None and store_out:
        raise ValueError("a layer forward with a fused head writes y, not out: store_out must be False")
    with torch.autocast(xp.device.type, enabled=False):   # the state stays wide, as in the kernels
        states, h_n, c_n, cs = recurrence_unrolled(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse)

    # Fresh contiguous results, as the kernels give: none aliases another or an input.
    def fresh(t, dtype):
        return t.to(dtype, memory_format=torch.contiguous_format, copy=True) if t is not None else None

    hs = aux = None
    if store_saved:
        hs = fresh(states, states.dtype)
        aux = fresh(xp, states.dtype) if cs is None else torch.cat([xp.to(states.dtype), cs], dim=2).contiguous()
    h_n = fresh(h_n, xp.dtype)
    first = fresh(states, xp.dtype) if store_out else None
    if head is not None:
        first = F.linear(h_n, *head)
    return first, h_n, fresh(c_n, xp.dtype), hs, aux


def _state_before(first_state, states, lengths, t, reverse):
    """[B, H]: the state each sequence's step at position t started from (first_state at its first step).

    states: [B, T, H], the state after each position, 0 past a length.
    """
    T = states.shape[1]
    before = t + 1 if reverse else t - 1   # the position processed just before t
    if not 0 <= before < T:
        return first_state
    if not reverse or lengths is None:
        return states[:, before]
    # Reverse with lengths: the first step of sequence b is at len_b - 1, not at T - 1.
    return torch.where((t == lengths - 1)[:, None], first_state, states[:, before])


@torch.no_grad()
def recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n, dc_n, lengths, *, reverse, allow_tf32=False,
                   wrap=None):
    """The kernel modules' ``recurrence_bwd`` (see contract.md), in plain PyTorch; allow_tf32, wrap unused.

    hs, aux: what recurrence_fwd saved. Returns (dxp, dgh [B, T, G·H], dh0 [B, H], dc0 [B, H] or None),
    in hs's dtype, exactly 0 at steps past a length; dxp and dgh are distinct tensors.
    """
    spec = get_cell(cell)
    B, T, H = hs.shape
    GH = spec.gates * H
    wide = hs.dtype
    w_hh, b_hh = w_hh.to(wide), (b_hh.to(wide) if b_hh is not None else None)
    xp, cs = aux[..., :GH], (aux[..., GH:] if spec.has_cell_state else None)
    h_first = h0.to(wide) if h0 is not None else hs.new_zeros(B, H)
    dh = dh_n.to(wide) if dh_n is not None else hs.new_zeros(B, H)
    c_first = dc = None
    if spec.has_cell_state:
        c_first = c0.to(wide) if c0 is not None else hs.new_zeros(B, H)
        dc = dc_n.to(wide) if dc_n is not None else hs.new_zeros(B, H)
    step_backward = spec.step_backward
    dxp, dgh = [None] * T, [None] * T
    # The processing order backwards: the forward's last step first.
    for t in _steps(T, not reverse):
        h_prev = _state_before(h_first, hs, lengths, t, reverse)
        c_prev = _state_before(c_first, cs, lengths, t, reverse) if spec.has_cell_state else None
        valid = (t < lengths)[:, None] if lengths is not None else None
        dh_t = dh
        if dout is not None:
            dout_t = dout[:, t].to(wide)
            dh_t = dh_t + (dout_t if valid is None else torch.where(valid, dout_t, 0))
        xp_t = xp[:, t] if valid is None else torch.where(valid, xp[:, t], 0)
        dxp_t, dgh_t, dh_prev, dc_prev = step_backward(xp_t, F.linear(h_prev, w_hh, b_hh), h_prev, c_prev,
                                                       dh_t, dc)
        dh_prev = dh_prev + dgh_t @ w_hh
        if valid is None:
            dxp[t], dgh[t], dh, dc = dxp_t, dgh_t, dh_prev, dc_prev
        else:
            # Past a length the state was held: its gradient passes through unchanged.
            dxp[t], dgh[t] = torch.where(valid, dxp_t, 0), torch.where(valid, dgh_t, 0)
            dh = torch.where(valid, dh_prev, dh)
            if dc is not None:
                dc = torch.where(valid, dc_prev, dc)
    return (torch.stack(dxp, 1).contiguous(), torch.stack(dgh, 1).contiguous(), dh.contiguous(),
            dc.contiguous() if dc is not None else None)



def _direction(t, d, H):
    """Direction d's [B, T, H] slice of a [B, T, 2·H] tensor (None stays None)."""
    return t[..., d * H:(d + 1) * H] if t is not None else None


def _at(t, d):
    return t[d] if t is not None else None


def bidirectional_fwd(cell, xp, w_hh, b_hh, h0, lengths, *, store_out=True, store_saved=False):
    """The kernel modules' ``bidirectional_fwd`` (kernels/elman.py) as recurrence_fwd per direction.

    xp: [B, T, 2·H] (forward direction's projection in [..., :H]); w_hh: [2, H, H];
    b_hh: [2, H] or None; h0: [2, B, H] or None. Returns (out [B, T, 2·H] or None,
    h_n [2, B, H], hs [2, B, T, H] wide or None, aux [2, B, T, K] wide or None).
    """
    H = w_hh.shape[-1]
    results = [recurrence_fwd(cell, _direction(xp, d, H), w_hh[d], _at(b_hh, d), _at(h0, d), None, lengths,
                              reverse=d == 1, store_out=store_out, store_saved=store_saved) for d in (0, 1)]
    out = torch.cat([r[0] for r in results], dim=2) if store_out else None
    hs, aux = (torch.stack([r[i] for r in results]) if store_saved else None for i in (3, 4))
    return out, torch.stack([r[1] for r in results]), hs, aux


def bidirectional_bwd(cell, hs, aux, w_hh, b_hh, h0, dout, dh_n, lengths):
    """The kernel modules' ``bidirectional_bwd`` as recurrence_bwd per direction.

    hs, aux: [2, B, T, ·] from bidirectional_fwd; dout: [B, T, 2·H] or None; dh_n: [2, B, H] or None.
    Returns (dxp [B, T, 2·H], dh0 [2, B, H]) in hs's dtype.
    """
    H = w_hh.shape[-1]
    results = [recurrence_bwd(cell, hs[d], aux[d], w_hh[d], _at(b_hh, d), _at(h0, d), None, _direction(dout, d, H),
                              _at(dh_n, d), None, lengths, reverse=d == 1) for d in (0, 1)]
    return torch.cat([r[0] for r in results], dim=2), torch.stack([r[2] for r in results])
