"""fused_rnn.RNN against torch.nn.RNN: constructor, parameters, seeded init, forward contract, gradients."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fused_rnn

CONFIGS = [
    dict(),
    dict(nonlinearity="relu"),
    dict(bias=False),
    dict(batch_first=True),
    dict(num_layers=2, dropout=0.0),
    dict(num_layers=3, bidirectional=True, batch_first=True),
    dict(bidirectional=True, nonlinearity="relu", bias=False),
]


def pair(config, seed=0, I=5, H=7):
    torch.manual_seed(seed)
    stock = nn.RNN(I, H, **config)
    torch.manual_seed(seed)
    ours = fused_rnn.RNN(I, H, **config)
    return stock, ours


@pytest.mark.parametrize("config", CONFIGS)
def test_same_parameters_and_seeded_init(config):
    stock, ours = pair(config, seed=3)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in stock.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), stock.parameters()):
        assert torch.equal(p, q), name
    for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "nonlinearity", "_flat_weights_names", "_all_weights"):
        assert getattr(ours, attr) == getattr(stock, attr), attr
    assert repr(ours) == repr(stock)
    assert [[p.shape for p in layer] for layer in ours.all_weights] == \
        [[p.shape for p in layer] for layer in stock.all_weights]
    # state_dicts load both ways
    stock.load_state_dict(ours.state_dict())
    ours.load_state_dict(stock.state_dict())


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_and_gradients_bit_identical(config):
    stock, ours = pair(config, seed=4)
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    B, T = 3, 6
    shape = (B, T, 5) if config.get("batch_first") else (T, B, 5)
    x = torch.randn(shape)
    hx = torch.randn(L * D, B, 7)
    for args in ((x,), (x, hx)):
        xs = [a.clone().requires_grad_() for a in args]
        xo = [a.clone().requires_grad_() for a in args]
        out_s, h_s = stock(*xs)
        out_o, h_o = ours(*xo)
        assert torch.equal(out_o, out_s) and torch.equal(h_o, h_s)
        (out_s.sum() + h_s.square().sum()).backward()
        (out_o.sum() + h_o.square().sum()).backward()
        for a, b in zip(xo, xs):
            assert torch.equal(a.grad, b.grad)
        for (name, p), q in zip(ours.named_parameters(), stock.parameters()):
            assert torch.equal(p.grad, q.grad), name
            p.grad = q.grad = None


@pytest.mark.parametrize("config", CONFIGS)
def test_unbatched_and_packed(config):
    stock, ours = pair(config, seed=5)
    D = 2 if config.get("bidirectional") else 1
    L = config.get("num_layers", 1)
    x = torch.randn(6, 5)
    h = torch.randn(L * D, 7)
    for args in ((x,), (x, h)):
        out_s, h_s = stock(*args)
        out_o, h_o = ours(*args)
        assert torch.equal(out_o, out_s) and torch.equal(h_o, h_s)
    batch_first = config.get("batch_first", False)
    padded = torch.randn(4, 6, 5)
    packed = pack_padded_sequence(padded if batch_first else padded.transpose(0, 1), torch.tensor([6, 2, 5, 1]),
                                  batch_first=batch_first, enforce_sorted=False)
    hx = torch.randn(L * D, 4, 7)
    for args in ((packed,), (packed, hx)):
        out_s, h_s = stock(*args)
        out_o, h_o = ours(*args)
        assert type(out_o) is type(out_s)
        assert torch.equal(out_o.data, out_s.data) and torch.equal(h_o, h_s)
        assert torch.equal(out_o.batch_sizes, out_s.batch_sizes)


def test_errors_match_stock():
    stock, ours = pair(dict(batch_first=True))
    for bad in (torch.randn(2, 3, 4), torch.randn(2, 3, 5, 1)):
        with pytest.raises(Exception) as e_stock:
            stock(bad)
        with pytest.raises(type(e_stock.value), match=None) as e_ours:
            ours(bad)
        assert str(e_ours.value) == str(e_stock.value)
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"):
        fused_rnn.RNN(3, 4, nonlinearity="gelu")


def test_positional_nonlinearity_and_factory_kwargs():
    torch.manual_seed(0)
    stock = nn.RNN(3, 4, 1, "relu", dtype=torch.float64)
    torch.manual_seed(0)
    ours = fused_rnn.RNN(3, 4, 1, "relu", dtype=torch.float64)
    assert ours.nonlinearity == "relu" and ours.weight_hh_l0.dtype == torch.float64
    assert torch.equal(ours.weight_hh_l0, stock.weight_hh_l0)
    meta = fused_rnn.RNN(3, 4, device="meta")
    assert meta.weight_ih_l0.is_meta


def test_not_an_nn_rnn_so_dynamo_traces_it():
    """Dynamo refuses nn.RNN instances; fused_rnn.RNN compiles with fullgraph (the layer driver's
    registered ops) and reads live weights."""
    torch.manual_seed(1)
    ours = fused_rnn.RNN(3, 8, batch_first=True)
    assert not isinstance(ours, nn.RNNBase)
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(compiled(x)[0], ours(x)[0])
    with torch.no_grad():
        ours.weight_hh_l0.mul_(-1)
    ours.weight_ih_l0 = nn.Parameter(torch.randn(8, 3))
    torch.testing.assert_close(compiled(x)[0], ours(x)[0])
