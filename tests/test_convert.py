"""fused_rnn.convert: stock RNN/GRU/LSTM swapped in place, the same Parameter objects, the same results."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import weight_norm

import fused_rnn
from fused_rnn.convert import unconvertible_reason


class Tagger(nn.Module):
    """A user model with recurrent modules nested at several depths and in containers."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleDict({"gru": nn.GRU(10, 3, batch_first=True),
                                    "stack": nn.ModuleList([nn.RNN(10, 4, nonlinearity="relu", batch_first=True,
                                                                   bias=False)])})
        self.fc = nn.Linear(3 + 4, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(self.encoder(x))
        g, _ = self.heads["gru"](out)
        r, _ = self.heads["stack"][0](out)
        return self.fc(torch.cat([g[:, -1], r[:, -1]], -1))


def model_and_input(seed=0):
    torch.manual_seed(seed)
    return Tagger(), torch.randn(3, 5, 4)


def test_nested_modules_are_replaced_in_place():
    model, x = model_and_input()
    stock_params = dict(model.named_parameters())
    keys = list(model.state_dict())
    expected = model(x)
    returned = fused_rnn.convert(model)
    assert returned is model
    assert type(model.lstm) is fused_rnn.LSTM
    assert type(model.heads["gru"]) is fused_rnn.GRU
    assert type(model.heads["stack"][0]) is fused_rnn.RNN
    assert model.heads["stack"][0].nonlinearity == "relu" and not model.heads["stack"][0].bias
    assert model.lstm.bidirectional and model.lstm.num_layers == 2 and model.lstm.batch_first
    assert type(model.encoder[0]) is nn.Linear
    # The same Parameter objects (not copies), in the same order, under the same names.
    assert list(model.state_dict()) == keys
    for name, p in model.named_parameters():
        assert p is stock_params[name], name
    assert len(list(model.parameters())) == len(stock_params)
    # On CPU the fused modules run the stock path: bit-identical.
    assert torch.equal(model(x), expected)


def test_optimizer_built_before_convert_keeps_training_the_model():
    model, x = model_and_input(1)
    reference = copy.deepcopy(model)
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.1) for m in (model, reference)]
    initial = model.lstm.weight_hh_l0.detach().clone()
    fused_rnn.convert(model)
    for step in range(2):
        for m, opt in zip((model, reference), optimizers):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    assert type(model.lstm) is fused_rnn.LSTM and not torch.equal(model.lstm.weight_hh_l0, initial)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert torch.equal(model(x), reference(x))


def test_training_mode_dtype_and_options_carry_over():
    torch.manual_seed(2)
    model = nn.Sequential(nn.GRU(3, 4, num_layers=2, dropout=0.5).double(), nn.LSTM(4, 6, proj_size=2))
    model.eval()
    model[1].train()
    fused_rnn.convert(model, backend="torch", allow_tf32=False)
    assert not model[0].training and model[1].training
    assert model[0].weight_ih_l0.dtype == torch.float64 and model[0].dropout == 0.5
    assert model[1].proj_size == 2 and model[1].weight_hr_l0.shape == (2, 6)
    assert model[0].backend == "torch" and model[1].allow_tf32 is False
    assert all(p.device.type == "cpu" for p in model.parameters())     # built on meta, holding the real ones


def test_top_level_module_returns_its_replacement():
    torch.manual_seed(3)
    stock = nn.LSTM(3, 4, batch_first=True)
    fused = fused_rnn.convert(stock)
    assert type(fused) is fused_rnn.LSTM and type(stock) is nn.LSTM
    assert all(a is b for a, b in zip(fused.parameters(), stock.parameters(), strict=True))
    x = torch.randn(2, 5, 3)
    out_f, (h_f, c_f) = fused(x)
    out_s, (h_s, c_s) = stock(x)
    assert torch.equal(out_f, out_s) and torch.equal(h_f, h_s) and torch.equal(c_f, c_s)


def test_shared_module_becomes_one_fused_module():
    rnn = nn.RNN(3, 3)
    model = nn.Sequential(rnn, rnn)
    fused_rnn.convert(model)
    assert type(model[0]) is fused_rnn.RNN and model[0] is model[1]


class MyLSTM(nn.LSTM):
    pass


def test_what_is_left_stock():
    """Subclasses, modules with hooks or reparametrized weights keep their class; the rest still converts."""
    torch.manual_seed(4)
    hooked = nn.GRU(3, 4)
    hooked.register_forward_hook(lambda m, args, out: out)
    normed = weight_norm(nn.RNN(3, 4), "weight_hh_l0")
    model = nn.ModuleDict({"sub": MyLSTM(3, 4), "hooked": hooked, "normed": normed, "plain": nn.GRU(3, 4)})
    fused_rnn.convert(model)
    assert type(model["sub"]) is MyLSTM
    assert model["hooked"] is hooked and model["normed"] is normed
    assert type(model["plain"]) is fused_rnn.GRU
    assert "hooks" in unconvertible_reason(hooked)
    assert "hooks" in unconvertible_reason(normed)            # weight_norm recomputes the weight in a pre-hook
    plain_weight = nn.GRU(3, 4)
    del plain_weight.weight_hh_l0
    plain_weight.weight_hh_l0 = torch.zeros(12, 4)          # a plain tensor, not a Parameter
    assert "are not its weights" in unconvertible_reason(plain_weight)
    assert fused_rnn.convert(plain_weight) is plain_weight


def test_compiles_with_fullgraph_after_convert():
    """The point of convert for torch.compile users: a model Dynamo refused now compiles whole."""
    torch._dynamo.reset()          # RNNBase.forward was compiled for other configurations by other tests
    model, x = model_and_input(5)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Attempted to wrap RNN, GRU, or LSTM"):
        torch.compile(model, fullgraph=True)(x)
    torch._dynamo.reset()
    expected = model(x)
    fused_rnn.convert(model)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), expected, atol=2e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend must be one of"):
        fused_rnn.convert(nn.Linear(2, 2), backend="cuda")
    with pytest.raises(TypeError, match="convert takes an nn.Module, got dict"):
        fused_rnn.convert({})
