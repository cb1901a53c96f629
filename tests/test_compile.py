"""torch.compile(fullgraph=True), torch.export, opcheck, CUDA graphs and DDP."""

import pytest
import torch
from torch.library import opcheck

import fused_rnn
from fused_rnn import SimpleRNN
from helpers import TOL, run_python

B, T, I, H, O = 6, 5, 4, 16, 2

# Blocks `import triton` as on a machine without it (as tests/test_import.py).
NO_TRITON = "import sys; sys.modules['triton'] = None\n"


def model_and_input(device, seed=30):
    torch.manual_seed(seed)
    model = SimpleRNN(I, H, O).to(device)
    return model, torch.randn(B, T, I, device=device)


def check_compiled_matches_eager(device):
    model, x = model_and_input(device)
    compiled = torch.compile(model, fullgraph=True)       # stock nn.RNN would graph-break here
    lengths = torch.tensor([5, 1, 3, 2, 5, 4], device=device)
    h0 = torch.randn(1, B, H, device=device) * 0.5
    for kwargs in (dict(), dict(h0=h0, lengths=lengths)):
        torch.testing.assert_close(compiled(x, **kwargs), model(x, **kwargs), **TOL[torch.float32])
    # Training through the compiled graph: register_autograd + the reverse-sweep op.
    compiled(x, h0=h0, lengths=lengths).square().sum().backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x, h0=h0, lengths=lengths).square().sum().backward()
    for got, want in zip(compiled_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_compile_fullgraph_cpu():
    check_compiled_matches_eager("cpu")


def test_compile_traces_backend_choice():
    """backend="triton" under compile walks the same choice as CUDA does (imports, limits)."""
    model, x = model_and_input("cpu")
    model.backend = "triton"
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), **TOL[torch.float32])


# CUDA requests for every kind of kernel module: the backend choice that a compiled
# forward on CUDA tensors traces (no GPU needed: the requests only name the device).
CUDA_REQUESTS = """
import torch
from fused_rnn import backends
from fused_rnn.backends.request import LayerRequest, RnnLinearRequest
cuda = torch.device("cuda")
REQUESTS = [RnnLinearRequest(cuda, torch.float32, 10, 20, 1),
            *(LayerRequest(cell, cuda, torch.bfloat16, 64) for cell in ("rnn_tanh", "gru", "lstm"))]
"""


@torch.library.custom_op("fused_rnn_tests::asks_for_the_kernels", mutates_args=())
def asks_for_the_kernels(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@asks_for_the_kernels.register_fake
def _asks_for_the_kernels_fake(x):
    # What the fused ops' fakes do under torch.compile: the launchers run in plain Python and ask for the kernels.
    from fused_rnn.backends import triton as triton_backend
    triton_backend.kernels()
    triton_backend.layer_kernels("gru")
    return torch.empty_like(x)


def test_compile_when_a_fake_fills_the_kernel_caches(monkeypatch):
    """The first compiled call's fakes import the kernels in plain Python while Dynamo traces the choice.

    H200, torch 2.11: the choice had read the empty cache, Dynamo guarded it as
    None, then found the module the fake had put there and could not guard it:
    "AssertionError: Unexpected type <class 'module'>" (torch 2.13 too).
    """
    from fused_rnn.backends import triton as triton_backend
    namespace = {}
    exec(CUDA_REQUESTS, namespace)
    monkeypatch.setattr(triton_backend, "_KERNELS", None)
    monkeypatch.setattr(triton_backend, "_LAYER_KERNELS", {})

    def choose(x):
        names = [namespace["backends"].select_backend("auto", r) for r in namespace["REQUESTS"]]
        return asks_for_the_kernels(x), names

    torch._dynamo.reset()
    _, compiled = torch.compile(choose, fullgraph=True)(torch.zeros(2))
    assert compiled == [namespace["backends"].select_backend("auto", r) for r in namespace["REQUESTS"]]
    assert compiled == ["triton"] * 4


def test_compile_traces_the_choice_with_compiled_triton_kernels():
    """As on a GPU machine: triton not interpreted, and Dynamo wrapping triton's kernels (has_triton).

    H200, torch 2.11: tracing the check for TRITON_INTERPRET set late took
    type() of a triton kernel, which that Dynamo cannot ("TritonKernelVariable()
    has no type"), so every compiled forward on CUDA failed. torch 2.13's Dynamo
    can (TritonKernelVariable.python_type): removed here, it answers as 2.11's.
    A fresh process: the first call is the compiled one.
    """
    code = CUDA_REQUESTS + """
import torch.utils._triton
torch.utils._triton.has_triton = lambda: True
from torch._dynamo.variables.functions import TritonKernelVariable
if "python_type" in vars(TritonKernelVariable):
    del TritonKernelVariable.python_type
def choose(x):
    return x + 1, [backends.select_backend("auto", r) for r in REQUESTS]
_, compiled = torch.compile(choose, fullgraph=True)(torch.zeros(2))
eager = [backends.select_backend("auto", r) for r in REQUESTS]
print("compiled", compiled, "eager", eager)
assert compiled == eager == ["triton"] * 4
"""
    out = run_python("-c", code, env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]


def test_compile_without_triton_chooses_the_stock_path():
    """CUDA torch without triton (Windows wheels): "auto" on CUDA must choose "torch" under compile too.

    A failing import statement in code Dynamo traces is no ImportError the code
    can catch but "Unsupported: Import failure", so the compiled choice failed:
    on the first call, and since the caches are not read under compile, on every
    call (before, an eager first call had cached the reason).
    """
    code = NO_TRITON + CUDA_REQUESTS + """
def choose(x):
    return x + 1, [backends.select_backend("auto", r) for r in REQUESTS]
compiled_first = torch.compile(choose, fullgraph=True, backend="eager")(torch.zeros(2))[1]
eager = choose(torch.zeros(2))[1]
torch._dynamo.reset()
compiled_after_eager = torch.compile(choose, fullgraph=True, backend="eager")(torch.zeros(2))[1]
print(compiled_first, eager, compiled_after_eager)
assert compiled_first == eager == compiled_after_eager == ["torch"] * 4
"""
    out = run_python("-c", code, env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("kind", ["GRU", "SimpleRNN"])
def test_a_first_call_compiled_leaves_no_guard_on_the_lazy_imports(monkeypatch, kind, backend):
    """The first call of a process compiled: the lazily imported modules (rnn._recurrence, the kernels)
    must not leave a guard on their empty caches, or the second call compiles again (a full Inductor
    compile, and an error under torch.compiler.set_stance("fail_on_recompile"))."""
    from torch._dynamo.testing import CompileCounter
    from fused_rnn import rnn as rnn_module
    from fused_rnn.backends import triton as triton_backend
    monkeypatch.setattr(rnn_module, "_RECURRENCE", None)
    monkeypatch.setattr(triton_backend, "_KERNELS", None)
    monkeypatch.setattr(triton_backend, "_LAYER_KERNELS", {})
    torch._dynamo.reset()
    torch.manual_seed(32)
    if kind == "GRU":
        model = fused_rnn.GRU(5, 20, batch_first=True, backend=backend)
        stock = torch.nn.GRU(5, 20, batch_first=True)
        stock.load_state_dict(model.state_dict())
    else:
        model = SimpleRNN(5, 20, 3, cell="gru", backend=backend)
        stock = None
    x = torch.randn(3, 7, 5)
    counter = CompileCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    outs = [compiled(x) for _ in range(3)]
    assert counter.frame_count == 1, f"{counter.frame_count} compiles for three calls alike"
    want = stock(x) if stock is not None else model.fc(model.rnn(x)[0][:, -1])
    for got in outs:
        torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_export_captures_one_op():
    model, x = model_and_input("cpu")
    program = torch.export.export(model, (x,))
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.fused_rnn.rnn_linear.default in calls
    assert not any("rnn_tanh" in str(c) for c in calls)
    # Same stock math; F.linear on a contiguous h_n vs on the out[:, -1] view
    # may round differently (3e-8 seen), hence a tolerance.
    torch.testing.assert_close(program.module()(x), model(x), **TOL[torch.float32])


def op_args(device, requires_grad):
    torch.manual_seed(31)
    x = torch.randn(B, T, I, device=device)
    params = [torch.randn(s, device=device) * 0.3 for s in ((H, I), (H, H), (H,), (H,), (O, H), (O,))]
    h0 = torch.randn(B, H, device=device)
    tensors = [t.requires_grad_(requires_grad) for t in (x, *params, h0)]
    return tensors[:7], tensors[7], torch.tensor([5, 1, 2, 4, 3, 5], device=device)


def run_opcheck(device):
    inputs, h0, lengths = op_args(device, requires_grad=True)
    cases = [(*inputs, h0, lengths, False, False, True), (*inputs, None, None, True, False, True)]
    plain, h0_plain, _ = op_args(device, requires_grad=False)
    cases.append((*plain, h0_plain, None, False, False, False))     # inference: no states kept
    for args in cases:
        opcheck(torch.ops.fused_rnn.rnn_linear.default, args)
    hs = torch.rand(B, T, H, device=device)
    opcheck(torch.ops.fused_rnn.rnn_linear_bwd_sweep.default,
            (hs, plain[2], plain[5], torch.randn(B, O, device=device), torch.randn(B, H, device=device),
             lengths, False, False))


def test_opcheck_cpu():
    run_opcheck("cpu")


@pytest.mark.gpu
def test_compile_fullgraph_cuda():
    check_compiled_matches_eager("cuda")


@pytest.mark.gpu
def test_opcheck_cuda():
    run_opcheck("cuda")


@pytest.mark.gpu
def test_cuda_graph_capture():
    model, x = model_and_input("cuda")
    static_x = x.clone()
    with torch.no_grad():
        model(static_x)                                 # compile the kernel before capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
    new_x = torch.randn_like(x)
    static_x.copy_(new_x)
    graph.replay()
    with torch.no_grad():
        torch.testing.assert_close(static_y, model(new_x), atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_ddp_two_processes_match_one(backend):
    """DDP (gloo, 2 CPU processes) gives the single-process gradients; triton runs interpreted."""
    out = run_python("tests/ddp_check.py", backend, env={"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "largest gradient difference" in out.stdout


def test_compile_h0_check_with_automatic_dynamic_shapes():
    """After compiles at other sizes Dynamo makes B and H symbolic; the h0 shape check must still pass.

    It compared shape tuples with ``in``, which Dynamo answered False for equal
    symbolic sizes: "h0 must have shape (1, 6, 16) ... got (1, 6, 16)".
    """
    torch._dynamo.reset()
    torch.manual_seed(31)
    for i, h in ((10, 20), (10, 24)):
        torch.compile(SimpleRNN(i, h, 1), fullgraph=True)(torch.randn(3, 5, i))
    model, x = model_and_input("cpu")
    compiled = torch.compile(model, fullgraph=True)
    for h0 in (torch.randn(1, B, H), torch.randn(B, H)):
        torch.testing.assert_close(compiled(x, h0=h0), model(x, h0=h0), **TOL[torch.float32])
    with pytest.raises(Exception, match="h0 must have shape"):
        compiled(x, h0=torch.randn(2, B, H))
