"""fused_rnn.backends: each backend's capability check, and select_backend asking them in order.

No GPU is needed: a request only names a device, so "cuda" requests stand in for CUDA tensors.
"""

import re
import types

import pytest
import torch

from conftest import kernels
from fused_rnn import backends
from fused_rnn.backends import LayerRequest, RnnLinearRequest, select_backend
from helpers import ROOT

CUDA = torch.device("cuda")


def request(device=CUDA, dtype=torch.float32, I=16, H=32, O=4, **options):
    return RnnLinearRequest(device, dtype, I, H, O, **options)


def test_request_of_reads_x_and_resolves_allow_tf32(monkeypatch):
    x = torch.randn(5, 7, 3, dtype=torch.float16)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert RnnLinearRequest.of(x, 20, 2) == (torch.device("cpu"), torch.float16, 3, 20, 2, False, True, "tanh", 5, 7)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert RnnLinearRequest.of(x, 20, 2, needs_grad=True).allow_tf32 is False
    assert RnnLinearRequest.of(x, 20, 2, allow_tf32=True, nonlinearity="relu")[-4:] == (True, "relu", 5, 7)


def test_auto_asks_triton_then_cuda_then_stock(monkeypatch):
    asked = []
    for name, module in backends.BACKEND_MODULES.items():
        def declines(req, *, auto=False, name=name):
            asked.append((name, auto))
            return "declined" if name != "torch" else None
        monkeypatch.setattr(module, "unsupported_reason", declines)
    assert select_backend("auto", request()) == "torch"
    assert asked == [("triton", True), ("cuda", True), ("torch", True)]


def test_auto_takes_the_kernel_up_to_its_line_and_never_cuda():
    """On CUDA tensors: the Triton kernel up to AUTO_MAX_BLOCK, the stock path past it, never "cuda"."""
    assert select_backend("auto", request(H=kernels.AUTO_MAX_BLOCK)) == "triton"
    past = request(dtype=torch.float16, H=kernels.AUTO_MAX_BLOCK + 1)
    assert backends.triton.unsupported_reason(past) is None       # the kernel could run it, if forced
    assert select_backend("triton", past) == "triton"
    assert select_backend("auto", past) == "torch"
    reason = backends.triton.unsupported_reason(past, auto=True)
    assert f"padded sizes up to {kernels.AUTO_MAX_BLOCK}" in reason and "hidden_size=129" in reason
    assert "never picks the CUDA kernel" in backends.cuda.unsupported_reason(request(), auto=True)


def test_auto_off_cuda_takes_the_stock_path_before_asking_triton(monkeypatch):
    """Off CUDA "auto" decides from the device alone: triton is not imported for it."""
    monkeypatch.setattr(backends.triton, "kernels", lambda: pytest.fail("auto imported the kernels on CPU"))
    cpu = request(device=torch.device("cpu"))
    assert "CUDA tensors only, got a tensor on cpu" in backends.triton.unsupported_reason(cpu, auto=True)
    assert select_backend("auto", cpu) == "torch"


@pytest.mark.parametrize("backend, match", [
    ("triton", "backend='triton' cannot run this call: the Triton kernel takes float32, float16 or bfloat16, "
               "got torch.float64"),
    ("cuda", "backend='cuda' cannot run this call: it takes float32, float16 or bfloat16, got torch.float64"),
])
def test_forced_backend_that_cannot_run_raises_why(backend, match):
    with pytest.raises(RuntimeError, match=re.escape(match)):
        select_backend(backend, request(dtype=torch.float64))


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ValueError, match=re.escape("backend must be one of ('auto', 'triton', 'cuda', 'torch'), "
                                                   "got 'cudnn'")):
        select_backend("cudnn", request())


def test_cuda_refuses_gradients_before_loading_the_extension(monkeypatch):
    monkeypatch.setattr("fused_rnn.cuda.extension", lambda: pytest.fail("loaded the extension"))
    assert "no backward yet" in backends.cuda.unsupported_reason(request(needs_grad=True))


def test_cuda_plan_limit_is_the_state_in_one_blocks_shared_memory(monkeypatch):
    """csrc's choose_plan needs 2 fp32 [kBatchTile, H] states in one CTA: H ≤ 232448 / 32 = 7264 on Hopper."""
    hopper = types.SimpleNamespace(shared_memory_per_block_optin=232_448)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: hopper)
    monkeypatch.setattr("fused_rnn.cuda.extension", lambda: "the extension's own reason")
    reason = backends.cuda.unsupported_reason(request(H=7265))
    assert "hidden_size=7265 needs 232480 B" in reason and "hidden_size up to 7264" in reason, reason
    assert backends.cuda.unsupported_reason(request(H=7264)) == "the extension's own reason"
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run this call: hidden_size=7265"):
        select_backend("cuda", request(H=7265))


def test_cuda_batch_tile_is_the_headers():
    header = (ROOT / "fused_rnn" / "csrc" / "rnn_cluster.h").read_text()
    assert int(re.search(r"constexpr int kBatchTile = (\d+);", header).group(1)) == backends.cuda.BATCH_TILE
    assert "2ull * kBatchTile * H * sizeof(float)" in header     # the state bytes the plan needs


def test_stock_takes_every_call():
    for req in (request(), request(device=torch.device("meta"), dtype=torch.float64, H=10_000)):
        assert backends.stock.unsupported_reason(req) is None
        assert backends.stock.unsupported_reason(req, auto=True) is None
        assert select_backend("torch", req) == "torch"


# --- layer requests (fused_rnn.recurrence.run_layers) ------------------------------------------------------------

def layer_request(cell="gru", device=CUDA, dtype=torch.float32, H=32, **options):
    return LayerRequest(cell, device, dtype, H, **options)


def stand_in_layer_kernels(monkeypatch, reason=None):
    """A cell kernel module whose own check answers ``reason``, recording what it was asked."""
    asked = []

    def unsupported_reason(cell, dtype, hidden_size, allow_tf32, needs_grad):
        asked.append((cell, dtype, hidden_size, allow_tf32, needs_grad))
        return reason

    module = types.SimpleNamespace(unsupported_reason=unsupported_reason)
    monkeypatch.setattr(backends.triton, "layer_kernels", lambda cell: module)
    return asked


def test_layer_request_of_reads_x_and_resolves_allow_tf32(monkeypatch):
    x = torch.randn(5, 7, 3, dtype=torch.bfloat16)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert LayerRequest.of("lstm", x, 20) == ("lstm", torch.device("cpu"), torch.bfloat16, 20, False, True, None, None)
    assert LayerRequest.of("gru", x, 20, needs_grad=1, allow_tf32=False, batch_size=5, steps=7)[-4:] == (
        True, False, 5, 7)


def test_layers_triton_asks_the_cells_kernel_module(monkeypatch):
    asked = stand_in_layer_kernels(monkeypatch)
    req = layer_request("rnn_relu", dtype=torch.bfloat16, H=20, needs_grad=True, allow_tf32=True)
    assert select_backend("triton", req) == "triton"
    assert select_backend("auto", req) == "triton"
    assert asked == [("rnn_relu", torch.bfloat16, 20, True, True)] * 2
    stand_in_layer_kernels(monkeypatch, "hidden_size=20 needs too much shared memory")
    with pytest.raises(RuntimeError, match="backend='triton' cannot run this call: hidden_size=20 needs too much"):
        select_backend("triton", req)
    assert select_backend("auto", req) == "torch"


def test_layers_triton_checks_dtype_and_device_before_the_kernel_module(monkeypatch):
    asked = stand_in_layer_kernels(monkeypatch)
    with pytest.raises(RuntimeError, match=re.escape("backend='triton' cannot run this call: the Triton kernels take "
                                                     "float32, float16 or bfloat16, got torch.float64")):
        select_backend("triton", layer_request(dtype=torch.float64))
    reason = backends.triton.unsupported_reason(layer_request(device=torch.device("meta")))
    assert reason == "the Triton kernels run on CUDA tensors, got a tensor on meta"
    compiled = types.SimpleNamespace(INTERPRETED=False)
    monkeypatch.setattr(backends.triton, "kernels", lambda: compiled)
    reason = backends.triton.unsupported_reason(layer_request(device=torch.device("cpu")))
    assert "run on CPU tensors only through the Triton interpreter: set TRITON_INTERPRET=1" in reason
    assert asked == []


def test_layers_auto_takes_the_kernels_up_to_auto_max_block_on_cuda_only(monkeypatch):
    stand_in_layer_kernels(monkeypatch)
    assert select_backend("auto", layer_request(H=kernels.AUTO_MAX_BLOCK)) == "triton"
    past = layer_request(H=kernels.AUTO_MAX_BLOCK + 1)
    assert select_backend("triton", past) == "triton"
    assert select_backend("auto", past) == "torch"
    reason = backends.triton.unsupported_reason(past, auto=True)
    assert f"padded hidden sizes up to {kernels.AUTO_MAX_BLOCK}" in reason and "hidden_size=129" in reason
    monkeypatch.setattr(backends.triton, "layer_kernels", lambda cell: pytest.fail("auto imported the kernels"))
    assert select_backend("auto", layer_request(device=torch.device("cpu"))) == "torch"


def test_layers_missing_kernel_module_is_the_reason(monkeypatch):
    monkeypatch.setattr(backends.triton, "_LAYER_KERNELS", {})
    monkeypatch.setitem(backends.triton.KERNEL_MODULE_EXISTS, "lstm", False)
    with pytest.raises(RuntimeError, match=re.escape("there is no Triton kernel for cell 'lstm' yet "
                                                     "(fused_rnn/kernels/lstm.py)")):
        select_backend("triton", layer_request("lstm"))
    assert select_backend("auto", layer_request("lstm")) == "torch"


def test_layers_cuda_has_no_kernel_and_stock_takes_every_layer_call(monkeypatch):
    monkeypatch.setattr("fused_rnn.cuda.extension", lambda: pytest.fail("loaded the extension"))
    for auto in (False, True):
        assert "no CUDA kernel for layers" in backends.cuda.unsupported_reason(layer_request(), auto=auto)
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run this call: there is no CUDA kernel for layers"):
        select_backend("cuda", layer_request())
    for req in (layer_request(), layer_request("lstm", torch.device("meta"), torch.float64, 10_000)):
        assert backends.stock.unsupported_reason(req) is None
        assert backends.stock.unsupported_reason(req, auto=True) is None
        assert select_backend("torch", req) == "torch"
