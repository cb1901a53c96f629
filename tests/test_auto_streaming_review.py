"""A review of backend="auto"'s streaming rule (fused_rnn/backends/triton.py, _streaming_reason).

The rule leaves to the stock path the float32 calls of fewer than STREAMING_MIN_BATCH sequences whose
steps stream their weights from shared memory, on the premise that the stock path there is cuDNN at the
precision the call asked for. These tests hold each caller to that premise, with fake CUDA tensors
(FakeTensorMode: shapes, dtypes and devices without a GPU) and cuDNN reported available.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fused_rnn
from conftest import kernels
from fused_rnn import recurrence
from fused_rnn.backends import RnnLinearRequest, select_backend
from fused_rnn.backends.triton import STREAMING_MIN_BATCH
from fused_rnn.kernels import elman, gru, lstm
from helpers import launch_streams_weights

CUDA = torch.device("cuda")
FEW = STREAMING_MIN_BATCH // 4       # 64 sequences: the measured B, where cuDNN was faster


pytestmark = pytest.mark.usefixtures("cudnn_available")


@pytest.fixture
def fake():
    """A FakeTensorMode; calls on its tensors run inside it."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def cuda_tensor(mode, *shape):
    with mode:
        return torch.empty(*shape, device=CUDA)


# --- the stock path must compute at the precision asked for ------------------------------------------------

@pytest.mark.parametrize("cudnn_tf32", [True, False], ids=["cudnn_tf32", "cudnn_ieee"])
def test_explicit_allow_tf32_false_is_not_left_to_a_tf32_cudnn(cudnn_tf32, monkeypatch):
    # allow_tf32=False asks for fp32-accurate products (README: "False keeps them fp32-accurate"). cuDNN's RNN
    # takes its precision from torch.backends.cudnn.allow_tf32 (True by default in PyTorch), not from the
    # module: left to it, the call would silently run TF32 (~1e-3 relative error) where the kernels ran 3xTF32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", cudnn_tf32)
    request = RnnLinearRequest(CUDA, torch.float32, 64, 128, 1, False, False, "tanh", FEW, 1024)
    assert select_backend("auto", request) == ("triton" if cudnn_tf32 else "torch")


@pytest.mark.parametrize("cudnn_tf32", [True, False], ids=["cudnn_tf32", "cudnn_ieee"])
def test_module_with_explicit_allow_tf32_false_keeps_its_precision(cudnn_tf32, fake, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", cudnn_tf32)
    x = cuda_tensor(fake, FEW, 100, 32)
    rnn = fused_rnn.GRU(32, 64, batch_first=True, allow_tf32=False)     # 3xTF32 at H = 64 streams
    model = fused_rnn.SimpleRNN(32, 128, 1, allow_tf32=False)            # rnn_linear, 3xTF32 at H = 128
    with fake:
        assert rnn.backend_for(x) == ("triton" if cudnn_tf32 else "torch")
        assert model.backend_for(x) == ("triton" if cudnn_tf32 else "torch")


@pytest.fixture
def streaming_gru(fake, monkeypatch):
    """(x, rnn, model): few fake-CUDA sequences into a TF32 GRU at H = 128 (W_hh streams), as a module and as
    SimpleRNN's rnn, cuDNN's TF32 on: what "auto" leaves to cuDNN in training."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = cuda_tensor(fake, FEW, 100, 64)
    return x, fused_rnn.GRU(64, 128, batch_first=True), fused_rnn.SimpleRNN(64, 128, 1, cell="gru")


def test_under_cuda_autocast_the_kernels_stay(fake, streaming_gru):
    # Under autocast the layers run in float16 (recurrence.run_layers casts them), where W_hh is held in
    # registers and the fp16 kernels ran faster than cuDNN's fp16 (1.8x for this GRU's forward on the H200):
    # a float32 module's request must not be judged as a float32 call.
    x, rnn, model = streaming_gru
    with fake:
        assert rnn.backend_for(x) == "torch" and model.backend_for(x) == "torch"
        assert gru.streamed_weight_bytes("gru", torch.float32, 128, True, False)
        assert not gru.streamed_weight_bytes("gru", torch.float16, 128, True, False)
        previous = torch.is_autocast_enabled("cuda")
        torch.set_autocast_enabled("cuda", True)
        try:
            assert rnn.backend_for(x) == "triton"
            assert model.backend_for(x) == "triton"
        finally:
            torch.set_autocast_enabled("cuda", previous)


# --- B and T as forward sees them ----------------------------------------------------------------------------

@pytest.mark.parametrize("batch_first", [True, False])
def test_backend_for_unbatched_input_counts_one_sequence(batch_first, fake, layer_backend_asks, monkeypatch):
    # Unbatched input [T, I] is one sequence (forward unsqueezes it before choosing). backend_for read
    # its T as B (batch_first) or its I as B (time-major): 300 "sequences", so the kernels, where forward
    # leaves the call to cuDNN.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    rnn = fused_rnn.GRU(300, 128, batch_first=batch_first)
    x = cuda_tensor(fake, 300, 300)
    asked = layer_backend_asks
    with fake:
        assert rnn.backend_for(x) == "torch"
    assert asked == [(1, 300)]


def test_simple_rnn_backend_for_counts_the_gradient_as_forward_does(fake, monkeypatch):
    # A configuration that streams in training only (the TF32 LSTM at H = 64 did, until its training forward
    # held W_hh in registers too; a stand-in now): forward, with parameters that require grad, leaves it to
    # cuDNN; backend_for said "triton" (it always asked as for inference).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(lstm, "streamed_weight_bytes",
                        lambda cell, dtype, hidden_size, allow_tf32, needs_grad: 1 << 20 if needs_grad else 0)
    model = fused_rnn.SimpleRNN(32, 64, 1, cell="lstm")
    x = cuda_tensor(fake, FEW, 100, 32)
    with fake:
        assert model.backend_for(x) == "torch"
        with torch.no_grad():
            assert model.backend_for(x) == "triton"
        model.requires_grad_(False)
        assert model.backend_for(x) == "triton"


# --- the layer functions: their "torch" is the plain loop, not cuDNN --------------------------------------------

class _Chosen(Exception):
    pass


@pytest.mark.parametrize("api", ["run_layers", "layer"])
def test_the_layer_functions_keep_the_kernels(api, fake, monkeypatch):
    # recurrence.run_layers / layer with backend="auto" run "torch" as recurrence_stock's loop of T steps (the
    # plain registered op), never cuDNN: the rule's premise does not hold there, and leaving the TF32 GRU
    # at H = 128 to that loop would run T small steps of PyTorch ops in place of one kernel.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    chosen = []
    real = recurrence.select_layer_backend

    def select(*args, **kw):
        chosen.append(real(*args, **kw))
        raise _Chosen

    monkeypatch.setattr(recurrence, "select_layer_backend", select)
    H, I = 128, 64
    x, w_ih, w_hh = cuda_tensor(fake, FEW, 100, I), cuda_tensor(fake, 3 * H, I), cuda_tensor(fake, 3 * H, H)
    with fake, pytest.raises(_Chosen):
        if api == "run_layers":
            recurrence.run_layers("gru", x, [w_ih, w_hh], None, None, None, num_layers=1, bidirectional=False,
                                  batch_first=True, dropout=0.0, training=False, allow_tf32=True, backend="auto")
        else:
            recurrence.layer("gru", x, w_ih, w_hh, None, None, None, None, None, reverse=False, allow_tf32=True,
                             backend="auto")
    assert chosen == ["triton"]


# --- streamed_weight_bytes against the launchers, beyond test_auto_streaming's sizes -------------------------------

@pytest.mark.parametrize("H", [17, 33, 48, 63, 96, 127])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
@pytest.mark.parametrize("form", ["forward", "reverse", "bidirectional"])
def test_elman_streamed_weight_bytes_for_odd_and_padded_sizes(H, allow_tf32, form, launched):
    B, T = 3, 2
    for needs_grad in (False, True):
        launched.clear()
        if form == "bidirectional":
            elman.bidirectional_fwd("rnn_tanh", torch.randn(B, T, 2 * H), torch.randn(2, H, H), None, None, None,
                                    allow_tf32=allow_tf32, store_saved=needs_grad)
            if needs_grad:
                elman.bidirectional_bwd("rnn_tanh", torch.randn(2, B, T, H), torch.randn(2, H, H), None,
                                        torch.randn(2, B, H), None, allow_tf32=allow_tf32)
        else:
            reverse = form == "reverse"
            elman.recurrence_fwd("rnn_tanh", torch.randn(B, T, H), torch.randn(H, H), None, None, None, None,
                                 reverse=reverse, allow_tf32=allow_tf32, store_saved=needs_grad)
            if needs_grad:
                elman.recurrence_bwd("rnn_tanh", torch.randn(B, T, H), None, torch.randn(H, H), None, None, None,
                                     None, torch.randn(B, H), None, None, reverse=reverse, allow_tf32=allow_tf32)
        assert launched
        assert (elman.streamed_weight_bytes("rnn_tanh", torch.float32, H, allow_tf32, needs_grad) > 0) == any(
            map(launch_streams_weights, launched))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("H", [33, 48, 63, 96, 127])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
def test_gated_streamed_weight_bytes_for_odd_and_padded_sizes(cell, H, allow_tf32, launched):
    module = {"gru": gru, "lstm": lstm}[cell]
    B, T = 3, 2
    gates = {"gru": 3, "lstm": 4}[cell]
    aux_width = (gru.AUX_ROWS.value if cell == "gru" else lstm.AUX_BLOCKS) * H
    for needs_grad in (False, True):
        if module.unsupported_reason(cell, torch.float32, H, allow_tf32, needs_grad) is not None:
            continue
        launched.clear()
        w_hh = torch.randn(gates * H, H)
        module.recurrence_fwd(cell, torch.randn(B, T, gates * H), w_hh, None, None, None, None, reverse=True,
                              allow_tf32=allow_tf32, store_saved=needs_grad)
        if needs_grad:
            module.recurrence_bwd(cell, torch.randn(B, T, H), torch.randn(B, T, aux_width), w_hh, None, None, None,
                                  None, torch.randn(B, H), None, None, reverse=True, allow_tf32=allow_tf32)
        assert launched
        streams = module.streamed_weight_bytes(cell, torch.float32, H, allow_tf32, needs_grad) > 0
        assert streams == any(map(launch_streams_weights, launched))


@pytest.mark.parametrize("I", [1, 10, 33, 100, 128])
@pytest.mark.parametrize("H", [17, 21, 31, 33, 63, 96, 127])
@pytest.mark.parametrize("allow_tf32", [True, False], ids=["tf32", "3xtf32"])
def test_rnn_linear_streamed_weight_bytes_for_odd_and_padded_sizes(I, H, allow_tf32, launched):
    B, T = 3, 2
    for needs_grad in (False, True):
        if kernels.launch_unsupported_reason(torch.float32, I, H, 1, allow_tf32, needs_grad) is not None:
            continue
        launched.clear()
        w_hh, fc_w = torch.randn(H, H), torch.randn(1, H)
        kernels.rnn_linear_fwd(torch.randn(B, T, I), torch.randn(H, I), w_hh, None, None, fc_w, None,
                               allow_tf32=allow_tf32, store_hs=needs_grad)
        if needs_grad:
            kernels.rnn_linear_bwd_sweep(torch.randn(B, T, H), w_hh, fc_w, torch.randn(B, 1), allow_tf32=allow_tf32)
        assert launched
        streams = kernels.streamed_weight_bytes(torch.float32, I, H, 1, allow_tf32, needs_grad) > 0
        assert streams == any(map(launch_streams_weights, launched))


def test_the_harness_reports_the_family_backend_of_its_mode(fake, monkeypatch):
    # benchmarks.harness.fused_backend labels each row's "fused" with the path it took; for a FAMILY case it
    # asks SimpleRNN.backend_for, which must count the gradient of the job's mode.
    import sys

    from helpers import ROOT
    sys.path.insert(0, str(ROOT))
    from benchmarks import harness

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    # A configuration that streams in training only (a stand-in, as in the test above).
    monkeypatch.setattr(lstm, "streamed_weight_bytes",
                        lambda cell, dtype, hidden_size, allow_tf32, needs_grad: 1 << 20 if needs_grad else 0)
    model = fused_rnn.SimpleRNN(32, 64, 1, cell="lstm", allow_tf32=True)
    x = cuda_tensor(fake, FEW, 100, 32)
    with fake:
        assert harness.fused_backend(model, x, True, True) == "torch"
        assert harness.fused_backend(model, x, False, True) == "triton"


def test_the_speed_table_names_the_path_a_graph_captured(tmp_path):
    # The long case's IEEE forward times fused_graph with backend "auto", which now captures cuDNN there
    # (B = 64): the README's "fused in a CUDA graph" column must say so, as its "fused" column does.
    import json
    import sys

    from helpers import ROOT
    sys.path.insert(0, str(ROOT))
    from benchmarks import harness, report

    def row(impl, ms, backend):
        return dict(case="long", B=64, T=1024, I=64, H=128, O=1, dtype="float32", precision="ieee", mode="forward",
                    impl=impl, backend=backend, median_ms=ms, p20_ms=ms, p80_ms=ms, peak_mem_bytes=None, samples=10,
                    calls=100, threads=None, over_stock=None, commit="abc", torch="2.11")

    device = "NVIDIA H200"
    rows = [row("stock", 0.82, "cudnn"), row("fused", 0.83, "torch"), row("fused_graph", 0.80, "torch")]
    (tmp_path / f"{harness.device_slug(device)}-2026-11-27.json").write_text(json.dumps(dict(
        device=device, torch="2.11.0", triton="3.6.0", cuda="13.0", date="2026-11-27", commit="0" * 16, rows=rows,
        skipped=[])))
    table = report.speed_section(report.by_device(report.results_files(tmp_path)))
    line = next(line for line in table.splitlines() if "| long " in line)
    assert line.endswith("| 800 µs (torch path) |"), line


def test_eval_mode_with_gradients_keeps_the_kernels(fake, streaming_gru):
    # cuDNN's RNN backward refuses a forward run in eval mode ("cudnn RNN backward can only be called in
    # training mode": saliency maps, integrated gradients, adversarial inputs on an eval() model). The
    # kernels' backward does not care; the stock _VF call gets train=self.training, so "auto" must not
    # leave an eval-mode call that needs a gradient to it. Inference in eval mode, and training, may go.
    x, rnn, model = streaming_gru
    with fake:
        assert rnn.backend_for(x) == "torch" and model.backend_for(x) == "torch"      # training
        rnn.eval()
        model.eval()
        assert rnn.backend_for(x) == "triton" and model.backend_for(x) == "triton"    # eval, gradients
        with torch.no_grad():
            assert rnn.backend_for(x) == "torch" and model.backend_for(x) == "torch"  # eval inference
        rnn.requires_grad_(False)
        model.requires_grad_(False)
        assert rnn.backend_for(x) == "torch" and model.backend_for(x) == "torch"      # nothing to differentiate


# --- on a GPU: what the stock path cannot do ------------------------------------------------------------------

def _streaming_gru_call(train):
    """A TF32 GRU at H = 128 over 64 sequences on CUDA, TF32 on for cuDNN too: "auto" leaves it to cuDNN in
    training (and in eval-mode inference)."""
    torch.manual_seed(0)
    rnn = fused_rnn.GRU(64, 128, batch_first=True).cuda().train(train)
    x = torch.randn(FEW, 16, 64, device="cuda", requires_grad=True)
    return rnn, x


@pytest.mark.gpu
def test_eval_mode_input_gradients_run_on_cuda():
    # Not run in this review (no GPU): the eval-mode case above, end to end. Before the fix cuDNN raised
    # "cudnn RNN backward can only be called in training mode" at backward().
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        rnn, x = _streaming_gru_call(train=False)
        assert rnn.backend_for(x) == "triton"
        out, _ = rnn(x)
        out.square().sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.gpu
@pytest.mark.xfail(strict=True, raises=RuntimeError, reason=(
    "a474f2c: backend='auto' leaves training calls of the streaming kind (here the TF32 GRU at H = 128, B = 64) "
    "to cuDNN, whose RNN backward has no derivative ('Double backwards is not supported for CuDNN RNNs'); "
    "the kernels' differentiable backward ran this before. No local fix: create_graph is not known at forward. "
    "README (Double backward) documents the workaround: cudnn.flags(enabled=False) or backend='triton'"))
def test_double_backward_through_auto_on_cuda():
    # Not run in this review (no GPU).
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        rnn, x = _streaming_gru_call(train=True)
        assert rnn.backend_for(x) == "torch"
        out, _ = rnn(x)
        grad, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grad.square().sum().backward()
