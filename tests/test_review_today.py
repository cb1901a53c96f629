"""Review of the closing-4 change: defects found by reading it, each a failing test first.

Truth: torch.nn's modules with the same weights (CPU stock path), or torch.nn's own behaviour
for the same call. Tiny shapes: the CPU runs are torch.compile with the eager backend.
"""

import pytest
import torch
from torch import nn

import fused_rnn

I, H, B, T = 3, 5, 2, 4


@pytest.mark.parametrize("cls", ["RNN", "LSTM"])
def test_compiled_float64_module_under_cpu_autocast_stays_float64(cls):
    """Autocast casts float32 tensors only; a float64 module under ``torch.autocast("cpu", bfloat16)``
    runs in float64 in torch.nn (its _VF call sees no eligible tensor). Compiled, fused_rnn's RNN and
    LSTM run the layer driver, whose autocast_dtype cast every floating tensor, float64 included, to
    bfloat16: a bfloat16 output with ~1e-3 error where stock returns float64. (The GRU on CPU kept
    h0's / x's dtype and was right.) Truth: torch.nn eager, same weights, float64 to 1e-12."""
    torch.manual_seed(0)
    stock = getattr(nn, cls)(I, H, batch_first=True).double()
    ours = getattr(fused_rnn, cls)(I, H, batch_first=True).double()
    ours.load_state_dict(stock.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = stock(x)[0]
        got = torch.compile(ours, fullgraph=True, backend="eager")(x)[0]
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_compiled_float64_simple_rnn_under_cpu_autocast_stays_float64():
    """The same for SimpleRNN's one-layer Elman path (fused_rnn.rnn_linear under compile): the seed's
    nn.RNN + nn.Linear in float64 under CPU autocast return float64 (F.linear leaves float64 alone).
    Truth: the seed model's modules, eager, same weights."""
    torch.manual_seed(1)
    ours = fused_rnn.SimpleRNN(I, H, 2).double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ours.rnn(x)
        expected = ours.fc(out[:, -1])
        got = torch.compile(ours, fullgraph=True, backend="eager")(x)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", ["GRU", "LSTM"])
def test_fx_symbolic_trace_of_the_module_itself_raises_a_trace_error(cls):
    """torch.fx.symbolic_trace(nn.LSTM(...)) raises TraceError (the root is traced into, and its forward
    branches on the input). fused_rnn's forward recorded the root as a call_module node of path "" and
    failed building the GraphModule with AttributeError "'LSTM' object has no attribute ''". Truth:
    torch.nn's exception type."""
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(getattr(nn, cls)(I, H))
    with pytest.raises(torch.fx.proxy.TraceError, match="root"):
        torch.fx.symbolic_trace(getattr(fused_rnn, cls)(I, H))
