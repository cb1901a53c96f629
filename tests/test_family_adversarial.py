"""Adversarial checks of the family API (fused_rnn.RNN, GRU, LSTM, convert, SimpleRNN's layer path).

Each test is a defect found by trying the modules as a demanding PyTorch user
would, against torch.nn with the same weights; see the test's docstring for
the failing input.
"""

import pytest
import torch
from torch import nn

import fused_rnn
from fused_rnn import backends, recurrence

I, H, B, T = 3, 5, 2, 4     # tiny: the interpreter runs the kernels


def test_jit_trace_takes_the_stock_path_where_auto_would_pick_the_kernels(monkeypatch):
    """torch.jit.trace records dispatcher ops only; the layer driver's eager kernel launches
    are not recorded (on CUDA, where "auto" picks them, the trace would replay an unwritten
    buffer; interpreted, the launch crashes on the tracer's values). Under tracing "auto" must
    take the stock math, as it does under torch.func transforms.
    Failing input: run_layers("gru", ..., backend="auto") under jit.trace where the request
    picks the kernels (forced here by patching backends.select_backend, as on CUDA)."""
    monkeypatch.setattr(backends, "select_backend", lambda backend, request: "torch" if backend == "torch" else "triton")
    torch.manual_seed(0)
    stock = nn.GRU(I, H, num_layers=2)
    weights = [w.detach() for w in stock._flat_weights]   # constants of the trace

    def driver(x):
        out, h_n, _ = recurrence.run_layers("gru", x, weights, None, None, None, num_layers=2,
                                            bidirectional=False, batch_first=False, dropout=0.0, training=False,
                                            allow_tf32=False, backend="auto")
        return out, h_n

    x = torch.randn(T, B, I)
    traced = torch.jit.trace(driver, (x,), check_trace=False)
    x2 = torch.randn(T, B, I)
    expected = stock(x2)
    torch.testing.assert_close(traced(x2), expected, atol=1e-6, rtol=1e-5)


def test_jit_trace_refuses_forced_triton_with_a_clear_error():
    """backend="triton" under torch.jit.trace: a RuntimeError that names jit.trace before any
    launch, not a crash inside the kernel (the interpreter's "invalid operands of type
    pointer<int64>") or a trace missing the kernels."""
    torch.manual_seed(0)
    ours = fused_rnn.LSTM(I, H, backend="triton")
    with pytest.raises(RuntimeError, match="jit.trace"):
        torch.jit.trace(ours, (torch.randn(T, B, I),), check_trace=False)


def test_convert_keeps_a_module_whose_forward_was_replaced_on_the_instance():
    """Wrappers such as accelerate's add_hook_to_module replace ``module.forward`` on the instance
    (and keep ``_old_forward``, ``_hf_hook``); the fused replacement silently dropped them.
    Failing input: an nn.GRU whose instance forward scales the output, converted: the model's
    output changed (and the wrapper's attributes were gone)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.GRU(I, H, batch_first=True))
    gru = model[0]
    gru._old_forward = gru.forward

    def wrapped(*args, **kwargs):
        out, h_n = gru._old_forward(*args, **kwargs)
        return out * 2, h_n
    gru.forward = wrapped
    x = torch.randn(B, T, I)
    expected = model(x)
    fused_rnn.convert(model)
    torch.testing.assert_close(model(x), expected, atol=0, rtol=0)
    assert model[0] is gru
    from fused_rnn.convert import unconvertible_reason
    assert "_old_forward" in unconvertible_reason(gru)


@pytest.mark.parametrize("cell, layers, part", [("gru", 2, "rnn"), ("lstm", 1, "fc"), ("rnn", 1, "rnn")])
def test_simple_rnn_runs_a_forward_replaced_on_its_submodule_instance(cell, layers, part):
    """SimpleRNN's fused path computes rnn and fc itself; a ``forward`` replaced on the submodule
    instance (accelerate's add_hook_to_module, a user's wrapper) was skipped silently.
    Failing input: SimpleRNN(cell="gru", num_layers=2, backend="triton") with model.rnn.forward
    wrapped to scale its output: y differed from the submodules' computation."""
    torch.manual_seed(2)
    model = fused_rnn.SimpleRNN(I, H, 2, cell=cell, num_layers=layers, backend="triton")
    sub = getattr(model, part)
    old_forward = sub.forward

    def wrapped(*args, **kwargs):
        result = old_forward(*args, **kwargs)
        return (result[0] * 2, result[1]) if part == "rnn" else result * 2
    sub.forward = wrapped
    x = torch.randn(B, T, I)
    expected = model._forward_submodules(x, None, None, False)   # through the submodules, wrapper included
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)
    assert model.backend_for(x) == "torch"


@pytest.mark.parametrize("cls, stock_cls", [(fused_rnn.LSTM, nn.LSTM), (fused_rnn.GRU, nn.GRU)])
def test_compile_fullgraph_on_cpu_trains_through_the_registered_ops(cls, stock_cls):
    """Under torch.compile, "auto" on CPU ran the stock _VF call instead of the driver's registered
    ops (RNNBase._layer_backend returned "torch" either way): an LSTM in training crashed
    (aot_eager: "expected all tensors_saved_with_vc_check to be Tensors"; inductor: "expected
    Tensor() for op: aten.mkldnn_rnn_layer"), and every new T recompiled.
    Failing input: torch.compile(fused_rnn.LSTM(3, 5), fullgraph=True)(torch.randn(4, 2, 3)) with
    the parameters requiring grad."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    torch.manual_seed(4)
    stock = stock_cls(I, H)
    ours = cls(I, H)
    ours.load_state_dict(stock.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(ours, fullgraph=True, backend=counter)
    try:
        for steps in (T, T + 1, T + 2):
            x = torch.randn(steps, B, I)
            expected, got = stock(x), compiled(x)
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
            expected[0].square().sum().backward()
            got[0].square().sum().backward()
            for name, p in stock.named_parameters():
                torch.testing.assert_close(getattr(ours, name).grad, p.grad, atol=2e-5, rtol=1e-4)
        assert counter.frame_count <= 2      # T dynamic after the first recompile
    finally:
        torch._dynamo.reset()


def test_compile_fullgraph_backend_torch_lstm_trains_on_cpu():
    """Failing input: torch.compile(fused_rnn.LSTM(3, 5, backend="torch"), fullgraph=True,
    backend="aot_eager")(torch.randn(4, 2, 3)): "expected all tensors_saved_with_vc_check to be
    Tensors". backend="torch" traced the stock _VF.lstm, which on CPU (mkldnn_rnn_layer) fails in
    AOTAutograd with parameters requiring grad (upstream: pytorch/pytorch#158007); under compile it now
    runs the driver's plain registered ops (the stock math per layer), as "auto" does. Eager calls keep
    the _VF call."""
    torch._dynamo.reset()
    torch.manual_seed(5)
    stock = nn.LSTM(I, H)
    ours = fused_rnn.LSTM(I, H, backend="torch")
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(T, B, I)
    try:
        got = torch.compile(ours, fullgraph=True, backend="aot_eager")(x)
        want = stock(x)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        got[0].sum().backward()
        want[0].sum().backward()
    finally:
        torch._dynamo.reset()
    for name, param in stock.named_parameters():
        torch.testing.assert_close(getattr(ours, name).grad, param.grad, atol=2e-5, rtol=1e-4)


def test_compiled_gru_under_cpu_autocast_keeps_the_eager_output_dtype():
    """On CPU torch.nn's GRU stays float32 under autocast (its RNN and LSTM do not); the driver cast every
    cell, CUDA's policy. Failing input: torch.compile(fused_rnn.GRU(3, 5), fullgraph=True) under
    torch.autocast("cpu", dtype=torch.bfloat16): output bfloat16, eager (stock) float32."""
    torch._dynamo.reset()
    torch.manual_seed(6)
    ours = fused_rnn.GRU(I, H)
    x = torch.randn(T, B, I)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager, _ = ours(x)
            compiled, _ = torch.compile(ours, fullgraph=True, backend="aot_eager")(x)
    finally:
        torch._dynamo.reset()
    assert compiled.dtype == eager.dtype


def test_convert_does_not_repeat_the_constructor_warning():
    """nn.RNN(dropout=0.3, num_layers=1) warns once when built; convert built the replacement through
    the same constructor and warned a second time about a model the user did not write.
    Failing input: fused_rnn.convert(nn.Sequential(nn.RNN(3, 5, dropout=0.3)))."""
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        model = nn.Sequential(nn.RNN(I, H, dropout=0.3))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused_rnn.convert(model)
    assert isinstance(model[0], fused_rnn.RNN) and model[0].dropout == 0.3


def test_jit_trace_of_the_elman_simple_rnn_with_forced_triton_says_why():
    """rnn_linear had no jit.trace check: the interpreted launch crashed on the tracer's values, and on
    CUDA the eager launch would be missing from the trace. Failing input: torch.jit.trace(
    fused_rnn.SimpleRNN(3, 5, 2, backend="triton"), x): InterpreterError "invalid operands of type
    pointer<int64> and triton.language.int64"."""
    model = fused_rnn.SimpleRNN(I, H, 2, backend="triton")
    with pytest.raises(RuntimeError, match="jit.trace"):
        torch.jit.trace(model, (torch.randn(B, T, I),), check_trace=False)


def test_jit_trace_of_rnn_linear_takes_the_stock_path_where_auto_would_pick_the_kernel(monkeypatch):
    """On CUDA "auto" picks the kernel, whose eager launch jit.trace does not record: the trace would hold
    its outputs as constants. Under tracing "auto" runs the stock math. (The choice is forced to "triton"
    here, standing in for a CUDA tensor; no launch may happen.)"""
    from fused_rnn import backends
    from fused_rnn.kernels import rnn_linear as kernels

    monkeypatch.setattr(backends, "select_backend",
                        lambda backend, request: "triton" if backend == "auto" else backend)

    def no_launch(*args, **kwargs):
        raise AssertionError("a kernel was launched under jit.trace")
    monkeypatch.setattr(kernels, "_launch", no_launch)
    torch.manual_seed(8)
    params = [torch.randn(H, I), torch.randn(H, H), torch.randn(H), torch.randn(H), torch.randn(2, H), None]
    traced = torch.jit.trace(lambda x: fused_rnn.rnn_linear(x, *params), (torch.randn(B, T, I),),
                             check_trace=False)
    x = torch.randn(B + 1, T, I)
    torch.testing.assert_close(traced(x), fused_rnn.rnn_linear(x, *params, backend="torch"))
