"""backend="auto" and the float32 calls whose steps stream their weights from shared memory.

There cuDNN was measured faster below STREAMING_MIN_BATCH sequences (fused_rnn/backends/triton.py has
the H200 rows), so "auto" leaves them to the stock path, in eager mode only. No GPU is needed: a
request names its device, and the launchers' choices are read from a stand-in for ``_launch``.
"""

import pytest
import torch

from conftest import kernels
from fused_rnn import backends
from fused_rnn.backends import LayerRequest, RnnLinearRequest, select_backend
from fused_rnn.backends.triton import STREAMING_MAX_STEPS, STREAMING_MIN_BATCH
from fused_rnn.kernels import elman, gru, lstm
from helpers import launch_streams_weights

CUDA = torch.device("cuda")
SMALL, LARGE = STREAMING_MIN_BATCH - 1, STREAMING_MIN_BATCH


pytestmark = pytest.mark.usefixtures("cudnn_available")


def linear_request(dtype=torch.float32, I=64, H=128, allow_tf32=False, batch_size=SMALL, needs_grad=False,
                   steps=1024):
    return RnnLinearRequest(CUDA, dtype, I, H, 1, needs_grad, allow_tf32, "tanh", batch_size, steps)


def layer_request(cell, dtype=torch.float32, H=128, allow_tf32=True, batch_size=SMALL, needs_grad=False,
                  steps=1024):
    return LayerRequest(cell, CUDA, dtype, H, needs_grad, allow_tf32, batch_size, steps)


@pytest.mark.parametrize("req,expected", [
    # The measured cases: the Elman RNN and head with 3xTF32 at H = 128 and 64, the TF32 GRU at H = 128.
    (linear_request(H=128), "torch"),
    (linear_request(H=64, needs_grad=True), "torch"),
    (layer_request("gru", H=128), "torch"),
    (layer_request("gru", H=128, needs_grad=True), "torch"),
    (layer_request("rnn_tanh", H=128, allow_tf32=False), "torch"),
    # From STREAMING_MIN_BATCH sequences the kernels are faster (3xTF32, H = 64: 1.03x at 256, 1.62x at 1024).
    (linear_request(H=128, batch_size=LARGE), "triton"),
    (layer_request("gru", H=128, batch_size=LARGE), "triton"),
    # Past the longest sequence cuDNN ran (it refused T = 65,536), the kernels, in constant memory.
    (linear_request(H=64, steps=STREAMING_MAX_STEPS), "torch"),
    (linear_request(H=64, steps=STREAMING_MAX_STEPS + 1), "triton"),
    (layer_request("gru", H=128, steps=STREAMING_MAX_STEPS + 1), "triton"),
    # Weights held in registers: TF32 Elman (64 KiB) and GRU at H = 64 (48 KiB).
    (linear_request(H=128, allow_tf32=True), "triton"),
    (layer_request("rnn_tanh", H=128), "triton"),
    (layer_request("gru", H=64), "triton"),
    # Below BLOCK_H = 64 (mma.sync, the seed's H = 20): 3xTF32 stays on the kernel.
    (linear_request(I=10, H=20), "triton"),
    (layer_request("lstm", H=32, allow_tf32=False), "triton"),
    # float16 and bfloat16 streaming (the LSTM's forwards at a padded H) stay: no faster stock path.
    (layer_request("lstm", dtype=torch.float16, H=100, needs_grad=True), "triton"),
    (layer_request("lstm", dtype=torch.bfloat16, H=100), "triton"),
    # The LSTM's training forward holds W_hh in registers where its inference forward does (TF32, H = 64).
    (layer_request("lstm", H=64, needs_grad=True), "triton"),
    # The batch size unknown: the kernels, as before this rule.
    (linear_request(H=128, batch_size=None), "triton"),
], ids=lambda v: "" if isinstance(v, str) else None)
def test_auto_leaves_streaming_float32_calls_of_few_sequences_to_cudnn(req, expected, monkeypatch):
    # cuDNN at the precision the call asks for (test_auto_streaming_review: where they differ the kernels stay).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", req.allow_tf32)
    assert select_backend("auto", req) == expected


@pytest.mark.parametrize("streamed,expected_bytes", [
    # The measured ones: the TF32 GRU at H = 128, the Elman RNN and head with 3xTF32 at H = 128 and 64.
    (lambda: gru.streamed_weight_bytes("gru", torch.float32, 128, True, False), 3 * 128 * 128 * 4),
    (lambda: kernels.streamed_weight_bytes(torch.float32, 64, 128, 1, False, False), (128 * 128 + 128 * 64) * 8),
    (lambda: kernels.streamed_weight_bytes(torch.float32, 32, 64, 1, False, False), (64 * 64 + 64 * 32) * 8),
    # The seed's 3xTF32 (H = 20 padded to 32: mma.sync), measured faster than cuDNN when it streamed
    # (32 * 32 + 32 * 16) * 8 B; its forward now splits the weights into registers (split_in_kernel).
    (lambda: kernels.streamed_weight_bytes(torch.float32, 10, 20, 1, False, False), 0),
    # An odd H with TF32 (padded to 64, whose odd rows stay in shared memory), and weights held in registers.
    (lambda: kernels.streamed_weight_bytes(torch.float32, 10, 21, 1, True, False), (64 * 64 + 64 * 16) * 4),
    (lambda: kernels.streamed_weight_bytes(torch.float32, 64, 128, 1, True, True), 0),
    (lambda: lstm.streamed_weight_bytes("lstm", torch.bfloat16, 128, False, True), 0),
    (lambda: lstm.streamed_weight_bytes("lstm", torch.bfloat16, 100, False, False), 4 * 128 * 128 * 2),
], ids=["gru-tf32-128", "elman-head-3xtf32-128", "elman-head-3xtf32-64", "seed-3xtf32", "elman-head-tf32-21",
        "elman-head-tf32-128", "lstm-bf16-128-train", "lstm-bf16-100"])
def test_streamed_weight_bytes(streamed, expected_bytes):
    assert streamed() == expected_bytes


@pytest.mark.parametrize("req,expected", [
    # Past STREAMING_MIN_BYTES (48 KiB, the smallest stream measured slower than cuDNN): cuDNN.
    (linear_request(I=32, H=64), "torch"),
    (layer_request("gru", H=33), "torch"),          # TF32, odd H: three 16 KiB blocks
    (layer_request("lstm", H=33), "torch"),         # four
    # Below it: the kernels (the seed, streaming 12 KiB then, ran 1.66x faster than cuDNN).
    (linear_request(I=10, H=20), "triton"),
    (linear_request(I=10, H=21, allow_tf32=True), "triton"),     # 20 KiB
    (layer_request("rnn_tanh", H=33), "triton"),    # 16 KiB
    (layer_request("rnn_tanh", H=64, allow_tf32=False), "triton"),   # 32 KiB: W_hh's two parts
], ids=["elman-head-3xtf32-64", "gru-tf32-33", "lstm-tf32-33", "seed-3xtf32", "elman-head-tf32-21",
        "elman-tf32-33", "elman-3xtf32-64"])
def test_auto_draws_the_line_at_48_kib_a_step(req, expected, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", req.allow_tf32)
    assert select_backend("auto", req) == expected


def test_the_reason_names_the_rule_and_the_call(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    reason = backends.triton.unsupported_reason(layer_request("gru", H=128, batch_size=64), auto=True)
    assert reason is not None
    for words in ("stream 48 KiB or more of weights from shared memory", f"below {STREAMING_MIN_BATCH} sequences",
                  f"up to {STREAMING_MAX_STEPS} steps", "hidden_size=128", "TF32 products (192 KiB a step)",
                  "64 sequences of 1024 steps"):
        assert words in reason


@pytest.mark.parametrize("req", [linear_request(H=128), layer_request("gru", H=128)], ids=["rnn_linear", "gru"])
def test_forced_triton_and_torch_compile_keep_the_kernels(req, monkeypatch):
    # Forced, the kernels run (they launch: the rule is about speed).
    assert select_backend("triton", req) == "triton"
    # Under torch.compile the stock path is the registered plain op, a loop of T steps: the kernels stay.
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert select_backend("auto", req) == "triton"


def test_without_cudnn_the_kernels_stay(monkeypatch):
    # The stock path would be ATen's loop; and cudnn.flags(enabled=False) is cuDNN's own advice for
    # double backward, which the kernels' backward gives.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    req = layer_request("gru", H=128)
    assert select_backend("auto", req) == "torch"
    with torch.backends.cudnn.flags(enabled=False):
        assert select_backend("auto", req) == "triton"
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: False)
    assert select_backend("auto", req) == "triton"


# --- streamed_weight_bytes says what the launchers do ----------------------------------------------------------------

CELL_MODULES = {"rnn_tanh": elman, "gru": gru, "lstm": lstm}


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("H", [20, 64, 65, 100, 128])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_streamed_weight_bytes_is_what_the_layer_launchers_do(cell, H, allow_tf32, dtype, launched):
    module = CELL_MODULES[cell]
    if module.unsupported_reason(cell, dtype, H, allow_tf32, True) is not None:
        pytest.skip("does not launch (unsupported_reason)")
    gates = {"rnn_tanh": 1, "gru": 3, "lstm": 4}[cell]
    B, T = 3, 2
    xp = torch.randn(B, T, gates * H, dtype=dtype)
    w_hh = torch.randn(gates * H, H, dtype=dtype)
    hs = torch.randn(B, T, H)
    aux_rows = {"rnn_tanh": 0, "gru": gru.AUX_ROWS.value, "lstm": lstm.AUX_BLOCKS}[cell]
    aux = torch.randn(B, T, max(aux_rows, 1) * H) if aux_rows else None
    for needs_grad in (False, True):
        launched.clear()
        module.recurrence_fwd(cell, xp, w_hh, None, None, None, None, reverse=False, allow_tf32=allow_tf32,
                              store_out=True, store_saved=needs_grad)
        if needs_grad:
            module.recurrence_bwd(cell, hs, aux, w_hh, None, None, None, None, torch.randn(B, H), None, None,
                                  reverse=False, allow_tf32=allow_tf32)
        assert launched, "nothing launched"
        streams = module.streamed_weight_bytes(cell, dtype, H, allow_tf32, needs_grad) > 0
        assert streams == any(map(launch_streams_weights, launched))


@pytest.mark.parametrize("I", [16, 64, 256])
@pytest.mark.parametrize("H", [20, 64, 100, 128])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
def test_streamed_weight_bytes_is_what_the_rnn_linear_launchers_do(I, H, allow_tf32, launched):
    if kernels.launch_unsupported_reason(torch.float32, I, H, 1, allow_tf32, True) is not None:
        pytest.skip("does not launch (launch_unsupported_reason)")
    B, T = 3, 2
    x = torch.randn(B, T, I)
    w_ih, w_hh, fc_w = torch.randn(H, I), torch.randn(H, H), torch.randn(1, H)
    for needs_grad in (False, True):
        launched.clear()
        kernels.rnn_linear_fwd(x, w_ih, w_hh, None, None, fc_w, None, allow_tf32=allow_tf32, store_hs=needs_grad)
        if needs_grad:
            kernels.rnn_linear_bwd_sweep(torch.randn(B, T, H), w_hh, fc_w, torch.randn(B, 1), allow_tf32=allow_tf32)
        streams = kernels.streamed_weight_bytes(torch.float32, I, H, 1, allow_tf32, needs_grad) > 0
        assert streams == any(map(launch_streams_weights, launched))


# --- the modules name the batch size ------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["batch_first", "time_major", "packed"])
def test_the_rnn_modules_ask_with_their_batch_size_and_steps(form, layer_backend_asks):
    import fused_rnn
    asked = layer_backend_asks
    B, T, I, H = 5, 4, 3, 8
    rnn = fused_rnn.GRU(I, H, batch_first=form == "batch_first", backend="triton")
    x = torch.randn(B, T, I) if form == "batch_first" else torch.randn(T, B, I)
    if form == "packed":
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([4, 3, 3, 2, 1]), enforce_sorted=True)
    rnn.backend_for(x)
    rnn(x)
    # The module names B and T; run_layers, whose "torch" is not cuDNN, names neither.
    assert asked and set(asked) == {(B, T), (None, None)}


# --- on a GPU: the call cuDNN takes is stock's, bit for bit ----------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("B,expected", [(64, "torch"), (STREAMING_MIN_BATCH, "triton")])
def test_on_cuda_the_tf32_gru_at_h128_is_cudnns_below_the_batch_threshold(B, expected, monkeypatch):
    import fused_rnn
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    torch.manual_seed(0)
    stock = torch.nn.GRU(64, 128, batch_first=True).cuda()
    fused = fused_rnn.GRU(64, 128, batch_first=True).cuda()
    fused.load_state_dict(stock.state_dict())
    x = torch.randn(B, 33, 64, device="cuda")
    assert fused.backend_for(x) == expected
    with torch.no_grad():
        out, h_n = fused(x)
        want, want_h = stock(x)
    if expected == "torch":     # the same cuDNN call
        assert torch.equal(out, want) and torch.equal(h_n, want_h)
    else:                       # the kernels, within TF32's rounding
        torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)
