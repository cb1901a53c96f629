"""Adversarial checks of the GRU and LSTM drop-ins, second round: user code that works on torch.nn's modules.

Each test is a defect found by using fused_rnn.GRU / LSTM where a model held
torch.nn.GRU / LSTM, against torch.nn with the same weights. The docstring says
what a user sees and what torch.nn does.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_rnn

I, H, B, T = 3, 5, 2, 4     # tiny: the interpreter runs the kernels
CELLS = {"gru": (nn.GRU, fused_rnn.GRU), "lstm": (nn.LSTM, fused_rnn.LSTM)}


def pair(cell, seed=0, **options):
    """(torch.nn module, fused_rnn module) with the same weights."""
    stock_cls, fused_cls = CELLS[cell]
    torch.manual_seed(seed)
    stock = stock_cls(I, H, **options)
    ours = fused_cls(I, H, **options)
    ours.load_state_dict(stock.state_dict())
    return stock, ours


def flat(result):
    """(output, h_n) or (output, (h_n, c_n)) as a list of tensors."""
    output, hidden = result
    return [output, *(hidden if isinstance(hidden, tuple) else (hidden,))]


class WeightDrop(nn.Module):
    """AWD-LSTM's DropConnect on weight_hh_l0 (Merity et al.), as many copies of it write it: the
    Parameter moves to the wrapper, and every forward sets a dropped plain tensor on the recurrent
    module and refreshes the module's ``_flat_weights`` list before calling it."""

    def __init__(self, module, p):
        super().__init__()
        self.module, self.p = module, p
        weight = module.weight_hh_l0
        del module._parameters["weight_hh_l0"]
        self.weight_hh_raw = nn.Parameter(weight.detach().clone())

    def forward(self, *args):
        setattr(self.module, "weight_hh_l0", F.dropout(self.weight_hh_raw, self.p, self.training))
        self.module._flat_weights = [getattr(self.module, name) for name in self.module._flat_weights_names]
        return self.module(*args)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_weight_drop_wrapper_that_assigns_flat_weights(cell):
    """The AWD-LSTM WeightDrop wrapper assigns ``module._flat_weights = [...]`` every forward (torch.nn keeps
    that list as a plain attribute and reads it in forward). On fused_rnn.GRU / LSTM ``_flat_weights``
    is a read-only property: the user sees AttributeError "property '_flat_weights' of 'GRU' object has
    no setter" on the first forward; torch.nn runs it. (Reading the weights live, ours needs no list:
    the assignment only has to be accepted.) Truth: the same wrapper around torch.nn's module, the same
    seed for the weight dropout, fp32 stock path on CPU: bit-identical."""
    stock, ours = pair(cell)
    wrapped_stock, wrapped_ours = WeightDrop(stock, 0.5), WeightDrop(ours, 0.5)
    x = torch.randn(T, B, I)
    torch.manual_seed(3)
    expected = flat(wrapped_stock(x))
    torch.manual_seed(3)
    got = flat(wrapped_ours(x))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_flat_weights_naming_other_tensors_is_refused():
    """torch.nn's forward reads its cached ``_flat_weights`` list; ours reads the weights by name, so a list
    of other tensors would be ignored silently: a ValueError saying what to do instead."""
    _, ours = pair("gru")
    weights = ours._flat_weights
    ours._flat_weights = list(weights)          # the same tensors: accepted
    with pytest.raises(ValueError, match="weight_hh_l0"):
        ours._flat_weights = [w * 2 for w in weights]
    with pytest.raises(ValueError, match="reads its weights by name"):
        ours._flat_weights = weights[:2]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_base_methods_user_code_calls(cell):
    """nn.RNNBase's methods that code outside torch calls on an RNN instance are missing on ours
    (AttributeError where torch.nn works): ``_init_flat_weights()`` (called after replacing or pruning
    weights so that torch.nn's cached list follows), ``check_forward_args``, ``permute_hidden`` and
    ``get_expected_hidden_size`` (public names, used by wrappers that handle hx themselves).
    Truth: the same calls on torch.nn's module give the same results."""
    stock, ours = pair(cell)
    x = torch.randn(T, B, I)
    h = torch.randn(1, B, H)
    hx = (h, torch.randn(1, B, H)) if cell == "lstm" else h
    order = torch.tensor([1, 0])
    for module in (stock, ours):
        module.weight_hh_l0 = nn.Parameter(torch.ones_like(module.weight_hh_l0) * 0.1)
        module._init_flat_weights()
        module.check_forward_args(x, hx, None)
    assert ours.get_expected_hidden_size(x, None) == stock.get_expected_hidden_size(x, None)
    permuted = ours.permute_hidden(hx, order)
    torch.testing.assert_close(permuted, stock.permute_hidden(hx, order), atol=0, rtol=0)
    torch.testing.assert_close(flat(ours(x, hx)), flat(stock(x, hx)), atol=0, rtol=0)


def test_compiled_gru_under_cpu_autocast_takes_the_low_precision_activations():
    """A model Linear -> GRU under torch.autocast("cpu", bfloat16): the Linear hands the GRU a bfloat16
    input while its weights stay float32. torch.nn's GRU (and ours in eager, the stock path) runs it and
    returns bfloat16 (the state's dtype, which follows the input). Under torch.compile ours runs the
    layer driver, which for a GRU on CPU switches autocast off and then multiplies the bf16 input by the
    fp32 weights: RuntimeError "mat1 and mat2 must have the same dtype, but got BFloat16 and Float".
    (An LSTM casts and runs.) Truth: torch.nn eagerly, at bf16 tolerance."""

    class Model(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.inp = nn.Linear(I, I)
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(self.inp(x))

    torch._dynamo.reset()
    stock, ours = pair("gru", seed=1)
    torch.manual_seed(2)
    stock_model = Model(stock)
    ours_model = Model(ours)
    ours_model.inp.load_state_dict(stock_model.inp.state_dict())
    x = torch.randn(T, B, I)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = flat(stock_model(x))
            got = flat(torch.compile(ours_model, backend="aot_eager", fullgraph=True)(x))
    finally:
        torch._dynamo.reset()
    assert [t.dtype for t in got] == [t.dtype for t in expected]
    torch.testing.assert_close([t.float() for t in got], [t.float() for t in expected], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_grad_through_the_kernels(cell):
    """``torch.autograd.grad(..., is_grads_batched=True)`` (and ``torch.autograd.functional.jacobian(...,
    vectorize=True)``, built on it) vmaps the backward over a batch of grad_outputs. The forward ran
    outside any transform, so "auto" on CUDA (here: the forced kernels, interpreted) took the kernels,
    and their backward then receives BatchedTensors: NotImplementedError "Cannot access storage of
    BatchedTensorImpl". torch.nn returns the batched gradients. Valid input must run (or at least raise
    an error that says why), never crash inside the backward. Truth: torch.nn, fp32 tolerance."""
    stock, ours = pair(cell)
    ours.backend = "triton"
    x = torch.randn(T, B, I)
    grads = []
    for module in (stock, ours):
        leaf = x.clone().requires_grad_()
        out = module(leaf)[0]
        v = torch.randn(4, *out.shape, generator=torch.Generator().manual_seed(0))
        grads.append(torch.autograd.grad(out, leaf, v, is_grads_batched=True)[0])
    torch.testing.assert_close(grads[1], grads[0], atol=2e-5, rtol=1e-4)


def test_batched_grad_through_the_elman_kernels():
    """As test_batched_grad_through_the_kernels, through the Elman kernels' other two Functions: the
    bidirectional layer's one launch (fused_rnn.RNN, bidirectional) and rnn_linear (SimpleRNN: the
    recurrence and its Linear head in one kernel). Truth: torch.nn with the same weights."""
    torch.manual_seed(0)
    stock = nn.RNN(I, H, bidirectional=True)
    ours = fused_rnn.RNN(I, H, bidirectional=True, backend="triton")
    ours.load_state_dict(stock.state_dict())
    seed_rnn, seed_fc = nn.RNN(I, H, batch_first=True), nn.Linear(H, 2)
    simple = fused_rnn.SimpleRNN(I, H, 2, backend="triton")
    simple.rnn.load_state_dict(seed_rnn.state_dict())
    simple.fc.load_state_dict(seed_fc.state_dict())
    models = [(lambda x: stock(x)[0], lambda x: ours(x)[0]),
              (lambda x: seed_fc(seed_rnn(x)[0][:, -1]), simple)]
    for stock_model, our_model in models:
        x = torch.randn(B, T, I)
        grads = []
        for model in (stock_model, our_model):
            leaf = x.clone().requires_grad_()
            out = model(leaf)
            v = torch.randn(3, *out.shape, generator=torch.Generator().manual_seed(0))
            grads.append(torch.autograd.grad(out, leaf, v, is_grads_batched=True)[0])
        torch.testing.assert_close(grads[1], grads[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fx_symbolic_trace_of_a_model_holding_the_module(cell):
    """torch.fx.symbolic_trace (FX graph mode quantization's prepare_fx, torchvision's feature extraction,
    FX graph passes) keeps torch.nn's modules as leaves (one call_module node), so a model holding an
    nn.GRU / nn.LSTM traces. fused_rnn's modules live outside torch.nn: the tracer enters their forward
    and stops at its first branch on the input (``x.dim() not in (2, 3)``): TraceError "symbolically
    traced variables cannot be used as inputs to control flow". The same model with torch.nn's module
    traces and runs. Truth: the traced torch.nn model, CPU stock path, bit-identical."""

    class Model(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn
            self.fc = nn.Linear(H, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[-1])

    stock, ours = pair(cell, seed=4)
    torch.manual_seed(5)
    stock_model = Model(stock)
    ours_model = Model(ours)
    ours_model.fc.load_state_dict(stock_model.fc.state_dict())
    x = torch.randn(T, B, I)
    expected = torch.fx.symbolic_trace(stock_model)(x)
    got = torch.fx.symbolic_trace(ours_model)(x)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_compiled_simple_rnn_gru_under_cpu_autocast_returns_h_n_in_the_seeds_dtype():
    """SimpleRNN(cell="gru"), one layer, compiled, under torch.autocast("cpu", bfloat16), float32 input,
    return_hidden=True: the seed's computation (nn.GRU then nn.Linear on out[:, -1]) returns y in
    bfloat16 (the Linear under autocast) and h_n in float32 (torch.nn's GRU keeps the state's dtype on
    CPU). Ours returns h_n in bfloat16: its last layer goes through recurrence.layer, where autocast casts
    the input projection, and h_n takes that dtype (run_layers' per-cell policy is not applied there).
    With two layers the same input crashes inside run_layers instead (see the compiled GRU test above).
    Truth: the stock modules with the same weights, eagerly, at bf16 tolerance."""
    torch._dynamo.reset()
    torch.manual_seed(6)
    model = fused_rnn.SimpleRNN(I, H, 2, cell="gru")
    stock = nn.GRU(I, H, batch_first=True)
    stock.load_state_dict(model.rnn.state_dict())
    x = torch.randn(B, T, I)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h_n = stock(x)
            expected = [model.fc(out[:, -1]), h_n]
            got = list(torch.compile(model, backend="aot_eager", fullgraph=True)(x, return_hidden=True))
    finally:
        torch._dynamo.reset()
    assert [t.dtype for t in got] == [t.dtype for t in expected]
    torch.testing.assert_close([t.float() for t in got], [t.float() for t in expected], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("x_dtype,h0_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                              (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_gru_kernels_under_cpu_autocast_return_stocks_dtypes(x_dtype, h0_dtype):
    """The forced kernels (eager) of a float32 GRU under torch.autocast("cpu", bfloat16): torch.nn's GRU
    keeps its state in h0's dtype (x's without h0) and returns that dtype; so must ours, with values at
    bf16 tolerance (stock's inner products are bf16, ours full precision in the state's dtype)."""
    stock, ours = pair("gru", seed=4, num_layers=2)
    ours.backend = "triton"
    x = torch.randn(T, B, I).to(x_dtype)
    h0 = None if h0_dtype is None else torch.randn(2, B, H).to(h0_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = flat(stock(x, h0))
        got = flat(ours(x, h0))
    assert [t.dtype for t in got] == [t.dtype for t in expected]
    torch.testing.assert_close([t.float() for t in got], [t.float() for t in expected], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_fx_symbolic_trace_of_simple_rnn(cell, layers, bidirectional):
    """torch.fx.symbolic_trace of the seed model (its own nn.Module around nn.RNN / GRU / LSTM and
    nn.Linear) gives rnn, getitem and fc nodes; of ours, the same graph (fused_rnn's RNNs record one node,
    as torch.nn's do), as the root module and inside a user's model, with h0 and return_hidden.
    Truth: the seed model's computation with the same weights, CPU stock path, bit-identical."""
    torch.manual_seed(7)
    ours = fused_rnn.SimpleRNN(I, H, 2, cell=cell, num_layers=layers, bidirectional=bidirectional)
    stock_rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](
        I, H, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    stock_rnn.load_state_dict(ours.rnn.state_dict())
    x = torch.randn(B, T, I)
    states = layers * (2 if bidirectional else 1)
    h0 = torch.randn(states, B, H)
    hx = (h0, torch.randn(states, B, H)) if cell == "lstm" else h0
    out, h_n = stock_rnn(x, hx)
    expected = ours.fc(out[:, -1])

    # As the root module, its keyword arguments fixed (FX makes every argument a placeholder).
    with pytest.raises(TypeError, match="concrete_args"):
        torch.fx.symbolic_trace(ours)
    traced = torch.fx.symbolic_trace(ours, concrete_args={"lengths": None, "return_hidden": True})
    assert [n.op for n in traced.graph.nodes].count("call_module") == 2     # rnn and fc
    torch.testing.assert_close(flat(traced(x, hx, None, True)), flat((expected, h_n)),
                               atol=0, rtol=0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = ours

        def forward(self, x, hx):
            y, h_n = self.model(x, hx, return_hidden=True)
            return y * 2, h_n

    got = torch.fx.symbolic_trace(Model())(x, hx)
    torch.testing.assert_close(flat(got), flat((expected * 2, h_n)), atol=0, rtol=0)
    with pytest.raises(ValueError, match="lengths cannot be traced"):
        torch.fx.symbolic_trace(ours, concrete_args={"lengths": torch.tensor([1, 2]), "return_hidden": False})
