"""A review of three commits: the LSTM's training forward holding W_hh in registers (f9006ac), the auto->cuDNN
rule counting streamed bytes (a92ec22) and 3xTF32 splitting small tiles in the forward kernel (5c296a9).

streamed_weight_bytes is held to the launches, byte for byte: every recurrence kernel a call launches is
recorded (not run), and the bytes of weights its steps read from shared memory are worked out from that
launch's own arguments (its block sizes, precision and placement flags), independently of the module's
accounting. No GPU is needed.
"""

import pytest
import torch

from conftest import kernels
from fused_rnn.kernels import elman, gru, lstm
from helpers import launch_holds_weights


def launch_streams(kw, dtype, gates=None):
    """Bytes of weights one recorded launch reads from shared memory each step: 0 where it holds them in
    registers (W_IN_REGISTERS, W_HH_IN_REGISTERS, or 3xTF32 weights split in the kernel, SPLIT_IN_KERNEL),
    else every tile it multiplies each step, at the MMA's operand width (fp32 for TF32 and 3xTF32, twice
    for 3xTF32's hi and lo). gates: the layer kernels' W_hh blocks; None: rnn_linear's kernels (the
    forward multiplies W_hh and W_ih, the backward sweep W_hh; fc_W is read once, after the loop)."""
    if "BLOCK_H" not in kw:
        return 0                           # the 3xTF32 split launch: no time loop
    if launch_holds_weights(kw):
        return 0
    prec, bh = kw["PRECISION"], kw["BLOCK_H"]
    item = 4 if prec in ("ieee", "tf32", "tf32x3") else dtype.itemsize
    copies = 2 if prec == "tf32x3" else 1
    if gates is not None:
        elements = gates * bh * bh
    else:
        elements = bh * bh + (bh * kw["BLOCK_I"] if "BLOCK_I" in kw else 0)
    return item * copies * elements


@pytest.mark.parametrize("I", [1, 10, 16, 17, 32, 33, 64, 128])
@pytest.mark.parametrize("H", [1, 16, 20, 21, 32, 33, 64, 65, 100, 128])
@pytest.mark.parametrize("O", [1, 32, 33])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
def test_rnn_linear_streamed_weight_bytes_are_the_launches(I, H, O, allow_tf32, launched):
    """Every size "auto" can give the kernel in float32 (padded sizes up to 128 that launch), inference
    and training: the bytes are what the launches stream. 3xTF32 at small tiles (split_in_kernel: padded
    I, H and O up to 32) splits its weights into registers, so its forward streams none."""
    B, T = 3, 2
    for needs_grad in (False, True):
        if not kernels.auto_takes(torch.float32, I, H, O, allow_tf32, needs_grad):
            continue
        launched.clear()
        w_hh, fc_w = torch.randn(H, H), torch.randn(O, H)
        kernels.rnn_linear_fwd(torch.randn(B, T, I), torch.randn(H, I), w_hh, None, None, fc_w, None,
                               allow_tf32=allow_tf32, store_hs=needs_grad)
        if needs_grad:
            kernels.rnn_linear_bwd_sweep(torch.randn(B, T, H), w_hh, fc_w, torch.randn(B, O), allow_tf32=allow_tf32)
        assert launched
        want = max(launch_streams(kw, torch.float32) for kw in launched)
        assert kernels.streamed_weight_bytes(torch.float32, I, H, O, allow_tf32, needs_grad) == want, (needs_grad,
                                                                                                       launched)


def test_the_seeds_3xtf32_forward_streams_no_weights(launched):
    """The seed (I = 10, H = 20, O = 1) in fp32 without TF32: one launch, the weights split in the kernel
    and held in registers (static report: 4 KiB of shared memory, less than the weights' 16 KiB in hi and
    lo), so its inference streams nothing; training streams the backward sweep's W_hh (32·32 fp32, hi and lo)."""
    x = torch.randn(3, 2, 10)
    kernels.rnn_linear_fwd(x, torch.randn(20, 10), torch.randn(20, 20), None, None, torch.randn(1, 20), None,
                           allow_tf32=False)
    assert [kw.get("SPLIT_IN_KERNEL") for kw in launched] == [True]
    assert kernels.streamed_weight_bytes(torch.float32, 10, 20, 1, False, False) == 0
    assert kernels.streamed_weight_bytes(torch.float32, 10, 20, 1, False, True) == 32 * 32 * 4 * 2


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("H", [1, 16, 20, 21, 32, 33, 50, 63, 64, 65, 100, 127, 128])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_layer_streamed_weight_bytes_are_the_launches(cell, H, allow_tf32, dtype, launched):
    module = {"rnn_tanh": elman, "gru": gru, "lstm": lstm}[cell]
    gates = {"rnn_tanh": 1, "gru": 3, "lstm": 4}[cell]
    aux_rows = {"rnn_tanh": 1, "gru": gru.AUX_ROWS.value, "lstm": lstm.AUX_BLOCKS}[cell]
    B, T = 3, 2
    for needs_grad in (False, True):
        if module.unsupported_reason(cell, dtype, H, allow_tf32, needs_grad) is not None:
            continue
        launched.clear()
        w_hh = torch.randn(gates * H, H, dtype=dtype)
        module.recurrence_fwd(cell, torch.randn(B, T, gates * H, dtype=dtype), w_hh, None, None, None, None,
                              reverse=False, allow_tf32=allow_tf32, store_saved=needs_grad)
        if needs_grad:
            module.recurrence_bwd(cell, torch.randn(B, T, H), torch.randn(B, T, aux_rows * H), w_hh, None, None,
                                  None, None, torch.randn(B, H), None, None, reverse=False, allow_tf32=allow_tf32)
        assert launched
        want = max(launch_streams(kw, dtype, gates) for kw in launched)
        assert module.streamed_weight_bytes(cell, dtype, H, allow_tf32, needs_grad) == want, (needs_grad, launched)
