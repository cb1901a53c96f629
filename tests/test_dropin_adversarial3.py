"""Adversarial checks of the Elman side and the seed model, third round: fused_rnn.SimpleRNN used as a user
uses the seed model (tests/seed_model.py), and fused_rnn.RNN, rnn_linear and convert around it.

Each test is a defect found against the truth with the same weights: the seed, or for other options the same
composition of torch.nn modules (``out, h = nn.X(..., batch_first=True)(x, h0); y = fc(out[:, -1])``, with
lengths through a PackedSequence), or torch.nn's module itself; where stock has no counterpart, the README's
claim or the project's bad-input rule, as the docstring says. Each docstring says what a user sees and what
the truth does. Tiny shapes: the interpreter runs the kernels.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_rnn
from seed_model import SimpleRNN as SeedModel

I, H, O, B, T = 3, 5, 2, 4, 6
STOCK = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

# The SimpleRNN configurations that run the layer path (recurrence.layer for the last layer), not rnn_linear:
# every GRU and LSTM, and a bidirectional Elman RNN.
LAYER_PATH = [("gru", 1, False), ("lstm", 1, False), ("rnn", 1, True), ("gru", 1, True)]


def truth(rnn, fc, x, h0=None, lengths=None):
    """The seed's composition: fc on each sequence's last valid step of rnn's output."""
    if lengths is None:
        out, _ = rnn(x, h0)
        return fc(out[:, -1])
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed, h0)
    out, out_lengths = pad_packed_sequence(out, batch_first=True)
    return fc(out[torch.arange(out.shape[0]), out_lengths - 1])


def stock_rnn(cell, model):
    """torch.nn's module with model.rnn's configuration, weights and dtype."""
    rnn = model.rnn
    stock = STOCK[cell](rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, batch_first=True,
                        bidirectional=rnn.bidirectional, dtype=rnn.weight_hh_l0.dtype)
    stock.load_state_dict(rnn.state_dict())
    return stock


def state(cell, layers_directions, dtype):
    h = torch.randn(layers_directions, B, H, dtype=dtype)
    return (h, torch.randn(layers_directions, B, H, dtype=dtype)) if cell == "lstm" else h


@pytest.mark.parametrize("cell, layers, bidirectional", LAYER_PATH)
def test_simple_rnn_layer_path_refuses_h0_of_another_dtype(cell, layers, bidirectional):
    """A float64 (or float16) h0 with float32 x and weights: torch.nn's module raises ("mat1 and mat2 must
    have the same dtype", LSTM: a oneDNN error) and fused_rnn.RNN/GRU/LSTM raise a TypeError naming both
    dtypes, as do SimpleRNN's one-layer Elman path (rnn_linear) and its stacked path (run_layers). The last
    layer's path (SimpleRNN._forward_layers -> recurrence.layer, what "auto" runs on CUDA) accepts it silently
    and returns float32. Failing input: SimpleRNN(3, 5, 2, cell="gru", backend="triton")(x, h0.double())."""
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional,
                                backend="triton")
    x = torch.randn(B, T, I)
    h0 = state(cell, layers * (2 if bidirectional else 1), torch.float64)
    with pytest.raises(RuntimeError):     # the truth refuses it
        truth(stock_rnn(cell, model), model.fc, x, h0)
    with pytest.raises((TypeError, ValueError), match="float64"):
        model(x, h0)


@pytest.mark.parametrize("cell, layers, bidirectional", LAYER_PATH + [("rnn", 2, False)])
def test_simple_rnn_layer_path_refuses_an_input_of_another_dtype_clearly(cell, layers, bidirectional):
    """A half model called with float32 x (the common slip after model.half()): torch.nn's module, and
    fused_rnn.RNN/GRU/LSTM, raise a ValueError before anything runs, "RNN input dtype (torch.float32) does
    not match weight dtype (torch.float16)"; SimpleRNN's one-layer Elman path a TypeError naming both dtypes.
    SimpleRNN's layer path (backend="triton", or "auto" on CUDA) checks nothing and fails inside its input
    GEMM: RuntimeError "mat1 and mat2 must have the same dtype, but got Float and Half".
    Failing input: SimpleRNN(3, 5, 2, cell="gru", backend="triton").half()(torch.randn(4, 6, 3))."""
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional,
                                backend="triton").half()
    x = torch.randn(B, T, I)
    with pytest.raises(ValueError, match="float16"):     # the truth's error
        truth(stock_rnn(cell, model), model.fc, x)
    with pytest.raises((ValueError, TypeError), match="float16"):
        model(x)


@pytest.mark.xfail(strict=True, reason="README: fused_rnn's modules are not TorchScript-scriptable (keyword-only "
                   "arguments, properties); torch.jit.trace and torch.compile / torch.export are the ways")
def test_simple_rnn_is_scriptable_as_the_seed_is():
    """torch.jit.script(seed_model) works (nn.RNN and nn.Linear are scriptable, and the seed's forward is
    plain); the README promises a drop-in "without touching ... the code that calls it", and says nothing of
    TorchScript. torch.jit.script(fused_rnn.SimpleRNN(10, 20, 1)) raises NotSupportedError: "Compiled
    functions can't take variable number of arguments or use keyword-only arguments with defaults"
    (module.py, SimpleRNN.forward's keyword-only lengths, return_hidden; then fused_rnn.RNN's properties)."""
    torch.manual_seed(0)
    seed = SeedModel(I, H, O)
    model = fused_rnn.SimpleRNN(I, H, O)
    model.load_state_dict(seed.state_dict())
    x = torch.randn(B, T, I)
    scripted_seed = torch.jit.script(seed)
    torch.testing.assert_close(scripted_seed(x), seed(x), atol=0, rtol=0)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), seed(x), atol=1e-6, rtol=1e-6)


@pytest.mark.xfail(strict=True, raises=torch._dynamo.exc.Unsupported, reason="README, torch.compile: a PackedSequence input, and lengths where SimpleRNN runs its submodules, break the graph (Dynamo skips pack_padded_sequence and pad_packed_sequence); compile without fullgraph there")
@pytest.mark.parametrize("cell, layers, bidirectional", [("rnn", 1, False), ("gru", 2, True)])
def test_compiled_simple_rnn_fullgraph_takes_a_packed_sequence(cell, layers, bidirectional):
    """README: SimpleRNN's forward "also accepts a PackedSequence", and "all of them compile with
    torch.compile(fullgraph=True)"; with lengths= the compiled graph is whole. The same batch as a
    PackedSequence under torch.compile(model, fullgraph=True) raises torch._dynamo.exc.Unsupported:
    "Attempted to call function marked as skipped ... pad_packed_sequence" (module.py, SimpleRNN.forward
    unpacks it with pad_packed_sequence, which Dynamo skips). Eager, and compiled without fullgraph, it
    gives the composition's output. (Stock nn.RNN does not compile with fullgraph at all: this is the
    README's claim, not a difference to stock.)"""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional)
    x = torch.randn(B, T, I)
    lengths = torch.tensor([3, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = truth(stock_rnn(cell, model), model.fc, x, lengths=lengths)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    try:
        torch.testing.assert_close(compiled(x, lengths=lengths), expected, atol=1e-6, rtol=1e-5)  # works
        got = compiled(packed)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.xfail(strict=True, raises=torch._dynamo.exc.Unsupported, reason="README, torch.compile: a PackedSequence input, and lengths where SimpleRNN runs its submodules, break the graph (Dynamo skips pack_padded_sequence and pad_packed_sequence); compile without fullgraph there")
@pytest.mark.parametrize("variant", ["backend_torch", "hook_on_fc"])
def test_compiled_simple_rnn_fullgraph_takes_lengths_on_the_submodule_path(variant):
    """With backend="auto", torch.compile(model, fullgraph=True)(x, lengths=...) compiles (the lengths range
    check becomes a graph assert, README). The same call where forward runs the submodules -- backend="torch"
    ("the stock math"), or a forward hook on model.fc (README: hooks make it run the seed's computation) --
    raises torch._dynamo.exc.Unsupported: "Attempted to call function marked as skipped ...
    pack_padded_sequence" (module.py, _forward_submodules packs the batch). README: "all of them compile with
    torch.compile(fullgraph=True)". (Stock nn.RNN does not compile with fullgraph at all: this is the
    README's claim, not a difference to stock.)"""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, backend="torch" if variant == "backend_torch" else "auto")
    if variant == "hook_on_fc":
        model.fc.register_forward_hook(lambda module, args, out: out * 2)
    x = torch.randn(B, T, I)
    lengths = torch.tensor([3, 6, 1, 4])
    expected = truth(stock_rnn("rnn", model), model.fc, x, lengths=lengths)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    try:
        got = compiled(x, lengths=lengths)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attribute, value", [("mode", "RNN_RELU"), ("nonlinearity", "relu")])
def test_convert_keeps_the_activation_the_stock_module_runs(attribute, value):
    """nn.RNN's forward picks its activation from ``mode`` (README: "as in nn.RNN, mode, not nonlinearity,
    decides the activation"). convert builds the replacement from ``module.nonlinearity`` (convert.py,
    _replacement: options["nonlinearity"] = module.nonlinearity), so a stock RNN whose ``mode`` was set to
    "RNN_RELU" runs tanh after convert, and one whose ``nonlinearity`` alone was set to "relu" (stock still
    runs tanh) runs relu: the model's output changes by ~1 (here max |diff| 0.9).
    Failing input: rnn = nn.RNN(3, 5); rnn.mode = "RNN_RELU"; fused_rnn.convert(nn.Sequential(rnn))."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.RNN(I, H))
    setattr(model[0], attribute, value)
    x = torch.randn(T, B, I)
    expected_out, expected_h = model(x)
    fused_rnn.convert(model)
    out, h_n = model(x)
    torch.testing.assert_close(out, expected_out, atol=0, rtol=0)
    torch.testing.assert_close(h_n, expected_h, atol=0, rtol=0)


# Two layers make views of fake CUDA tensors, which a CPU-only torch build refuses ("not linked with support
# for cuda devices", t.unsqueeze(0) already): that case runs where torch has CUDA.
@pytest.mark.parametrize("layers, bidirectional", [(1, False), pytest.param(2, True, marks=pytest.mark.gpu)])
def test_simple_rnn_runs_under_fake_tensor_mode_on_cuda_tensors(layers, bidirectional):
    """FakeTensorMode (shape-only tensors: memory estimators, meta-style initialisation, tools that trace
    without compiling) runs torch.nn's modules on fake CUDA tensors: nn.RNN + nn.Linear return a fake
    [B, O] tensor. SimpleRNN with the default backend="auto" picks the Triton kernels for those CUDA tensors
    and launches them on storage-less fakes: RuntimeError 'Attempted to set the storage of a tensor on
    device "meta" to a storage on different device "cpu"' (ops.rnn_linear and recurrence run the eager
    kernels; only x.is_meta takes the registered op, whose fake handles shapes). No CUDA is needed to see it:
    fake CUDA tensors are made on CPU (stock nn.GRU/LSTM cannot run on them without a CUDA build, nn.RNN
    can). The same with backend="triton" on fake CPU tensors."""
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, num_layers=layers, bidirectional=bidirectional)
    stock = nn.RNN(I, H, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    with FakeTensorMode():
        x = torch.randn(B, T, I, device="cuda")
        params = {name: torch.empty(p.shape, device="cuda") for name, p in model.named_parameters()}
        stock_params = {name: torch.empty(p.shape, device="cuda") for name, p in stock.named_parameters()}
        expected, _ = torch.func.functional_call(stock, stock_params, (x,))   # the truth runs
        assert expected.shape == (B, T, H * (2 if bidirectional else 1))
        y = torch.func.functional_call(model, params, (x,))
    assert isinstance(y, FakeTensor)
    assert y.shape == (B, O) and y.device.type == "cuda" and y.dtype == torch.float32


@pytest.mark.parametrize("cell, layers, bidirectional", [("gru", 1, False), ("lstm", 2, False), ("rnn", 2, True)])
def test_simple_rnn_layer_path_keeps_nan_padding_out_of_the_weight_gradients(cell, layers, bidirectional):
    """README (lengths): "the padding after it is never read, by the output or by any gradient"; the seed's
    composition packs the batch, so padding never reaches a gradient, NaN or not. SimpleRNN's one-layer Elman
    path (rnn_linear) honours it; its layer path (backend="triton", "auto" on CUDA) does not:
    weight_ih_l0.grad is NaN when the padding past each length is NaN (or inf). The output, h_n, x.grad and
    the other weights' gradients match stock. Cause: recurrence.layer computes the input projection of every
    step, padding included, as one F.linear (recurrence.input_projection), and autograd's dW_ih = gᵀx meets
    0 · NaN at the padded steps. Failing input: SimpleRNN(3, 5, 2, cell="gru", backend="triton") on x with
    x[b, lengths[b]:] = nan, lengths=[3, 6, 1, 4]."""
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional,
                                backend="triton")
    stock = stock_rnn(cell, model)
    lengths = [3, 6, 1, 4]
    x = torch.randn(B, T, I)
    for b, length in enumerate(lengths):
        x[b, length:] = float("nan")
    model(x, lengths=lengths).sum().backward()
    truth(stock, model.fc, x, lengths=lengths).sum().backward()
    for (name, ours), theirs in zip(model.rnn.named_parameters(), stock.parameters()):
        assert torch.isfinite(theirs.grad).all(), f"stock's {name}.grad is not finite"
        torch.testing.assert_close(ours.grad, theirs.grad, atol=2e-5, rtol=1e-4,
                                   msg=lambda message, name=name: f"{name}.grad: {message}")


@pytest.mark.parametrize("cell, layers, bidirectional", [("gru", 1, False), ("rnn", 2, True)])
def test_compiled_simple_rnn_keeps_nan_padding_out_of_the_weight_gradients(cell, layers, bidirectional):
    """The previous defect on the default CPU path under torch.compile(fullgraph=True) (backend "auto": the
    registered layer ops' stock math): weight_ih_l0.grad (and, bidirectional, weight_ih_l0_reverse.grad) is
    NaN with NaN padding past the lengths; the seed's packed composition gives finite gradients. Outputs,
    h_n and x.grad match. Same cause: the input projection over every step (recurrence.input_projection)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=layers, bidirectional=bidirectional)
    stock = stock_rnn(cell, model)
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(B, T, I)
    for b, length in enumerate(lengths.tolist()):
        x[b, length:] = float("nan")
    try:
        torch.compile(model, fullgraph=True, backend="aot_eager")(x, lengths=lengths).sum().backward()
    finally:
        torch._dynamo.reset()
    truth(stock, model.fc, x, lengths=lengths).sum().backward()
    for (name, ours), theirs in zip(model.rnn.named_parameters(), stock.parameters()):
        assert torch.isfinite(theirs.grad).all(), f"stock's {name}.grad is not finite"
        torch.testing.assert_close(ours.grad, theirs.grad, atol=2e-5, rtol=1e-4,
                                   msg=lambda message, name=name: f"{name}.grad: {message}")


@pytest.mark.parametrize("where", ["rnn_linear", "SimpleRNN", "RNN"])
def test_allow_tf32_refuses_a_value_that_is_not_a_bool(where):
    """allow_tf32 is None, True or False (README's table). A string from a config file, allow_tf32="False",
    is accepted and read as True (backends/request.py, resolve_allow_tf32: bool(allow_tf32)), so TF32
    products (~1e-3 relative error) run on a GPU where the user asked for none. The project's rule for bad
    input: a TypeError or ValueError naming expected and actual, as backend= and nonlinearity= get."""
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    with pytest.raises((TypeError, ValueError), match="allow_tf32"):
        if where == "rnn_linear":
            rnn, fc = nn.RNN(I, H, batch_first=True), nn.Linear(H, O)
            fused_rnn.rnn_linear(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, fc.weight,
                                 fc.bias, allow_tf32="False")
        elif where == "SimpleRNN":
            fused_rnn.SimpleRNN(I, H, O, allow_tf32="False")(x)
        else:
            fused_rnn.RNN(I, H, batch_first=True, allow_tf32="False")(x)


@pytest.mark.xfail(strict=True, reason="README: fused_rnn's modules are not TorchScript-scriptable, so neither is "
                   "a model convert swapped them into; convert a model for eager, compile or export use")
def test_convert_keeps_a_scriptable_model_scriptable():
    """A model holding an nn.LSTM is scriptable (torch.jit.script, for TorchScript deployment); after
    fused_rnn.convert it is not: RuntimeError "getattr's second argument must be a string literal"
    (rnn.py, the _flat_weights property). README: convert "swaps them into any model", a one-line speed-up;
    nothing says TorchScript stops working. (The stock model is not scripted here before convert: TorchScript
    caches the compiled type of the Tagger class, and a second script after convert then reuses it.)"""
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(I, H, batch_first=True)
            self.head = nn.Linear(H, O)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out)

    torch.manual_seed(0)
    model = Tagger()
    x = torch.randn(B, T, I)
    torch.jit.script(nn.LSTM(I, H, batch_first=True))     # stock's LSTM scripts
    expected = model(x)
    fused_rnn.convert(model)
    torch.testing.assert_close(torch.jit.script(model)(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.xfail(strict=True, raises=torch._dynamo.exc.Unsupported, reason="README, torch.compile: a PackedSequence input, and lengths where SimpleRNN runs its submodules, break the graph (Dynamo skips pack_padded_sequence and pad_packed_sequence); compile without fullgraph there")
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_compiled_elman_rnn_fullgraph_takes_a_packed_sequence(nonlinearity):
    """README: fused_rnn.RNN takes nn.RNN's forward contract, PackedSequence included, and "all of them
    compile with torch.compile(fullgraph=True)". A PackedSequence under fullgraph raises
    torch._dynamo.exc.Unsupported "... pad_packed_sequence" (rnn.py, RNN._forward_layers unpacks it with
    pad_packed_sequence, which Dynamo skips); padded input compiles. Truth: stock nn.RNN eager on the same
    PackedSequence (stock does not compile with fullgraph at all: this is the README's claim)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    stock = nn.RNN(I, H, batch_first=True, nonlinearity=nonlinearity)
    ours = fused_rnn.RNN(I, H, batch_first=True, nonlinearity=nonlinearity)
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(B, T, I)
    packed = pack_padded_sequence(x, torch.tensor([3, 6, 1, 4]), batch_first=True, enforce_sorted=False)
    expected_out, expected_h = stock(packed)
    try:
        out, h_n = torch.compile(ours, fullgraph=True, backend="aot_eager")(packed)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(out.data, expected_out.data, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h_n, expected_h, atol=1e-6, rtol=1e-5)
