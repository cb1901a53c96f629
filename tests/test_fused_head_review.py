"""Review of the head fused after the GRU's and LSTM's time loop (commit 2eb4eca): what a user of
SimpleRNN(cell="gru" | "lstm") can do to the model's fc and call, against torch.nn (nn.GRU / nn.LSTM and
nn.Linear with the same weights) on the kernels through the interpreter (backend="triton") and
through torch.compile on CPU (backend="auto"). Tolerances as tests/test_fused_head.py's (fp32 on the
interpreter: summation order and exp).
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_rnn
from conftest import DEVICE
from fused_rnn.kernels import gru as gru_kernels, lstm as lstm_kernels

FP32 = dict(atol=3e-5, rtol=1e-4)
BF16 = dict(atol=3e-2, rtol=3e-2)
STOCK = {"gru": nn.GRU, "lstm": nn.LSTM}


def stock_pair(cell, I, H, O, *, num_layers=1, fc_bias=True, backend="triton", seed=0):
    """(SimpleRNN, torch.nn's RNN, torch.nn's Linear) with the same weights."""
    torch.manual_seed(seed)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=num_layers, backend=backend)
    if not fc_bias:
        model.fc = nn.Linear(H, O, bias=False)
    stock_rnn = STOCK[cell](I, H, num_layers=num_layers, batch_first=True)
    stock_rnn.load_state_dict(model.rnn.state_dict())
    stock_fc = nn.Linear(H, O, bias=fc_bias)
    stock_fc.load_state_dict(model.fc.state_dict())
    return model.to(DEVICE), stock_rnn.to(DEVICE), stock_fc.to(DEVICE)


def stock_forward(stock_rnn, stock_fc, x, hx=None, lengths=None):
    """The user model: (fc on each sequence's last valid output, h_n or (h_n, c_n))."""
    if lengths is None:
        out, hidden = stock_rnn(x, hx)
        return stock_fc(out[:, -1]), hidden
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, hidden = stock_rnn(packed, hx)
    out, out_lengths = pad_packed_sequence(out, batch_first=True)
    return stock_fc(out[torch.arange(x.shape[0]), out_lengths - 1]), hidden


@pytest.fixture
def heads(monkeypatch):
    """HAS_HEAD of every GRU and LSTM kernel launch (None for the backward's), which still run."""
    seen = []
    for module in (gru_kernels, lstm_kernels):
        launch = module._launch

        def record(kernel, grid, wrap, *args, _launch=launch, **kwargs):
            seen.append(kwargs.get("HAS_HEAD"))
            return _launch(kernel, grid, wrap, *args, **kwargs)
        monkeypatch.setattr(module, "_launch", record)
    return seen


def outcome(call):
    """("ok", result) or ("raised", the exception's type)."""
    try:
        return "ok", call()
    except (RuntimeError, ValueError) as error:
        return "raised", type(error)


# --- defects -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("change", ["weight [O, H+1]", "weight [H, O]", "bias [O+1]", "bias [O-1]", "bias [1, O]"])
def test_a_misshapen_fc_behaves_as_stock(cell, change):
    """An fc whose weight or bias was replaced by one of another shape (fc.in_features still H, so the fused
    path is taken): torch.nn's F.linear refuses it (or broadcasts a [1, O] bias); the fused head read the
    tensors with fc's nominal strides and returned numbers (H = 21, O = 3: y of shape (5, 3) from a [3, 22]
    weight, y of shape (5, 21), not finite, from a [21, 3] one)."""
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, seed=1)
    replacement = {"weight [O, H+1]": ("weight", (O, H + 1)), "weight [H, O]": ("weight", (H, O)),
                   "bias [O+1]": ("bias", (O + 1,)), "bias [O-1]": ("bias", (O - 1,)),
                   "bias [1, O]": ("bias", (1, O))}[change]
    name, shape = replacement
    value = torch.randn(*shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    setattr(model.fc, name, nn.Parameter(value.clone()))
    setattr(stock_fc, name, nn.Parameter(value.clone()))
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.no_grad():
        ours = outcome(lambda: model(x))
        stock = outcome(lambda: stock_forward(stock_rnn, stock_fc, x)[0])
    assert ours[0] == stock[0], (ours, stock)
    if stock[0] == "ok":
        torch.testing.assert_close(ours[1], stock[1], **FP32)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_under_cpu_autocast_with_a_float64_fc_raises_as_stock(num_layers, heads):
    """Autocast casts no float64 tensor: stock's fc then meets a bf16 h_n with a float64 weight and raises.
    The fused head cast fc's weights to bf16 with the layer's (module._head_dtype took autocast's dtype
    whatever fc's) and returned a bf16 y."""
    model, stock_rnn, stock_fc = stock_pair("lstm", 3, 16, 2, num_layers=num_layers, seed=4)
    model.fc.double()
    stock_fc.double()
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16), torch.no_grad():
        with pytest.raises(RuntimeError, match="dtype"):
            stock_forward(stock_rnn, stock_fc, x)
        with pytest.raises(RuntimeError, match="dtype"):
            model(x)
    assert True not in heads


@pytest.mark.parametrize("fc_w_shape, fc_b_shape, message", [((2, 17), (2,), "fc_w must have shape"),
                                                             ((16, 2), (2,), "fc_w must have shape"),
                                                             ((2, 16), (3,), "fc_b must have shape")])
def test_layer_refuses_a_misshapen_head_before_any_launch(fc_w_shape, fc_b_shape, message, heads):
    """recurrence.layer's head: a ValueError naming the shapes, not a kernel reading fc_w with stride H."""
    from fused_rnn import recurrence
    g = torch.Generator().manual_seed(6)
    H = 16
    x, w_ih, w_hh = (torch.randn(*s, generator=g).to(DEVICE) for s in ((3, 4, 5), (3 * H, 5), (3 * H, H)))
    head = (torch.randn(*fc_w_shape, generator=g).to(DEVICE), torch.randn(*fc_b_shape, generator=g).to(DEVICE))
    with pytest.raises(ValueError, match=message):
        recurrence.layer("gru", x, w_ih, w_hh, None, None, None, None, None, reverse=False, allow_tf32=False,
                         backend="triton", store_out=False, head=head)
    assert heads == []
