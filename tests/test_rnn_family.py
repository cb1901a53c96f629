"""fused_rnn.RNN, GRU and LSTM against torch.nn's with the same weights, for every option.

The stock path (CPU, backend "auto" or "torch") must be bit-identical to
torch.nn, forward and backward, dropout in training included (the same ATen
call draws the same masks from the same seed). The fused path
(backend="triton": the layer driver, on helpers.DEVICE: kernels interpreted on
CPU, compiled on a GPU, where "triton" refuses CPU tensors) is compared with
torch.nn on the same device to fp32 tolerance.
"""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_rnn
from helpers import DEVICE

B, T, I, H = 3, 5, 3, 5           # odd sizes, tiny: the interpreter runs the kernels
LENGTHS = [5, 2, 4]               # unsorted, so packing permutes the batch
CLASSES = {"rnn_tanh": (nn.RNN, fused_rnn.RNN, dict()), "rnn_relu": (nn.RNN, fused_rnn.RNN, dict(nonlinearity="relu")),
           "gru": (nn.GRU, fused_rnn.GRU, dict()), "lstm": (nn.LSTM, fused_rnn.LSTM, dict())}
# fp32 through a different summation order (and the kernels' exp) than ATen's; a few steps, two layers.
FUSED_TOL = dict(atol=2e-5, rtol=1e-4)


def pair(cell, seed=0, device="cpu", backend="auto", **options):
    """(torch.nn module, fused_rnn module) built from the same seed: the same weights if init matches."""
    stock_cls, fused_cls, extra = CLASSES[cell]
    torch.manual_seed(seed)
    stock = stock_cls(I, H, **extra, **options).to(device)
    torch.manual_seed(seed)
    ours = fused_cls(I, H, **extra, **options, backend=backend).to(device)
    return stock, ours


def states(cell, L, D, batch, seed, device="cpu"):
    """A random initial state as the module takes it: h0, or (h0, c0) for the LSTM; batch None: unbatched."""
    g = torch.Generator().manual_seed(seed)
    shape = (L * D, batch, H) if batch is not None else (L * D, H)
    h = (torch.randn(shape, generator=g) * 0.5).to(device)
    if cell == "lstm":
        return h, (torch.randn(shape, generator=g) * 0.5).to(device)
    return h


def make_input(kind, batch_first, seed, device="cpu"):
    """(input, batch size or None): padded [B, T, I] / [T, B, I], a PackedSequence, or unbatched [T, I]."""
    g = torch.Generator().manual_seed(seed)
    if kind == "unbatched":
        return torch.randn(T, I, generator=g).to(device), None
    x = torch.randn(B, T, I, generator=g).to(device)
    if kind == "packed":
        return pack_padded_sequence(x if batch_first else x.transpose(0, 1), torch.tensor(LENGTHS),
                                    batch_first=batch_first, enforce_sorted=False), B
    return (x if batch_first else x.transpose(0, 1).contiguous()), B


def leaves(input, hx):
    """Fresh leaf copies (requires_grad) of the input tensor and the states, and the call's arguments."""
    def leaf(t):
        return t.detach().clone().requires_grad_()
    if isinstance(input, torch.Tensor):
        x = leaf(input)
        arg = x
    else:
        x = leaf(input.data)
        arg = input._replace(data=x)
    if hx is None:
        return [x], (arg,)
    hs = [leaf(h) for h in (hx if isinstance(hx, tuple) else (hx,))]
    return [x, *hs], (arg, tuple(hs) if isinstance(hx, tuple) else hs[0])


def outputs(result):
    """The module's outputs as a flat list of tensors (a PackedSequence's data, h_n, c_n)."""
    output, hidden = result
    data = output if isinstance(output, torch.Tensor) else output.data
    return [data, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def loss(flat, seed=7):
    """A loss touching every output with different random weights (so every gradient path is checked)."""
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g).to(t.device)).sum() for t in flat)


def run(module, input, hx, seed=None):
    """Forward (with the RNG at seed, for dropout), loss, backward: (outputs, input grads, parameter grads)."""
    tensors, args = leaves(input, hx)
    if seed is not None:
        torch.manual_seed(seed)
    result = module(*args)
    flat = outputs(result)
    loss(flat).backward()
    grads = [t.grad for t in tensors]
    param_grads = {name.removeprefix("_orig_mod."): p.grad for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return result, flat, grads, param_grads


def on_cpu(result):
    """A run() result with every tensor moved to CPU, to compare with a reference run there."""
    (output, hidden), flat, grads, param_grads = result
    hidden = tuple(h.cpu() for h in hidden) if isinstance(hidden, tuple) else hidden.cpu()
    return ((output.to("cpu"), hidden), [t.cpu() for t in flat], [g.cpu() for g in grads],
            {name: g.cpu() for name, g in param_grads.items()})


def compare(got, want, **tol):
    """Compare two run() results: structure (PackedSequence fields), outputs, input and parameter gradients."""
    result_g, flat_g, grads_g, params_g = got
    result_w, flat_w, grads_w, params_w = want
    assert type(result_g[0]) is type(result_w[0])
    if not isinstance(result_w[0], torch.Tensor):
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            assert torch.equal(getattr(result_g[0], field), getattr(result_w[0], field)), field
    assert type(result_g[1]) is type(result_w[1])
    check = (lambda a, b, msg: torch.testing.assert_close(a, b, msg=msg, **tol)) if tol else \
        (lambda a, b, msg: torch.testing.assert_close(a, b, atol=0, rtol=0, msg=msg))
    for i, (a, b) in enumerate(zip(flat_g, flat_w, strict=True)):
        check(a, b, f"output {i}")
    for i, (a, b) in enumerate(zip(grads_g, grads_w, strict=True)):
        check(a, b, f"input grad {i}")
    assert list(params_g) == list(params_w)
    for name in params_w:
        check(params_g[name], params_w[name], name)


def options(cell, layers, bidirectional, batch_first, bias, dropout=0.0):
    return dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias, dropout=dropout)


# --- construction --------------------------------------------------------------------------------------

CONSTRUCTIONS = [
    ("rnn_tanh", dict()), ("rnn_relu", dict(num_layers=2, bias=False)), ("gru", dict()),
    ("gru", dict(num_layers=3, bidirectional=True, batch_first=True, dropout=0.25)), ("lstm", dict()),
    ("lstm", dict(num_layers=2, bidirectional=True, bias=False)), ("lstm", dict(proj_size=3, num_layers=2)),
    ("lstm", dict(proj_size=2, bidirectional=True, bias=False)),
]


@pytest.mark.parametrize("cell, config", CONSTRUCTIONS)
def test_seeded_init_names_attributes_and_state_dicts(cell, config):
    stock, ours = pair(cell, seed=3, **config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in stock.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), stock.parameters(), strict=True):
        assert p.shape == q.shape and torch.equal(p, q), name
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "_flat_weights_names", "_all_weights"):
        assert getattr(ours, attr) == getattr(stock, attr), attr
    if cell.startswith("rnn"):
        assert ours.nonlinearity == stock.nonlinearity
    assert repr(ours) == repr(stock)
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters(), strict=True))
    assert [[p.shape for p in w] for w in ours.all_weights] == [[p.shape for p in w] for w in stock.all_weights]
    # state_dicts load both ways (strict: same keys, same shapes)
    torch.manual_seed(4)
    other_stock, other_ours = pair(cell, seed=4, **config)
    ours.load_state_dict(other_stock.state_dict())
    stock.load_state_dict(other_ours.state_dict())
    for (name, p), q in zip(ours.named_parameters(), stock.parameters(), strict=True):
        assert torch.equal(p, q) and torch.equal(p, other_stock.state_dict()[name]), name


def test_positional_arguments_and_factory_kwargs():
    for stock_cls, fused_cls, args in ((nn.RNN, fused_rnn.RNN, (3, 4, 2, "relu", False, True, 0.0, True)),
                                       (nn.GRU, fused_rnn.GRU, (3, 4, 2, False, True, 0.0, True)),
                                       (nn.LSTM, fused_rnn.LSTM, (3, 4, 2, False, True, 0.0, True, 2))):
        torch.manual_seed(0)
        stock = stock_cls(*args, dtype=torch.float64)
        torch.manual_seed(0)
        ours = fused_cls(*args, dtype=torch.float64)
        assert repr(ours) == repr(stock)
        for (name, p), q in zip(ours.named_parameters(), stock.parameters(), strict=True):
            assert p.dtype == torch.float64 and torch.equal(p, q), name
    assert fused_rnn.LSTM(3, 4, device="meta").weight_ih_l0.is_meta


@pytest.mark.parametrize("cls, kwargs", [
    ("RNN", dict(proj_size=2)), ("GRU", dict(proj_size=2)), ("LSTM", dict(proj_size=4)), ("LSTM", dict(proj_size=-1)),
    ("RNN", dict(nonlinearity="gelu")), ("GRU", dict(dropout=1.5)), ("LSTM", dict(dropout=True)),
    ("GRU", dict(bias=1)), ("LSTM", dict(batch_first=None)), ("RNN", dict(num_layers=0)),
    ("GRU", dict(hidden_size=0)), ("LSTM", dict(input_size=2.0)),
])
def test_constructor_errors_match_stock(cls, kwargs):
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(Exception) as stock_error:
        getattr(nn, cls)(**args)
    with pytest.raises(type(stock_error.value)) as ours_error:
        getattr(fused_rnn, cls)(**args)
    assert str(ours_error.value) == str(stock_error.value)


def test_rnn_base_takes_a_cell_name():
    torch.manual_seed(0)
    stock = nn.GRU(3, 4, num_layers=2)
    torch.manual_seed(0)
    ours = fused_rnn.rnn.RNNBase("gru", 3, 4, num_layers=2)
    assert ours.cell.name == "gru" and ours.mode == "GRU"
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), stock.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"cell must be one of \('rnn_tanh', 'rnn_relu', 'gru', 'lstm'\), got 'lru'"):
        fused_rnn.rnn.RNNBase("lru", 3, 4)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        fused_rnn.rnn.RNNBase("rnn_relu", 3, 4, proj_size=2)


def test_dropout_warning_and_backend_argument():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        fused_rnn.GRU(3, 4, dropout=0.5)
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'triton', 'torch'\), got 'cudnn'"):
        fused_rnn.LSTM(3, 4, backend="cudnn")
    assert repr(fused_rnn.LSTM(3, 4, backend="torch", allow_tf32=False)) == \
        "LSTM(3, 4, backend='torch', allow_tf32=False)"


# --- the stock path: bit-identical to torch.nn ----------------------------------------------------------

GRID = list(itertools.product(["rnn_tanh", "rnn_relu", "gru", "lstm"], [1, 2], [False, True],
                              ["padded", "packed", "unbatched"]))


@pytest.mark.parametrize("cell, layers, bidirectional, kind", GRID)
def test_stock_path_bit_identical(cell, layers, bidirectional, kind):
    """Every combination of batch_first × bias × h0, eval and (with layers) train: dropout 0.4 between
    layers, the same seed, so the same masks."""
    D = 2 if bidirectional else 1
    # Training matters only through dropout, which acts between layers.
    for batch_first, bias, with_h0, training in itertools.product([False, True], [False, True], [False, True],
                                                                  [False, True] if layers > 1 else [False]):
        dropout = 0.4 if layers > 1 else 0.0
        stock, ours = pair(cell, seed=5, **options(cell, layers, bidirectional, batch_first, bias, dropout))
        stock.train(training)
        ours.train(training)
        input, batch = make_input(kind, batch_first, seed=6)
        hx = states(cell, layers, D, batch, seed=8) if with_h0 else None
        assert ours.backend_for(input, hx) == "torch"
        compare(run(ours, input, hx, seed=9), run(stock, input, hx, seed=9))


def test_dropout_in_training_acts_between_layers():
    """The stock path's dropout: training differs from eval, eval is deterministic, one layer has none."""
    _, ours = pair("lstm", seed=1, num_layers=2, dropout=0.5)
    x, _ = make_input("padded", False, seed=2)
    ours.eval()
    first, second = ours(x)[0], ours(x)[0]
    assert torch.equal(first, second)
    ours.train()
    torch.manual_seed(3)
    trained = ours(x)[0]
    assert trained.shape == first.shape and not torch.equal(trained, first)


def test_backend_torch_and_projections_run_stock():
    _, ours = pair("lstm", seed=1, proj_size=2, backend="triton")
    x, _ = make_input("padded", False, seed=2)
    assert ours.backend_for(x) == "torch"        # valid but not fused: the stock path, no error
    stock, _ = pair("lstm", seed=1, proj_size=2)
    compare(run(ours, x, None), run(stock, x, None))
    _, ours = pair("gru", seed=1, backend="torch")
    assert ours.backend_for(x) == "torch"


FORWARD_ERRORS = [
    ("bad_dims", lambda L, D: (torch.randn(2, 3, 3, 1), None)),
    ("input_size", lambda L, D: (torch.randn(2, 3, 4), None)),
    ("dtype", lambda L, D: (torch.randn(2, 3, 3, dtype=torch.float64), None)),
    ("hx_dims_batched", lambda L, D: (torch.randn(2, 3, 3), torch.randn(3, H))),
    ("hx_dims_unbatched", lambda L, D: (torch.randn(2, 3), torch.randn(L * D, 3, H))),
    ("hx_shape", lambda L, D: (torch.randn(2, 3, 3), torch.randn(L * D, 2, H))),
]


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("name, make", FORWARD_ERRORS)
def test_forward_errors_match_stock(cell, name, make):
    stock, ours = pair(cell, num_layers=2)
    x, h = make(2, 1)
    hx = h if h is None or cell != "lstm" else (h, h.clone())
    with pytest.raises(Exception) as stock_error:
        stock(x, hx)
    with pytest.raises(type(stock_error.value)) as ours_error:
        ours(x, hx)
    assert str(ours_error.value) == str(stock_error.value)


def test_lstm_checks_the_cell_state_too():
    stock, ours = pair("lstm", num_layers=2)
    x = torch.randn(T, B, I)
    hx = (torch.randn(2, B, H), torch.randn(2, B + 1, H))
    for module in (stock, ours):
        with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(2, 3, 5\), got \[2, 4, 5\]"):
            module(x, hx)
    for input in (x, pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)):
        with pytest.raises(TypeError, match="LSTM hx must be a tuple"):
            ours(input, torch.randn(2, B, H))


# --- torch.compile -------------------------------------------------------------------------------------

@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied: every configuration here recompiles RNNBase.forward, and the recompile
    limit (8 per code object) counts across tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_stock_lstm_is_refused_by_dynamo_in_fullgraph(fresh_dynamo):
    """The difference the fused modules make: torch.nn's RNNs cannot be compiled with fullgraph=True."""
    stock, _ = pair("lstm")
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Attempted to wrap RNN, GRU, or LSTM"):
        torch.compile(stock, fullgraph=True)(torch.randn(T, B, I))


@pytest.mark.parametrize("cell, config", [("rnn_tanh", dict(num_layers=2, batch_first=True)),
                                          ("gru", dict(bidirectional=True)),
                                          ("lstm", dict(num_layers=2, bidirectional=True, batch_first=True))])
def test_compile_fullgraph_matches_torch_nn(cell, config, fresh_dynamo):
    stock, ours = pair(cell, seed=11, **config)
    compiled = torch.compile(ours, fullgraph=True)
    D = 2 if config.get("bidirectional") else 1
    input, batch = make_input("padded", config.get("batch_first", False), seed=12)
    for hx in (None, states(cell, config.get("num_layers", 1), D, batch, seed=13)):
        compare(run(compiled, input, hx), run(stock, input, hx), **FUSED_TOL)
    # It reads the live parameters: a new weight is seen without recompiling by hand.
    with torch.no_grad():
        ours.weight_hh_l0.mul_(-1)
        stock.weight_hh_l0.mul_(-1)
    compare(run(compiled, input, None), run(stock, input, None), **FUSED_TOL)


@pytest.mark.parametrize("cell, config", [("lstm", dict(proj_size=2, num_layers=2)), ("gru", dict(backend="torch"))])
def test_compile_fullgraph_on_the_stock_path(cell, config, fresh_dynamo):
    """Configurations on the stock math (projections: the _VF call; backend="torch": the driver's plain
    registered ops) compile whole and train (Inductor decomposes, so the sums round differently: a
    tolerance). backend="torch" traced the _VF call too, whose LSTM on CPU (mkldnn_rnn_layer) failed in
    AOTAutograd (test_family_adversarial.py)."""
    stock_config = {k: v for k, v in config.items() if k != "backend"}
    stock, _ = pair(cell, seed=10, **stock_config)
    _, ours = pair(cell, seed=10, **config)
    input, _ = make_input("padded", False, seed=12)
    compare(run(torch.compile(ours, fullgraph=True), input, None), run(stock, input, None), **FUSED_TOL)


# --- the fused path (the layer driver) against torch.nn ---------------------------------------------------

FUSED_GRID = [(cell, layers, bidirectional, kind)
              for cell in ("rnn_tanh", "gru", "lstm") for layers in (1, 2) for bidirectional in (False, True)
              for kind in ("padded", "packed", "unbatched")] + \
             [("rnn_relu", 2, True, "packed"), ("rnn_relu", 1, False, "padded")]


@pytest.mark.parametrize("cell, layers, bidirectional, kind", FUSED_GRID)
def test_fused_path_matches_torch_nn(cell, layers, bidirectional, kind):
    """backend="triton" against torch.nn; batch_first, bias and h0 rotate so that each value meets every cell."""
    index = FUSED_GRID.index((cell, layers, bidirectional, kind))
    batch_first, bias, with_h0 = index % 2 == 0, index % 3 != 1, index % 4 < 2
    D = 2 if bidirectional else 1
    config = options(cell, layers, bidirectional, batch_first, bias, dropout=0.3 if layers > 1 else 0.0)
    stock, ours = pair(cell, seed=14, device=DEVICE, **config)
    ours.backend = "triton"
    stock.eval()
    ours.eval()
    input, batch = make_input(kind, batch_first, seed=15, device=DEVICE)
    hx = states(cell, layers, D, batch, seed=16, device=DEVICE) if with_h0 else None
    assert ours.backend_for(input, hx) == "triton"
    compare(run(ours, input, hx), run(stock, input, hx), **FUSED_TOL)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_fused_dropout_in_training(cell, p):
    """Training with inter-layer dropout: p=1 zeroes every inter-layer input (a mask independent of the
    random stream); p=0.5 draws over the [T, B, D·H] layout torch.nn's RNNs draw in, so on CPU one seed
    gives torch.nn's mask for padded input (a PackedSequence's is drawn over its packed rows). The truth
    is torch.nn on CPU: at p=1 on any DEVICE (no mask is drawn; cuDNN's own dropout is not under test),
    at p=0.5 where DEVICE is CPU (CUDA's random stream is not CPU's)."""
    stock, ours = pair(cell, seed=17, device=DEVICE, num_layers=2, bidirectional=True, dropout=p)
    ours.backend = "triton"
    kind = "packed" if p == 1.0 else "padded"
    input, _ = make_input(kind, True, seed=18, device=DEVICE)
    if p == 1.0 or DEVICE == "cpu":
        stock_input, _ = make_input(kind, True, seed=18)
        compare(on_cpu(run(ours, input, None, seed=19)), run(stock.cpu(), stock_input, None, seed=19), **FUSED_TOL)
    with torch.no_grad():
        ours.eval()
        evaluated = outputs(ours(input))
        ours.train()
        trained = outputs(ours(input))
    assert [t.shape for t in trained] == [t.shape for t in evaluated]
    assert not torch.equal(trained[0], evaluated[0])
    torch.testing.assert_close(trained[1][:2], evaluated[1][:2], atol=0, rtol=0)   # layer 0's h_n: no dropout


def test_packed_output_keeps_the_inputs_structure_with_equal_lengths():
    """Equal lengths leave the sort order open: the output keeps the input's, not one re-sorted by length."""
    stock, ours = pair("gru", seed=19, device=DEVICE, bidirectional=True)
    ours.backend = "triton"
    x = torch.randn(T, 4, I, device=DEVICE)
    lengths = torch.tensor([3, 5, 3, 5])
    sorted_indices = torch.tensor([3, 1, 2, 0], device=DEVICE)       # torch.sort would give 1, 3 first
    assert not torch.equal(torch.sort(lengths, descending=True)[1].to(DEVICE), sorted_indices)
    data, batch_sizes = torch._VF._pack_padded_sequence(x[:, sorted_indices], lengths[sorted_indices.cpu()], False)
    packed = PackedSequence(data, batch_sizes, sorted_indices, torch.argsort(sorted_indices))
    compare(run(ours, packed, None), run(stock, packed, None), **FUSED_TOL)


def test_backend_choice_on_cpu():
    _, ours = pair("lstm")
    x, _ = make_input("padded", False, seed=2)
    assert ours.backend_for(x) == "torch"         # auto on CPU: stock
    ours.backend = "torch"
    assert ours.backend_for(x) == "torch"
    # A forced "triton" takes CPU tensors only through the interpreter: on DEVICE it runs anywhere.
    ours.backend = "triton"
    assert ours.to(DEVICE).backend_for(x.to(DEVICE)) == "triton"


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_reads_live_parameters_functional_call_and_copies(backend):
    """No cached weight list: functional_call, a replaced Parameter, deepcopy and pickle all see the current weights."""
    import copy
    import pickle
    stock, ours = pair("lstm", seed=20, device=DEVICE, num_layers=2, backend=backend)
    x, _ = make_input("padded", False, seed=21, device=DEVICE)
    # Bit-identical where both run the stock call ("auto" on CPU); the kernels ("triton", "auto" on CUDA): fp32.
    tol = dict(atol=0, rtol=0) if ours.backend_for(x) == "torch" else FUSED_TOL
    params = {name: p.detach() * 0.5 for name, p in stock.named_parameters()}
    got = torch.func.functional_call(ours, params, (x,))
    want = torch.func.functional_call(stock, params, (x,))
    torch.testing.assert_close(outputs(got), outputs(want), **tol)
    ours.weight_hh_l1 = nn.Parameter(torch.randn(4 * H, H, device=DEVICE))
    stock.weight_hh_l1 = nn.Parameter(ours.weight_hh_l1.detach().clone())
    for copied in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        torch.testing.assert_close(outputs(copied(x)), outputs(stock(x)), **tol)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_path_under_autocast(cell):
    """Under autocast the layers run in bf16 (fp32 state inside): bf16 outputs, fp32 parameter gradients."""
    _, ours = pair(cell, seed=22, device=DEVICE, num_layers=2, bidirectional=True, backend="triton")
    x, _ = make_input("padded", False, seed=23, device=DEVICE)
    with torch.no_grad():
        expected = outputs(ours(x))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = outputs(ours(x))
    # As torch.nn: on CPU its GRU stays float32 under autocast (its RNN and LSTM do not).
    low = torch.float32 if (cell == "gru" and DEVICE == "cpu") else torch.bfloat16
    assert all(t.dtype == low for t in got)
    loss([t.float() for t in got]).backward()
    assert all(p.grad.dtype == torch.float32 for p in ours.parameters())
    # bf16 inputs and weights against fp32: their rounding (2^-8 relative) dominates.
    torch.testing.assert_close([t.float() for t in got], expected, atol=3e-2, rtol=3e-2)
