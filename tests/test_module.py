"""fused_rnn.SimpleRNN as a drop-in for the seed's SimpleRNN; the demo; backend errors."""

import pytest
import torch

import seed_model
from fused_rnn import SimpleRNN
from helpers import DEVICE, TOL, run_python

SEED_KEYS = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "fc.weight", "fc.bias"]


def test_same_seed_same_weights():
    torch.manual_seed(123)
    seed = seed_model.SimpleRNN(10, 20, 1)
    torch.manual_seed(123)
    ours = SimpleRNN(10, 20, 1)
    assert list(ours.state_dict()) == list(seed.state_dict()) == SEED_KEYS
    for k, v in seed.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert ours.hidden_size == 20


@pytest.mark.parametrize("B,T,I,H,O", [(32, 5, 10, 20, 1), (3, 17, 4, 33, 6), (1, 1, 1, 1, 1)])
def test_cpu_output_is_bit_identical_to_seed(B, T, I, H, O):
    torch.manual_seed(B + T)
    seed = seed_model.SimpleRNN(I, H, O)
    ours = SimpleRNN(I, H, O)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(B, T, I)
    expected = seed(x)
    got = ours(x)
    assert torch.equal(got, expected)
    got.sum().backward()                                  # stock path trains as the seed does
    expected.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), seed.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_state_dict_loads_both_ways():
    torch.manual_seed(0)
    seed = seed_model.SimpleRNN(10, 20, 1)
    ours = SimpleRNN(10, 20, 1)
    ours.load_state_dict(seed.state_dict())               # strict: same keys, same shapes
    seed2 = seed_model.SimpleRNN(10, 20, 1)
    seed2.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, 10)
    assert torch.equal(seed2(x), seed(x))


def test_kernel_module_matches_seed_on_device():
    """The module on the kernel (GPU, or the interpreter on CPU) against the seed on CPU."""
    torch.manual_seed(1)
    seed = seed_model.SimpleRNN(10, 20, 1)
    ours = SimpleRNN(10, 20, 1, backend="triton").to(DEVICE)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(32, 5, 10)
    with torch.no_grad():
        got = ours(x.to(DEVICE))
    assert ours.backend_for(x.to(DEVICE)) == "triton"
    torch.testing.assert_close(got.cpu(), seed(x).detach(), **TOL[torch.float32])


def test_module_h0_and_low_precision():
    torch.manual_seed(2)
    seed = seed_model.SimpleRNN(6, 24, 3)
    ours = SimpleRNN(6, 24, 3, backend="triton").to(DEVICE, torch.bfloat16)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(9, 8, 6)
    h0 = torch.randn(1, 9, 24) * 0.3
    with torch.no_grad():
        got = ours(x.to(DEVICE, torch.bfloat16), h0.to(DEVICE, torch.bfloat16))
        expected, _ = seed.rnn(x, h0)
        expected = seed.fc(expected[:, -1])
    assert got.dtype == torch.bfloat16
    # bf16 weights and inputs vs the fp32 seed: the inputs' rounding dominates.
    torch.testing.assert_close(got.float().cpu(), expected, atol=5e-2, rtol=5e-2)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        SimpleRNN(2, 3, 1, backend="cudnn")


def test_triton_on_cpu_without_interpreter_says_so():
    code = ("import torch, fused_rnn\n"
            "m = fused_rnn.SimpleRNN(3, 4, 1, backend='triton')\n"
            "try:\n    m(torch.randn(2, 3, 3))\n"
            "except RuntimeError as e:\n    print('ERROR', e)\n")
    out = run_python("-c", code, env={"TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "ERROR" in out.stdout and "TRITON_INTERPRET=1" in out.stdout and "before triton is imported" in out.stdout


def test_demo():
    """`python -m fused_rnn`, as the README runs it: a short summary, checked against the seed model."""
    out = run_python("-m", "fused_rnn", env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    shape_line = next(line for line in lines if line.startswith("output: "))
    assert shape_line.startswith("output: torch.Size([32, 1]); first 4 values "), shape_line
    backend = next(line for line in lines if line.startswith("backend: "))
    diff = next(line for line in lines if line.startswith("max |output - seed model's forward| = "))
    assert float(diff.split("=")[1].split()[0]) < 1e-5
    if torch.cuda.is_available():
        assert backend.startswith("backend: fused Triton kernel on "), backend
    else:
        assert backend.startswith("backend: stock nn.RNN + nn.Linear on cpu (") and "no GPU" in backend, backend
        assert diff.endswith("(both ran the same stock math)"), diff   # not called "fused"
        # The seed notebook's model itself, same seed, same order: the values shown.
        torch.manual_seed(0)
        seed = seed_model.SimpleRNN(10, 20, 1)
        want = seed(torch.randn(32, 5, 10))[:4, 0].tolist()
        shown = [float(v) for v in shape_line.split("values ")[1].split(", ")]
        assert shown == pytest.approx(want, abs=1e-4), (shown, want)
    assert "total 661" in out.stdout and "rnn (RNN) 640, fc (Linear) 21" in out.stdout
    assert len(lines) <= 25, out.stdout        # a summary, not the 32 output rows


# --- the generalized seed: layers, directions, cells (issues 13 and 14) ------------------------------------

import itertools  # noqa: E402

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fused_rnn  # noqa: E402

STOCK_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class UserModel(nn.Module):
    """The user code SimpleRNN replaces: a stock recurrent module (batch_first) and a Linear on out[:, -1]."""

    def __init__(self, I, H, O, cell, num_layers, bidirectional):
        super().__init__()
        self.rnn = STOCK_CELLS[cell](I, H, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(H * (2 if bidirectional else 1), O)

    def forward(self, x, h0=None):
        out, _ = self.rnn(x, h0)
        return self.fc(out[:, -1])


GENERAL = list(itertools.product(["rnn", "gru", "lstm"], [1, 2], [False, True]))


def general_pair(cell, layers, bidirectional, backend, I=4, H=5, O=3, seed=40):
    torch.manual_seed(seed)
    user = UserModel(I, H, O, cell, layers, bidirectional)
    torch.manual_seed(seed)
    ours = SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional, backend=backend)
    return user, ours


def initial_state(cell, L, D, B, H=5, seed=41):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(L * D, B, H, generator=g) * 0.5
    return (h, torch.randn(L * D, B, H, generator=g) * 0.5) if cell == "lstm" else h


@pytest.mark.parametrize("cell, layers, bidirectional", GENERAL)
def test_general_seed_same_weights_keys_and_cpu_results(cell, layers, bidirectional):
    """Seeded init, state_dict keys both ways, and the CPU stock path bit-identical to the user model."""
    user, ours = general_pair(cell, layers, bidirectional, "auto")
    assert type(ours.rnn) is {"rnn": fused_rnn.RNN, "gru": fused_rnn.GRU, "lstm": fused_rnn.LSTM}[cell]
    assert list(ours.state_dict()) == list(user.state_dict())
    for (name, p), q in zip(ours.named_parameters(), user.parameters(), strict=True):
        assert torch.equal(p, q), name
    user.load_state_dict(ours.state_dict())
    ours.load_state_dict(user.state_dict())
    x = torch.randn(3, 6, 4)
    h0 = initial_state(cell, layers, 2 if bidirectional else 1, 3)
    for args in ((x,), (x, h0)):
        got, want = ours(*args), user(*args)
        assert torch.equal(got, want)
        got.square().sum().backward()
        want.square().sum().backward()
        for (name, p), q in zip(ours.named_parameters(), user.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad), name
        ours.zero_grad()
        user.zero_grad()


def leaf_copy(t):
    if isinstance(t, tuple):
        return tuple(leaf_copy(s) for s in t)
    return None if t is None else t.detach().clone().requires_grad_()


def flat(t):
    if isinstance(t, tuple):
        return [u for s in t for u in flat(s)]
    return [] if t is None else [t]


def fused_and_submodules(cell, layers, bidirectional, kind, with_h0, return_hidden, training=False, dropout=0.0):
    """Run one call through the fused path (backend="triton") and the submodules (backend="torch"),
    with the same weights and inputs; return both (outputs, gradients of inputs and parameters)."""
    B, T, D = 5, 6, 2 if bidirectional else 1
    _, fused = general_pair(cell, layers, bidirectional, "triton")
    _, stock = general_pair(cell, layers, bidirectional, "torch")
    results = []
    torch.manual_seed(42)
    x = torch.randn(B, T, 4)
    lengths = torch.tensor([6, 2, 4, 1, 6])
    h0 = initial_state(cell, layers, D, B) if with_h0 else None
    for model in (fused, stock):
        model.rnn.dropout = dropout
        model.train(training)
        model.to(DEVICE)
        xs, hs = leaf_copy(x.to(DEVICE)), leaf_copy(tuple(h.to(DEVICE) for h in flat(h0)) or None)
        h_arg = None if hs is None else (hs if cell == "lstm" else hs[0])
        if kind == "packed":
            call = (pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False), h_arg)
            kwargs = {}
        else:
            call, kwargs = (xs, h_arg), ({"lengths": lengths} if kind == "lengths" else {})
        torch.manual_seed(44)          # the same dropout masks on both paths (CPU)
        result = model(*call, **kwargs, return_hidden=return_hidden)
        outs = flat(result)
        g = torch.Generator().manual_seed(43)
        sum((o * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outs).backward()
        grads = [xs.grad] + [h.grad for h in flat(hs)] + [p.grad for p in model.parameters()]
        results.append((outs, grads))
    return results


@pytest.mark.parametrize("cell, layers, bidirectional", GENERAL)
@pytest.mark.parametrize("kind, with_h0, return_hidden", [("plain", False, False), ("lengths", True, True),
                                                          ("packed", True, False), ("packed", False, True)])
def test_general_fused_path_matches_submodules(cell, layers, bidirectional, kind, with_h0, return_hidden):
    (outs, grads), (want_outs, want_grads) = fused_and_submodules(cell, layers, bidirectional, kind, with_h0,
                                                                  return_hidden)
    assert len(outs) == len(want_outs) == (1 if not return_hidden else 3 if cell == "lstm" else 2)
    for i, (a, b) in enumerate(zip(outs, want_outs, strict=True)):
        assert a.shape == b.shape, i
        torch.testing.assert_close(a, b, **TOL[torch.float32], msg=lambda m: f"output {i}: {m}")
    for i, (a, b) in enumerate(zip(grads, want_grads, strict=True)):
        if b is None:       # fc gets no gradient when only h_n is used, and so on: the same on both sides
            assert a is None, i
            continue
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m: f"gradient {i}: {m}")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_general_fused_dropout_matches_submodules(cell, p):
    """Training with inter-layer dropout, also before the last layer: p=1 zeroes every inter-layer input
    (a mask independent of the random stream); p=0.5 draws as torch.nn does, so on CPU one seed gives the
    submodules' masks for padded input without lengths (with lengths they are drawn over packed rows)."""
    if p < 1 and DEVICE != "cpu":
        pytest.skip("cuDNN draws its own dropout masks")
    (outs, grads), (want_outs, want_grads) = fused_and_submodules(cell, 3, True, "lengths" if p == 1 else "plain",
                                                                  True, True, training=True, dropout=p)
    for a, b in zip(outs + grads, want_outs + want_grads, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell, layers, bidirectional", [("rnn", 2, False), ("gru", 2, False), ("lstm", 2, True),
                                                         ("rnn", 1, True)])
def test_general_last_layer_never_writes_its_output(cell, layers, bidirectional, monkeypatch):
    """Layers 1..L-1 through run_layers; the last layer only through store_out=False layers or rnn_linear."""
    from fused_rnn import module as module_file
    from fused_rnn import recurrence
    calls = []
    for name in ("run_layers", "layer"):
        real = getattr(recurrence, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            calls.append((_name, kwargs.get("num_layers"), kwargs.get("store_out", True),
                          kwargs.get("store_last_output", True)))
            return _real(*args, **kwargs)
        monkeypatch.setattr(recurrence, name, spy)
    real_rnn_linear = module_file.rnn_linear
    monkeypatch.setattr(module_file, "rnn_linear",
                        lambda *a, **k: calls.append(("rnn_linear",)) or real_rnn_linear(*a, **k))
    _, model = general_pair(cell, layers, bidirectional, "triton")
    model(torch.randn(3, 4, 4, device=DEVICE).to(DEVICE))
    top = [c for c in calls if c[0] in ("run_layers", "rnn_linear") or c[0] == "layer" and c[2] is False]
    if layers > 1:
        assert ("run_layers", layers - 1, True, True) in calls
    if cell == "rnn" and not bidirectional:
        assert ("rnn_linear",) in calls
    else:
        # The direct last-layer calls: forward, and for two directions the one-step reverse layer.
        assert sum(1 for c in top if c[0] == "layer") == (2 if bidirectional else 1)


def test_general_constructor_errors():
    with pytest.raises(ValueError, match=r"cell must be one of \('rnn', 'gru', 'lstm'\), got 'lru'"):
        SimpleRNN(2, 3, 1, cell="lru")
    with pytest.raises(ValueError, match="nonlinearity applies to cell='rnn' only"):
        SimpleRNN(2, 3, 1, cell="gru", nonlinearity="relu")
    with pytest.raises(ValueError, match="backend='cuda' runs only the one-layer, one-direction Elman RNN"):
        SimpleRNN(2, 3, 1, num_layers=2, backend="cuda")
    model = SimpleRNN(2, 3, 1, cell="lstm", backend="torch")
    assert model.rnn.backend == "torch"                  # "torch" means stock everywhere, model.rnn too
    assert SimpleRNN(2, 3, 1, backend="triton").rnn.backend == "auto"


def test_general_lstm_state_pairs_on_the_stock_path():
    """An LSTM's h0 is (h0, c0), [B, H] accepted for one layer; return_hidden gives (y, (h_n, c_n))."""
    _, model = general_pair("lstm", 1, False, "auto")
    x = torch.randn(3, 6, 4)
    h0, c0 = initial_state("lstm", 1, 1, 3)
    y, (h_n, c_n) = model(x, (h0[0], c0[0]), return_hidden=True)
    out, (h_s, c_s) = model.rnn(x, (h0, c0))
    assert torch.equal(y, model.fc(out[:, -1])) and torch.equal(h_n, h_s) and torch.equal(c_n, c_s)


def test_general_compile_fullgraph_with_lengths():
    """A two-layer bidirectional LSTM seed model compiles whole (the stock nn.LSTM would be refused)."""
    torch._dynamo.reset()          # RNNBase.forward was compiled for other configurations by other tests
    user, model = general_pair("lstm", 2, True, "auto")
    x = torch.randn(5, 4, 4)
    lengths = torch.tensor([4, 1, 3, 2, 4])
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Attempted to wrap RNN, GRU, or LSTM"):
        torch.compile(user, fullgraph=True)(x)
    compiled = torch.compile(model, fullgraph=True)
    y, (h_n, c_n) = compiled(x, lengths=lengths, return_hidden=True)
    want_y, (want_h, want_c) = model(x, lengths=lengths, return_hidden=True)      # CPU auto: the submodules
    for got, want in ((y, want_y), (h_n, want_h), (c_n, want_c)):
        torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("cell, layers, bidirectional", [("gru", 1, False), ("lstm", 2, True), ("rnn", 2, False)])
def test_general_fused_path_under_autocast(cell, layers, bidirectional):
    """bf16 autocast through run_layers, the last layer's direct calls and the head: bf16 y, fp32 gradients."""
    _, model = general_pair(cell, layers, bidirectional, "triton")
    model.to(DEVICE)
    x = torch.randn(3, 5, 4, device=DEVICE)
    with torch.no_grad():
        expected = model(x)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    torch.testing.assert_close(y.float(), expected, **TOL[torch.bfloat16])


def test_general_elman_head_falls_back_to_the_layer_path_where_rnn_linear_cannot_launch():
    """Two Elman layers, fp32 with 3xTF32 at H = 128: the layer kernels fit, but rnn_linear's tiles for the
    last layer (W_ih, W_hh and fc_W, twice each) need more shared memory than a block has. The head must
    then run as the layer kernel plus fc, not raise (nor, under "auto", change what runs)."""
    torch.manual_seed(45)
    H = 128
    model = SimpleRNN(4, H, 2, num_layers=2, backend="triton", allow_tf32=False).to(DEVICE)
    stock = SimpleRNN(4, H, 2, num_layers=2, backend="torch").to(DEVICE)
    stock.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 4, device=DEVICE)
    torch.testing.assert_close(model(x), stock(x), **TOL[torch.float32])
