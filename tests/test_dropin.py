"""Everything a user does to the seed model works the same on fused_rnn.SimpleRNN (issue 10).

Each test runs the same action on the seed model (tests/seed_model.py) and on ours,
with the same weights, and compares. backend="triton" makes ours take the kernel
(interpreted on CPU) wherever the fused path is allowed.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune, spectral_norm, weight_norm
from torch.nn.utils import parametrizations

import fused_rnn
import seed_model
from fused_rnn import SimpleRNN
from helpers import DEVICE, TOL

B, T, I, H, O = 5, 6, 4, 12, 3


def models(backend="triton", seed=0):
    torch.manual_seed(seed)
    seed_m = seed_model.SimpleRNN(I, H, O)
    ours = SimpleRNN(I, H, O, backend=backend)
    ours.load_state_dict(seed_m.state_dict())
    return seed_m.to(DEVICE), ours.to(DEVICE)


def data(seed=1):
    torch.manual_seed(seed)
    return torch.randn(B, T, I, device=DEVICE)


def test_rnn_submodule_is_fused_rnn_RNN():
    model = SimpleRNN(I, H, O)
    assert type(model.rnn) is fused_rnn.RNN
    assert model.rnn.batch_first and model.rnn.num_layers == 1
    assert type(model.fc) is nn.Linear


@pytest.mark.parametrize("where", ["rnn", "fc"])
def test_forward_hooks_fire(where):
    seed_m, ours = models()
    x = data()
    calls = []
    for m in (seed_m, ours):
        getattr(m, where).register_forward_pre_hook(lambda mod, args: calls.append("pre"))
        # A forward hook that changes the output: the module must use what the hook returns.
        getattr(m, where).register_forward_hook(
            lambda mod, args, out: (out[0] * 0.5, out[1]) if isinstance(out, tuple) else out * 0.5)
    expected = seed_m(x)
    got = ours(x)
    assert calls == ["pre", "pre"]
    torch.testing.assert_close(got, expected, **TOL[torch.float32])


def modify(kind, model):
    if kind == "weight_norm":
        weight_norm(model.fc, "weight")
    elif kind == "weight_norm_rnn":
        weight_norm(model.rnn, "weight_hh_l0")
    elif kind == "spectral_norm":
        spectral_norm(model.rnn, "weight_hh_l0")
    elif kind == "prune":
        prune.l1_unstructured(model.rnn, "weight_ih_l0", amount=0.5)
    elif kind == "parametrizations.weight_norm":
        parametrizations.weight_norm(model.fc, "weight")
    elif kind == "orthogonal":
        parametrizations.orthogonal(model.rnn, "weight_hh_l0")


@pytest.mark.parametrize("kind", ["weight_norm", "weight_norm_rnn", "spectral_norm", "prune",
                                  "parametrizations.weight_norm"])
def test_weight_reparametrizations_match_seed(kind):
    seed_m, ours = models()
    for m in (seed_m, ours):
        torch.manual_seed(7)                              # spectral_norm draws a random vector
        modify(kind, m)
    x = data()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (seed_m, ours)]
    for step in range(2):          # the second step sees the weights the hooks recompute from updated ones
        expected = seed_m(x)
        got = ours(x)
        torch.testing.assert_close(got, expected, **TOL[torch.float32], msg=lambda m: f"step {step}: {m}")
        expected.square().sum().backward()
        got.square().sum().backward()
        for (name, p), q in zip(ours.named_parameters(), seed_m.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
        for opt in optimizers:
            opt.step()
            opt.zero_grad()


def test_torchinfo_sees_both_layers():
    torchinfo = pytest.importorskip("torchinfo")
    _, ours = models(backend="auto")
    summary = torchinfo.summary(ours, input_data=[data()], verbose=0)
    names = [type(layer.module).__name__ for layer in summary.summary_list]
    assert "RNN" in names and "Linear" in names
    assert summary.total_params == sum(p.numel() for p in ours.parameters())
    assert summary.total_mult_adds > 0
    rnn_row = next(layer for layer in summary.summary_list if type(layer.module).__name__ == "RNN")
    assert rnn_row.output_size[:2] == [B, T]


@pytest.mark.parametrize("replacement", [
    dict(num_layers=2, batch_first=True),
    dict(num_layers=1, batch_first=False),
    dict(num_layers=1, batch_first=True, bidirectional=True),
])
@pytest.mark.parametrize("cls", [nn.RNN, fused_rnn.RNN])
def test_replaced_rnn_runs_as_the_seed_would(replacement, cls):
    """A different rnn is run through the submodules: out, _ = rnn(x); fc(out[:, -1])."""
    _, ours = models()
    torch.manual_seed(8)
    ours.rnn = cls(I, H, **replacement).to(DEVICE)
    ours.fc = nn.Linear(H * (2 if replacement.get("bidirectional") else 1), O).to(DEVICE)
    x = data()
    out, _ = ours.rnn(x)
    expected = ours.fc(out[:, -1, :])
    torch.testing.assert_close(ours(x), expected, atol=0, rtol=0)


def test_stock_nn_rnn_assigned_to_rnn_works():
    seed_m, ours = models()
    ours.rnn = seed_m.rnn
    x = data()
    torch.testing.assert_close(ours(x), seed_m(x), atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_empty_batch_like_seed(backend):
    seed_m, ours = models(backend)
    x = torch.randn(0, T, I, device=DEVICE)
    expected = seed_m(x)
    got = ours(x)
    assert got.shape == expected.shape == (0, O)
    y, h_n = ours(x, return_hidden=True)
    assert y.shape == (0, O) and h_n.shape == (1, 0, H)
    y = fused_rnn.rnn_linear(x, *[p.detach() for p in ours.parameters()], backend=backend)
    assert y.shape == (0, O)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_meta_module_on_meta_input(backend):
    _, ours = models(backend=backend)
    ours = ours.to("meta")
    x = torch.randn(B, T, I, device="meta")
    y = ours(x)
    assert y.is_meta and y.shape == (B, O)
    lengths = torch.tensor([1, 2, 3, 4, 5], device="meta")
    y = fused_rnn.rnn_linear(x, *ours.parameters(), lengths=lengths, backend=backend)
    assert y.is_meta and y.shape == (B, O)


def test_jit_trace_passes_its_check():
    seed_m, ours = models(backend="auto")
    x = data()
    traced = torch.jit.trace(ours, (x,))                 # check_trace reruns and compares
    torch.testing.assert_close(traced(x), seed_m(x), atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_fc_gets_no_gradient_when_only_h_n_is_used(backend):
    _, ours = models(backend)
    _, h_n = ours(data(), return_hidden=True)
    h_n.square().sum().backward()
    assert ours.fc.weight.grad is None and ours.fc.bias.grad is None
    assert ours.rnn.weight_hh_l0.grad is not None


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_double_backward_gradient_penalty(backend):
    """autograd.grad(create_graph=True), then backward of a penalty on those grads, against the seed."""
    seed_m, ours = models(backend)
    x = data()
    results = []
    for m in (seed_m, ours):
        params = list(m.parameters())
        loss = m(x).square().sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        penalty.backward()
        results.append([p.grad for p in params])
    for name, got, want in zip([n for n, _ in ours.named_parameters()], results[1], results[0]):
        assert got is not None, name
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=name)


# --- torch.compile sees the live module ---------------------------------------------------------

def compiled_pair(backend="auto"):
    _, ours = models(backend)
    return ours, torch.compile(ours, fullgraph=True)


def check_same(model, compiled, x):
    torch.testing.assert_close(compiled(x), model(x), **TOL[torch.float32])


def test_compile_after_load_state_dict_assign():
    model, compiled = compiled_pair()
    x = data()
    check_same(model, compiled, x)
    torch.manual_seed(9)
    other = SimpleRNN(I, H, O).to(DEVICE)
    model.load_state_dict(other.state_dict(), assign=True)
    check_same(model, compiled, x)
    torch.testing.assert_close(compiled(x), other(x), **TOL[torch.float32])


def test_compile_after_new_parameter_and_nonlinearity():
    model, compiled = compiled_pair()
    x = data()
    check_same(model, compiled, x)
    model.rnn.weight_hh_l0 = nn.Parameter(torch.randn(H, H, device=DEVICE) * 0.3)
    check_same(model, compiled, x)
    model.rnn.nonlinearity = "relu"
    model.rnn.mode = "RNN_RELU"
    check_same(model, compiled, x)


def test_compile_under_functional_call():
    model, _ = compiled_pair()
    x = data()
    params = {k: v * 0.5 for k, v in model.named_parameters()}
    compiled = torch.compile(lambda p, x: torch.func.functional_call(model, p, (x,)), fullgraph=True)
    torch.testing.assert_close(compiled(params, x), torch.func.functional_call(model, params, (x,)),
                               **TOL[torch.float32])


@pytest.mark.parametrize("how", ["to_empty", "assign"])
def test_meta_build_then_load_then_compile(how):
    seed_m, _ = models()
    with torch.device("meta"):
        model = SimpleRNN(I, H, O)
    if how == "to_empty":
        model = model.to_empty(device=DEVICE)
        model.load_state_dict(seed_m.state_dict())
    else:
        model.load_state_dict(seed_m.state_dict(), assign=True)
    x = data()
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), seed_m(x), **TOL[torch.float32])
    torch.testing.assert_close(model(x), seed_m(x), **TOL[torch.float32])


# --- precision follows the stock module ----------------------------------------------------------

def test_allow_tf32_default_follows_cudnn_flag(monkeypatch):
    """None (the default) reads torch.backends.cudnn.allow_tf32 at call time, as nn.RNN does."""
    from conftest import kernels
    seen = []
    real = kernels.rnn_linear_fwd

    def spy(*args, **kwargs):
        seen.append(kwargs["allow_tf32"])
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "rnn_linear_fwd", spy)
    _, model = models()
    x = data()
    assert model.allow_tf32 is None
    with torch.no_grad():
        for flag in (True, False):
            monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", flag)
            model(x)
            fused_rnn.rnn_linear(x, *[p for p in model.parameters()], backend="triton")
        model.allow_tf32 = True
        model(x)
        model.allow_tf32 = False
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
        model(x)
    assert seen == [True, True, False, False, True, False]
