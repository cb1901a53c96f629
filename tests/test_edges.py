"""rnn_linear at the edges (issue 10): lengths errors, padding, compile with a changing T,
export with a dynamic T, the interpreter's switch, threads, torch.func."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from fused_rnn import SimpleRNN, rnn_linear
from helpers import DEVICE, TOL, as_float64, make_params, rnn_linear_loop, run_python

B, T, I, H, O = 4, 5, 3, 16, 2


@pytest.mark.parametrize("lengths, error, message", [
    ("abc", TypeError, "lengths must be a tensor or a sequence of integers, got str"),
    ([None, 1, 2, 3], TypeError, "lengths must be a tensor or a sequence of integers"),
    ([1.5, 2, 3, 4], TypeError, "lengths must be an integer tensor, got dtype torch.float"),
    (torch.tensor([1, 2, 3, 4], device="meta"), ValueError, "lengths is on meta"),
])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_bad_lengths_say_what_is_wrong(lengths, error, message, backend):
    params = make_params(I, H, O)
    x = torch.randn(B, T, I, device=DEVICE)
    with pytest.raises(error, match=message):
        rnn_linear(x, *params, lengths=lengths, backend=backend)
    model = SimpleRNN(I, H, O, backend=backend).to(DEVICE)
    with pytest.raises(error, match=message):
        model(x, lengths=lengths)


def test_lengths_as_a_list():
    params = make_params(I, H, O)
    x = torch.randn(B, T, I, device=DEVICE)
    torch.testing.assert_close(rnn_linear(x, *params, lengths=[5, 1, 2, 3], backend="triton"),
                               rnn_linear(x, *params, lengths=torch.tensor([5, 1, 2, 3]), backend="torch"),
                               **TOL[torch.float32])


@pytest.mark.parametrize("bad", [[1, 6, 2, 3], [0, 1, 2, 3]])
def test_compiled_lengths_out_of_range_raise(bad):
    torch.manual_seed(0)
    model = SimpleRNN(I, H, O).to(DEVICE)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(B, T, I, device=DEVICE)
    compiled(x, lengths=torch.tensor([1, 2, 3, 5], device=DEVICE))
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T\]"):
        compiled(x, lengths=torch.tensor(bad, device=DEVICE))


@pytest.mark.parametrize("backend", ["triton", "torch", "compiled"])
def test_nan_padding_leaves_gradients_finite(backend):
    """Padding after lengths is never read: NaN/Inf there changes no output and no gradient."""
    params = [p.requires_grad_() for p in make_params(I, H, O, seed=3)]
    lengths = torch.tensor([5, 2, 1, 3])
    x = torch.randn(B, T, I, device=DEVICE)
    x[1, 2:] = float("nan")
    x[2, 1:] = float("inf")
    x[3, 3:] = -float("inf")
    x.requires_grad_()
    fn = rnn_linear
    if backend == "compiled":
        fn = torch.compile(rnn_linear, fullgraph=True)
        backend = "auto"
    fn(x, *params, lengths=lengths, backend=backend).square().sum().backward()
    ref = [t.detach().double().requires_grad_() for t in (x, *params)]
    rnn_linear_loop(*ref, lengths=lengths)[0].square().sum().backward()
    for name, got, want in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "fc_w", "fc_b"], (x, *params), ref):
        assert torch.isfinite(got.grad).all(), name
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("backend", ["triton", "torch", "compiled"])
@pytest.mark.parametrize("where", ["bias_ih", "weight_ih", "weight_hh"])
def test_nan_parameter_with_lengths_leaves_padding_out_of_gradients(backend, where):
    """A NaN weight or bias makes the held state and W_ih NaN; the products past each length must
    not meet them (0 · NaN), so every gradient's NaN pattern is the float64 loop's (the packed stock one)."""
    params = [p.clone() for p in make_params(I, H, O, seed=5)]
    target = {"weight_ih": 0, "weight_hh": 1, "bias_ih": 2}[where]
    params[target].view(-1)[3] = float("nan")
    params = [p.requires_grad_() for p in params]
    lengths = torch.tensor([5, 2, 1, 3])
    x = torch.randn(B, T, I, device=DEVICE, requires_grad=True)
    fn = torch.compile(rnn_linear, fullgraph=True) if backend == "compiled" else rnn_linear
    y = fn(x, *params, lengths=lengths, backend="auto" if backend == "compiled" else backend)
    y.backward(torch.ones_like(y))
    ref = [t.detach().double().requires_grad_() for t in (x, *params)]
    y_ref = rnn_linear_loop(*ref, lengths=lengths)[0]
    y_ref.backward(torch.ones_like(y_ref))
    for name, got, want in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "fc_w", "fc_b"], (x, *params), ref):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-5, rtol=1e-4, equal_nan=True, msg=name)


def count_compiles(fn, calls):
    from torch._dynamo.utils import counters
    counters.clear()
    for args in calls:
        fn(*args)
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("train", [False, True])
def test_compile_does_not_recompile_per_T_or_B(train):
    torch.manual_seed(0)
    model = SimpleRNN(I, H, O).to(DEVICE)
    compiled = torch.compile(model, fullgraph=True)

    def step(x, lengths):
        y = compiled(x, lengths=lengths)
        if train:
            y.sum().backward()
        return y

    torch._dynamo.reset()
    # The first new T and B compile it dynamic (dynamo's automatic dynamic shapes); after that, none.
    calls = [(torch.randn(b, t, I, device=DEVICE), torch.full((b,), t)) for b, t in ((B, 2), (B + 3, 3))]
    count_compiles(step, calls)
    more = [(torch.randn(b, t, I, device=DEVICE), torch.arange(b) % t + 1)
            for t in range(4, 14) for b in (B, B + 3)]
    assert count_compiles(step, more) == 0
    x, lengths = more[-1]
    torch.testing.assert_close(compiled(x, lengths=lengths), model(x, lengths=lengths), **TOL[torch.float32])


def test_export_with_dynamic_T():
    torch.manual_seed(0)
    model = SimpleRNN(I, H, O)
    x = torch.randn(B, 4, I)
    dims = {0: torch.export.Dim("B", min=2), 1: torch.export.Dim("T", min=2)}
    program = torch.export.export(model, (x,), dynamic_shapes={"x": dims})
    for shape in ((B, 9, I), (7, 3, I)):
        x = torch.randn(shape)
        torch.testing.assert_close(program.module()(x), model(x), **TOL[torch.float32])


INTERPRET_LATE = (
    "import os, torch{imports}\n"
    "os.environ['TRITON_INTERPRET'] = '1'\n"
    "import fused_rnn\n"
    "try:\n    y = fused_rnn.rnn_linear(torch.randn(2, 3, 3), *[torch.randn(s) for s in "
    "((4, 3), (4, 4), (4,), (4,), (1, 4), (1,))], backend='triton')\n    print('RAN', tuple(y.shape))\n"
    "except RuntimeError as e:\n    print('ERROR', e)\n")


def test_interpreter_switched_on_after_triton_was_imported_says_so():
    out = run_python("-c", INTERPRET_LATE.format(imports=", triton"),
                     env={"TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "ERROR" in out.stdout and "TRITON_INTERPRET=1 was set after triton was imported" in out.stdout, out.stdout


def test_interpreter_switched_on_after_fused_rnn_but_before_triton_runs():
    """import fused_rnn does not import triton (the kernels load on first use), so this still works."""
    out = run_python("-c", INTERPRET_LATE.format(imports=", fused_rnn"),
                     env={"TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "RAN (2, 1)" in out.stdout, out.stdout


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's global state; a GPU runs compiled kernels")
def test_interpreted_launches_from_threads():
    """The interpreter patches triton.language globally while a kernel runs; launches are serialised."""
    torch.manual_seed(0)
    configs = [(torch.float32, "tanh"), (torch.float16, "relu"), (torch.bfloat16, "tanh"), (torch.float32, "relu")]
    models = [SimpleRNN(5, 20, 3, backend="triton", nonlinearity=nl).to(dt) for dt, nl in configs]
    xs = [torch.randn(7, 6, 5, dtype=configs[i % 4][0]) for i in range(16)]

    def run(i):
        x = xs[i].clone().requires_grad_()
        y = models[i % 4](x)
        y.float().sum().backward()
        return y.detach(), x.grad

    expected = [run(i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, list(range(16)) * 2))
    for i, (y, dx) in enumerate(results):
        assert torch.equal(y, expected[i % 16][0]) and torch.equal(dx, expected[i % 16][1]), i


def test_torch_func_on_the_triton_backend_says_so():
    params = make_params(I, H, O)
    x = torch.randn(B, T, I, device=DEVICE)

    def f(x):
        return rnn_linear(x, *params, backend="triton").sum()

    with pytest.raises(RuntimeError, match="torch.func.*backend='auto' or 'torch'"):
        torch.func.grad(f)(x)
    with pytest.raises(RuntimeError, match="torch.func.*backend='auto' or 'torch'"):
        torch.func.jvp(f, (x,), (torch.ones_like(x),))


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_torch_func_grad_and_jvp(backend):
    params = make_params(I, H, O, seed=4)
    x = torch.randn(B, T, I, device=DEVICE)
    h0 = torch.randn(B, H, device=DEVICE) * 0.5

    def f(x, w_hh):
        return rnn_linear(x, params[0], w_hh, *params[2:], h0, backend=backend).square().sum()

    ref = [t.double().requires_grad_() for t in (x, params[1])]
    y_ref = rnn_linear_loop(ref[0], params[0].double(), ref[1], *as_float64(*params[2:]), h0.double())[0]
    y_ref.square().sum().backward()
    dx, dw = torch.func.grad(f, argnums=(0, 1))(x, params[1])
    torch.testing.assert_close(dx.double(), ref[0].grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dw.double(), ref[1].grad, atol=1e-5, rtol=1e-4)
    tangent = torch.randn_like(x)
    _, jvp_out = torch.func.jvp(lambda x: f(x, params[1]), (x,), (tangent,))
    torch.testing.assert_close(jvp_out.double(), (ref[0].grad * tangent.double()).sum(), atol=1e-4, rtol=1e-4)
