"""The layer driver (fused_rnn/recurrence.py) and the plain layer contract (fused_rnn/recurrence_stock.py).

Truths: tests/oracles.py (float64 loops per cell) and torch.nn.RNN / GRU / LSTM
with the same flat weights (PackedSequence for lengths). The kernel path's
autograd (the eager Function, shared backward, double backward) is exercised
with the plain contract standing in for a cell's kernel module (the same
functions a Triton module provides, so what is tested is the driver around
them), and with the real kernel modules for the cells whose kernels are in the
checkout. Both run on helpers.DEVICE: on CPU the kernels through the Triton
interpreter, on a GPU compiled (backend="triton" refuses CPU tensors there). The
plain contract, the ops' CPU bodies and the "auto"/"torch" paths stay on CPU.
"""

import types

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch.library import opcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import kernels
from oracles import GATES, STEPS, recurrence_loop
from fused_rnn import backends
from fused_rnn import recurrence as driver
from fused_rnn import recurrence_stock as stock
from fused_rnn.recurrence import layer, run_layers, select_layer_backend
from helpers import DEVICE

B, T, I, H = 5, 7, 3, 6
LENGTHS = [7, 1, 3, 5, 2]
CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
MODULES = {"rnn_tanh": (torch.nn.RNN, {}), "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
           "gru": (torch.nn.GRU, {}), "lstm": (torch.nn.LSTM, {})}

# float64 against float64: summation order only. fp32 against torch.nn's fp32:
# a few roundings per step over 7 steps and 2 layers.
TOLERANCES = {torch.float64: dict(atol=1e-11, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=1e-4)}


def contract_inputs(cell, dtype=torch.float64, *, seed=0, requires_grad=True, device="cpu"):
    """(xp, w_hh, b_hh, h0, c0) for one layer-direction, fresh random values (the same on every device)."""
    G = GATES[cell]
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * scale).to(device).requires_grad_(requires_grad)

    c0 = rand(B, H) if cell == "lstm" else None
    return rand(B, T, G * H), rand(G * H, H, scale=0.4), rand(G * H), rand(B, H), c0


def loop_with_gh_probe(cell, xp, w_hh, b_hh, h0, c0, probe, reverse):
    """The oracle's steps with ``probe`` [B, T, G·H] added to each gh_t, all steps (no lengths).

    ∂L/∂probe is the truth for the contract's dgh.
    """
    step = STEPS[cell]
    h, c = h0, (c0 if c0 is not None else torch.zeros_like(h0))
    outs = [None] * T
    for t in (reversed(range(T)) if reverse else range(T)):
        h, c = step(xp[:, t], h @ w_hh.T + b_hh + probe[:, t], h, c)
        outs[t] = h
    return torch.stack(outs, 1), h, c


@pytest.mark.parametrize("cell", CELLS)
def test_plain_contract_matches_oracle(cell):
    """recurrence_stock's forward and backward against the float64 oracle and autograd on it."""
    xp, w_hh, b_hh, h0, c0 = contract_inputs(cell)
    has_c = cell == "lstm"
    for reverse in (False, True):
        for lengths in (None, torch.tensor(LENGTHS)):
            out, h_n, c_n, hs, aux = stock.recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                                          store_saved=True)
            want_out, want_h, want_c = recurrence_loop(cell, xp, w_hh, b_hh, h0, c0, lengths, reverse)
            torch.testing.assert_close(out, want_out, **TOLERANCES[torch.float64])
            torch.testing.assert_close(h_n, want_h, **TOLERANCES[torch.float64])
            torch.testing.assert_close(hs, want_out, **TOLERANCES[torch.float64])
            assert (c_n is not None) == has_c
            if has_c:
                torch.testing.assert_close(c_n, want_c, **TOLERANCES[torch.float64])
            if lengths is not None:
                past = torch.arange(T)[None, :] >= lengths[:, None]
                assert (out[past] == 0).all() and (hs[past] == 0).all()

            dout, dh_n, dc_n = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(h_n)
            loss = (want_out * dout).sum() + (want_h * dh_n).sum() + ((want_c * dc_n).sum() if has_c else 0)
            inputs = [xp, h0] + ([c0] if has_c else [])
            want = torch.autograd.grad(loss, inputs)
            dxp, dgh, dh0, dc0 = stock.recurrence_bwd(cell, hs, aux, w_hh, b_hh, h0, c0, dout, dh_n,
                                                      dc_n if has_c else None, lengths, reverse=reverse)
            torch.testing.assert_close(dxp, want[0], **TOLERANCES[torch.float64])
            torch.testing.assert_close(dh0, want[1], **TOLERANCES[torch.float64])
            assert (dc0 is not None) == has_c
            if has_c:
                torch.testing.assert_close(dc0, want[2], **TOLERANCES[torch.float64])
            if lengths is not None:
                assert (dxp[past] == 0).all() and (dgh[past] == 0).all()
            else:
                probe = torch.zeros_like(xp, requires_grad=True)
                p_out, p_h, p_c = loop_with_gh_probe(cell, xp, w_hh, b_hh, h0, c0, probe, reverse)
                p_loss = (p_out * dout).sum() + (p_h * dh_n).sum() + ((p_c * dc_n).sum() if has_c else 0)
                torch.testing.assert_close(dgh, torch.autograd.grad(p_loss, probe)[0],
                                           **TOLERANCES[torch.float64])
    if cell == "gru":   # gh_n sits inside the reset product: dgh ≠ dxp in the n block only
        assert torch.equal(dgh[..., :2 * H], dxp[..., :2 * H])
        assert not torch.allclose(dgh[..., 2 * H:], dxp[..., 2 * H:])


def test_plain_contract_fp32_states_and_nan_padding():
    """fp16 in: fp32 hs, fp16 out; NaN in xp past the lengths reaches no output and no gradient."""
    xp, w_hh, b_hh, h0, c0 = contract_inputs("lstm", torch.float32, requires_grad=False)
    lengths = torch.tensor(LENGTHS)
    past = torch.arange(T)[None, :] >= lengths[:, None]
    poisoned = xp.masked_fill(past[..., None], float("nan"))
    for reverse in (False, True):
        clean = stock.recurrence_fwd("lstm", xp, w_hh, b_hh, h0, c0, lengths, reverse=reverse, store_saved=True)
        dirty = stock.recurrence_fwd("lstm", poisoned, w_hh, b_hh, h0, c0, lengths, reverse=reverse,
                                     store_saved=True)
        for a, b in zip(clean[:4], dirty[:4]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        grads = [stock.recurrence_bwd("lstm", *saved[3:5], w_hh, b_hh, h0, c0, torch.ones(B, T, H),
                                      torch.ones(B, H), None, lengths, reverse=reverse) for saved in (clean, dirty)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    out, h_n, _, hs, aux = stock.recurrence_fwd("gru", xp[..., :3 * H].half(), w_hh[:3 * H].half(), None,
                                                None, None, None, reverse=False, store_saved=True)
    assert (out.dtype, h_n.dtype, hs.dtype, aux.dtype) == (torch.float16, torch.float16, torch.float32,
                                                           torch.float32)


def nn_reference(cell, module, x, h0, c0, lengths, batch_first):
    """torch.nn's (out, h_n, c_n), out padded with zeros to T (lengths through a PackedSequence)."""
    hx = None if h0 is None else ((h0, c0) if cell == "lstm" else h0)
    if cell == "lstm" and h0 is None and c0 is not None:
        hx = (torch.zeros_like(c0), c0)
    if lengths is None:
        out, hidden = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
        out, hidden = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    h_n, c_n = hidden if cell == "lstm" else (hidden, None)
    return out, h_n, c_n


# (num_layers, bidirectional, batch_first, with h0 (and c0), with lengths): every option on and off,
# and each pair of options together at least once.
CONFIGS = [
    (1, False, True, False, False),
    (2, True, False, True, True),
    (2, False, False, True, False),
    (1, True, True, False, True),
    (2, True, True, True, False),
    (1, False, False, False, True),
]


def compare_with_torch_nn(cell, config, dtype, *, backend="torch", seed=0, dropout=0.0, device="cpu"):
    """run_layers on ``device`` against torch.nn on CPU with the same weights and inputs, forward and gradients."""
    num_layers, bidirectional, batch_first, with_h0, with_lengths = config
    module_type, kwargs = MODULES[cell]
    torch.manual_seed(seed)
    module = module_type(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         dropout=dropout, **kwargs).to(dtype).eval()
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype, requires_grad=True)
    h0 = torch.randn(num_layers * D, B, H, dtype=dtype, requires_grad=True) if with_h0 else None
    c0 = torch.randn(num_layers * D, B, H, dtype=dtype, requires_grad=True) if with_h0 and cell == "lstm" else None
    lengths = LENGTHS if with_lengths else None
    want = nn_reference(cell, module, x, h0, c0, lengths, batch_first)

    # The same values as leaves on ``device``: x, the flat weights, then h0 and c0 where given.
    weights = list(module._flat_weights)
    ref_inputs = [x] + weights + [t for t in (h0, c0) if t is not None]
    inputs = [t.detach().to(device).requires_grad_() for t in ref_inputs]
    states = iter(inputs[1 + len(weights):])
    h0_dev = next(states) if h0 is not None else None
    c0_dev = next(states) if c0 is not None else None
    got = run_layers(cell, inputs[0], inputs[1:1 + len(weights)], h0_dev, c0_dev,
                     lengths if lengths is None else torch.tensor(lengths), num_layers=num_layers,
                     bidirectional=bidirectional, batch_first=batch_first, dropout=dropout,
                     training=module.training, allow_tf32=False, backend=backend)
    assert (got[2] is None) == (cell != "lstm")
    assert got[0].is_contiguous()   # torch.nn's [T, B, ·] is (code views it as [T·B, ·]); its batch_first one is not
    for g, w in zip(got, want):
        if w is not None:
            assert g.shape == w.shape and g.dtype == w.dtype and g.device == inputs[0].device
            torch.testing.assert_close(g.cpu(), w, **TOLERANCES[dtype])

    cotangents = [torch.randn_like(w) for w in want if w is not None]
    want_grads = torch.autograd.grad([w for w in want if w is not None], ref_inputs, cotangents)
    got_grads = torch.autograd.grad([g for g in got if g is not None], inputs, [c.to(device) for c in cotangents])
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.cpu(), w, **TOLERANCES[dtype])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "L{}-{}-{}-{}-{}".format(
    c[0], "bi" if c[1] else "uni", "bf" if c[2] else "tm", "h0" if c[3] else "noh0", "len" if c[4] else "full"))
@pytest.mark.parametrize("cell", CELLS)
def test_run_layers_matches_torch_nn_float64(cell, config):
    compare_with_torch_nn(cell, config, torch.float64)


@pytest.mark.parametrize("cell", CELLS)
def test_run_layers_matches_torch_nn_float32(cell):
    compare_with_torch_nn(cell, CONFIGS[1], torch.float32, seed=1)


def test_dropout_eval_is_identity_and_training_matches_torch_nn():
    """dropout > 0 in eval mode drops nothing; in training one seed gives torch.nn's masks on CPU."""
    compare_with_torch_nn("gru", CONFIGS[1], torch.float64, dropout=0.4)
    for batch_first in (True, False):
        for bidirectional in (False, True):
            torch.manual_seed(2)
            module = torch.nn.LSTM(I, H, num_layers=3, dropout=0.5, bidirectional=bidirectional,
                                   batch_first=batch_first).double()
            x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=torch.float64)
            torch.manual_seed(3)
            want, (want_h, _) = module(x)
            torch.manual_seed(3)
            out, h_n, _ = run_layers("lstm", x, module._flat_weights, None, None, None, num_layers=3,
                                     bidirectional=bidirectional, batch_first=batch_first, dropout=0.5,
                                     training=True, allow_tf32=False, backend="torch")
            torch.testing.assert_close(out, want, **TOLERANCES[torch.float64])
            torch.testing.assert_close(h_n, want_h, **TOLERANCES[torch.float64])
            no_dropout, _, _ = run_layers("lstm", x, module._flat_weights, None, None, None, num_layers=3,
                                          bidirectional=bidirectional, batch_first=batch_first, dropout=0.5,
                                          training=False, allow_tf32=False, backend="torch")
            assert not torch.allclose(out, no_dropout)     # the masks did act


def test_store_last_output_false_and_empty_batch():
    torch.manual_seed(4)
    module = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I)
    args = dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.0, training=False, allow_tf32=False,
                backend="torch")
    out, h_n, c_n = run_layers("gru", x, module._flat_weights, None, None, None, store_last_output=False, **args)
    assert out is None and c_n is None
    torch.testing.assert_close(h_n, module(x)[1], **TOLERANCES[torch.float32])
    out, h_n, _ = run_layers("gru", x[:0], module._flat_weights, None, None, None, **args)
    assert out.shape == (0, T, 2 * H) and h_n.shape == (4, 0, H)


def test_autocast_runs_the_stack_in_the_low_dtype():
    torch.manual_seed(5)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True)
    x = torch.randn(B, T, I)
    want, (want_h, _) = module(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n, c_n = run_layers("lstm", x, module._flat_weights, None, None, None, num_layers=2,
                                   bidirectional=False, batch_first=True, dropout=0.0, training=False,
                                   allow_tf32=False, backend="torch")
    assert out.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
    # bf16 inputs and weights (2^-8 relative), fp32 state: errors of a few 1e-3.
    torch.testing.assert_close(out.float(), want, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert module.weight_hh_l0.grad.dtype == torch.float32


def test_bad_input_raises_before_running():
    module = torch.nn.LSTM(I, H, num_layers=2)
    x = torch.randn(T, B, I)
    args = dict(num_layers=2, bidirectional=False, batch_first=False, dropout=0.0, training=False, allow_tf32=False,
                backend="torch")
    weights = module._flat_weights
    with pytest.raises(ValueError, match="cell must be one of"):
        run_layers("lstmx", x, weights, None, None, None, **args)
    with pytest.raises(ValueError, match="2 or 4 tensors per layer"):
        run_layers("lstm", x, weights[:-1], None, None, None, **args)
    with pytest.raises(ValueError, match=r"gru has 3 gates: weight_hh must be \(18, 6\), got \(24, 6\)"):
        run_layers("gru", x, weights, None, None, None, **args)   # wrong cell for these weights
    with pytest.raises(ValueError, match=r"weights\[1\] must be the first weight_hh, a 2-D tensor, got \(24,\)"):
        run_layers("lstm", x, [weights[0], weights[2]] * 4, None, None, None, **args)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 5, 6\)"):
        run_layers("lstm", x, weights, torch.zeros(1, B, H), None, None, **args)
    with pytest.raises(ValueError, match="c0 is for cells with a cell state"):
        run_layers("rnn_tanh", x, torch.nn.RNN(I, H, num_layers=2)._flat_weights, None, torch.zeros(2, B, H),
                   None, **args)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=7\]"):
        run_layers("lstm", x, weights, None, None, torch.tensor([7, 0, 3, 5, 2]), **args)
    with pytest.raises(ValueError, match="backend must be one of"):
        run_layers("lstm", x, weights, None, None, None, **dict(args, backend="cudnn"))


# --- backend choice --------------------------------------------------------------------------------------------

def stand_in_kernels(monkeypatch, supported=True):
    """The plain contract as every cell's kernel module, so backend="triton" runs the driver's kernel path.

    Tensors on DEVICE: the backend check still refuses CPU tensors where the
    Triton interpreter is off (a GPU machine), stand-in or not.
    """
    module = types.SimpleNamespace(
        recurrence_fwd=stock.recurrence_fwd, recurrence_bwd=stock.recurrence_bwd,
        unsupported_reason=lambda cell, dtype, hidden_size, allow_tf32, needs_grad: (
            None if supported else f"hidden_size={hidden_size} is too large for the stand-in"))
    monkeypatch.setattr(backends.triton, "layer_kernels", lambda cell: module)
    return module


def test_select_layer_backend(monkeypatch):
    x = torch.randn(B, T, I)
    choose = dict(needs_grad=False, allow_tf32=False)
    assert select_layer_backend("gru", x, H, backend="torch", **choose) == "torch"
    assert select_layer_backend("gru", x, H, backend="auto", **choose) == "torch"   # CPU tensors
    with pytest.raises(ValueError, match="backend must be one of"):
        select_layer_backend("gru", x, H, backend="cudnn", **choose)
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run this call: there is no CUDA kernel for layers"):
        select_layer_backend("gru", x, H, backend="cuda", **choose)
    with pytest.raises(ValueError, match="cell must be one of"):
        select_layer_backend("rnn", x, H, backend="torch", **choose)

    # A cell whose kernel module does not exist (yet): a forced "triton" says so.
    monkeypatch.setattr(backends.triton, "_LAYER_KERNELS", {})
    monkeypatch.setitem(backends.triton.KERNEL_MODULE_EXISTS, "gru", False)
    with pytest.raises(RuntimeError, match="no Triton kernel for cell 'gru' yet"):
        select_layer_backend("gru", x, H, backend="triton", **choose)
    with pytest.raises(RuntimeError, match="no Triton kernel for cell 'gru' yet"):
        run_layers("gru", x, torch.nn.GRU(I, H)._flat_weights, None, None, None, num_layers=1, bidirectional=False,
                   batch_first=True, dropout=0.0, training=False, allow_tf32=False, backend="triton")

    stand_in_kernels(monkeypatch)
    x = x.to(DEVICE)   # a forced "triton" takes CPU tensors only under the interpreter
    assert select_layer_backend("gru", x, H, backend="triton", **choose) == "triton"
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16, got torch.float64"):
        select_layer_backend("gru", x.double(), H, backend="triton", **choose)
    with pytest.raises(RuntimeError, match="inside torch.func transforms"):
        torch.func.vmap(lambda v: select_layer_backend("gru", v, H, backend="triton", **choose))(x)
    with pytest.raises(RuntimeError, match="no CUDA kernel for layers"):
        torch.func.vmap(lambda v: select_layer_backend("gru", v, H, backend="cuda", **choose))(x)
    chosen = []
    torch.func.vmap(lambda v: chosen.append(select_layer_backend("gru", v, H, backend="auto", **choose)) or v)(x)
    assert chosen == ["torch"]
    stand_in_kernels(monkeypatch, supported=False)
    with pytest.raises(RuntimeError, match="hidden_size=6 is too large for the stand-in"):
        select_layer_backend("gru", x, H, backend="triton", **choose)


# --- the kernel path's autograd, with the stand-in -------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_kernel_path_matches_torch_nn(cell, monkeypatch):
    """The eager Function (forward, shared backward) around a kernel module, against torch.nn."""
    stand_in_kernels(monkeypatch)
    compare_with_torch_nn(cell, CONFIGS[1], torch.float32, backend="triton", seed=6, device=DEVICE)


def test_kernel_path_inference_and_missing_outputs(monkeypatch):
    """No grad: no Function; store_out=False: out is None, and backward from h_n alone works."""
    module = stand_in_kernels(monkeypatch)
    calls = []
    forward = module.recurrence_fwd
    module.recurrence_fwd = lambda *a, **k: calls.append(k.get("store_saved", False)) or forward(*a, **k)
    xp, w_hh, b_hh, h0, c0 = contract_inputs("lstm", torch.float32, seed=7, device=DEVICE)
    x, w_ih = torch.randn(B, T, I, device=DEVICE), torch.randn(4 * H, I, device=DEVICE, requires_grad=True)
    with torch.no_grad():
        out, h_n, c_n = layer("lstm", x, w_ih, w_hh, None, b_hh, h0, c0, None, reverse=True, allow_tf32=False,
                              backend="triton")
    assert calls == [False] and out.grad_fn is None
    out2, h_n2, c_n2 = layer("lstm", x, w_ih, w_hh, None, b_hh, h0, c0, None, reverse=True, allow_tf32=False,
                             backend="triton", store_out=False)
    assert calls == [False, True] and out2 is None
    torch.testing.assert_close(h_n2, h_n, rtol=0, atol=0)
    h_n2.sum().backward()
    want = torch.autograd.grad(layer("lstm", x, w_ih, w_hh, None, b_hh, h0, c0, None, reverse=True,
                                     allow_tf32=False, backend="torch")[1].sum(), [w_ih, w_hh, h0, c0])
    for got, w in zip((w_ih.grad, w_hh.grad, h0.grad, c0.grad), want):
        torch.testing.assert_close(got, w, **TOLERANCES[torch.float32])
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="no forward-mode AD"):
        layer("lstm", fwAD.make_dual(x, torch.ones_like(x)), w_ih, w_hh, None, b_hh, h0, c0, None, reverse=False,
              allow_tf32=False, backend="triton")


def autograd_nodes(t):
    """Names of every node in t's autograd graph."""
    names, stack, seen = [], [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_double_backward_through_the_function(cell, monkeypatch):
    """gradcheck and gradgradcheck of one layer (input GEMM and recurrence) through the eager Function."""
    stand_in_kernels(monkeypatch)
    monkeypatch.setattr(backends.triton, "KERNEL_DTYPES", (torch.float64,))   # gradcheck's finite differences need it
    torch.manual_seed(8)
    G = GATES[cell]

    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, device=DEVICE, requires_grad=True)

    x, w_ih, w_hh, b_ih, b_hh, h0 = rand(3, 3, 2), rand(G * 2, 2), rand(G * 2, 2), rand(G * 2), rand(G * 2), rand(3, 2)
    c0 = rand(3, 2) if cell == "lstm" else None
    lengths = torch.tensor([3, 1, 2], device=DEVICE)
    for reverse in (False, True):
        def one_layer(x, w_ih, w_hh, b_ih, b_hh, h0, *c0):
            out, h_n, c_n = layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0[0] if c0 else None, lengths,
                                  reverse=reverse, allow_tf32=False, backend="triton")
            assert "_RecurrenceFunctionBackward" in autograd_nodes(out)
            return (out, h_n) if c_n is None else (out, h_n, c_n)

        inputs = (x, w_ih, w_hh, b_ih, b_hh, h0) + ((c0,) if c0 is not None else ())
        assert torch.autograd.gradcheck(one_layer, inputs)
        assert torch.autograd.gradgradcheck(one_layer, inputs)


def test_gradients_through_the_op(monkeypatch):
    """gradcheck of a 2-layer bidirectional stack through fused_rnn::recurrence; double backward: a clear error.

    Eager calls take the op only for meta tensors and under torch.compile (which
    has no double backward); it is forced here.
    """
    monkeypatch.setattr(driver, "is_compiling", lambda: True)
    torch.manual_seed(8)
    weights = list(torch.nn.LSTM(2, 2, num_layers=2, bidirectional=True, batch_first=True).double()._flat_weights)
    x = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1, 2])
    # Gradcheck's cost grows with the inputs: x, h0, c0 and one weight of each kind, of both layers and directions.
    checked = {1: "w_hh l0", 7: "b_hh l0 reverse", 8: "w_ih l1"}

    def stack(x, h0, c0, *checked_weights):
        tensors = [w.detach() for w in weights]
        for index, w in zip(checked, checked_weights):
            tensors[index] = w
        out, h_n, c_n = run_layers("lstm", x, tensors, h0, c0, lengths, num_layers=2, bidirectional=True,
                                   batch_first=True, dropout=0.0, training=False, allow_tf32=False, backend="torch")
        assert any("fused_rnn_recurrence" in name for name in autograd_nodes(out))
        return out, h_n, c_n

    inputs = (x, h0, c0, *(weights[i].detach().requires_grad_() for i in checked))
    assert torch.autograd.gradcheck(stack, inputs)
    with pytest.raises(RuntimeError, match="double backward .* does not go through fused_rnn::recurrence"):
        dx, = torch.autograd.grad(stack(*inputs)[0].sum(), x, create_graph=True)


# --- registered ops ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_registered_ops(cell):
    """fused_rnn::recurrence off CUDA against the oracle; opcheck on both ops (fakes, schema, autograd)."""
    xp, w_hh, b_hh, h0, c0 = contract_inputs(cell, seed=9)
    lengths = torch.tensor(LENGTHS)
    out, h_n, c_n, hs, aux = torch.ops.fused_rnn.recurrence(cell, xp, w_hh, b_hh, h0, c0, lengths, True, False,
                                                            True, True, False)
    want_out, want_h, want_c = recurrence_loop(cell, xp, w_hh, b_hh, h0, c0, lengths, True)
    torch.testing.assert_close(out, want_out, **TOLERANCES[torch.float64])
    torch.testing.assert_close(h_n, want_h, **TOLERANCES[torch.float64])
    assert c_n.shape == ((B, H) if cell == "lstm" else (0,))
    if cell == "lstm":
        torch.testing.assert_close(c_n, want_c, **TOLERANCES[torch.float64])
    if cell == "rnn_relu":
        return   # opcheck's ~20 runs per op: gru (G = 3), lstm (c) and rnn_tanh (G = 1) cover the fakes' shapes
    opcheck(torch.ops.fused_rnn.recurrence.default,
            (cell, xp, w_hh, b_hh, h0, c0, lengths, True, False, True, True, False))
    plain = [t.detach().float() if t is not None else None for t in (xp, w_hh, b_hh, h0, c0)]
    opcheck(torch.ops.fused_rnn.recurrence.default, (cell, plain[0], plain[1], None, None, None, None, False, False,
                                                     False, False, True))
    saved = [t.detach() if t is not None else None for t in (hs, aux, w_hh, b_hh, h0, c0)]
    dc_n = torch.randn(B, H, dtype=torch.float64) if cell == "lstm" else None
    opcheck(torch.ops.fused_rnn.recurrence_bwd.default,
            (cell, *saved, torch.randn(B, T, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64), dc_n,
             lengths, True, False, False))
    with pytest.raises(RuntimeError, match="store_saved=False"):
        xp_grad = plain[0].requires_grad_()
        torch.ops.fused_rnn.recurrence(cell, xp_grad, plain[1], None, None, None, None, False, False, True,
                                       False, False)[1].sum().backward()


def test_meta_tensors_take_the_op():
    xp, w_hh, b_hh, h0, c0 = (t.to("meta") if t is not None else None
                              for t in contract_inputs("lstm", torch.float32, requires_grad=False))
    out, h_n, c_n = driver.recurrence("lstm", xp, w_hh, b_hh, h0, c0, None, reverse=False, allow_tf32=False,
                                      backend="torch", projection=None)
    assert out.shape == (B, T, H) and h_n.shape == c_n.shape == (B, H) and out.is_meta


# --- torch.compile ----------------------------------------------------------------------------------------------

def compiled_stack(cell, num_layers, bidirectional, batch_first, backend):
    def stack(x, weights, h0, c0, lengths):
        return run_layers(cell, x, weights, h0, c0, lengths, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=batch_first, dropout=0.0, training=False, allow_tf32=False, backend="auto")
    return torch.compile(stack, fullgraph=True, backend=backend)


def test_compile_fullgraph_matches_eager_with_gradients():
    """One fused_rnn::recurrence per layer and direction in the graph; forward and backward as eager."""
    torch.manual_seed(10)
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    weights = list(module._flat_weights)
    x = torch.randn(T, B, I, requires_grad=True)
    h0, c0 = torch.randn(4, B, H, requires_grad=True), torch.randn(4, B, H, requires_grad=True)
    lengths = torch.tensor(LENGTHS)

    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)   # fake tensors, register_autograd: no inductor

    compiled = compiled_stack("lstm", 2, True, False, recording_backend)
    got = compiled(x, weights, h0, c0, lengths)
    want = run_layers("lstm", x, weights, h0, c0, lengths, num_layers=2, bidirectional=True, batch_first=False,
                      dropout=0.0, training=False, allow_tf32=False, backend="torch")
    ops = [n for n in graphs[0].graph.nodes if n.target is torch.ops.fused_rnn.recurrence.default]
    assert len(graphs) == 1 and len(ops) == 4
    cotangents = [torch.randn_like(w) for w in want]
    inputs = [x, *weights, h0, c0]
    for g, w, gg, wg in zip(got, want, torch.autograd.grad(got, inputs, cotangents),
                            torch.autograd.grad(want, inputs, cotangents)):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
        torch.testing.assert_close(gg, wg, **TOLERANCES[torch.float32])


def test_compile_training_keeps_T_dynamic():
    """Forward and backward through the compiled graph for new T: one more graph, then none, as eager."""
    torch.manual_seed(12)
    module = torch.nn.LSTM(I, H, batch_first=True, bidirectional=True)
    weights = list(module._flat_weights)
    compiled = compiled_stack("lstm", 1, True, True, "aot_eager")
    counter = torch._dynamo.utils.counters
    torch._dynamo.reset()
    counter.clear()
    for steps in (2, 3, 5, 9):
        x = torch.randn(B, steps, I, requires_grad=True)
        lengths = torch.arange(B) % steps + 1
        results = []
        for fn in (compiled, lambda *args: run_layers("lstm", *args, num_layers=1, bidirectional=True,
                                                      batch_first=True, dropout=0.0, training=False,
                                                      allow_tf32=False, backend="torch")):
            out, h_n, c_n = fn(x, weights, None, None, lengths)
            results.append((out, h_n, c_n, *torch.autograd.grad((out.sum(), h_n.sum()), [x, *weights])))
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])
    assert counter["stats"]["unique_graphs"] <= 2


def test_compile_keeps_T_dynamic():
    """Inductor, end to end; a second T compiles once more (dynamic), later ones not at all."""
    torch.manual_seed(11)
    module = torch.nn.GRU(I, H, batch_first=True)
    weights = list(module._flat_weights)
    compiled = compiled_stack("gru", 1, False, True, "inductor")
    counter = torch._dynamo.utils.counters
    torch._dynamo.reset()
    counter.clear()
    for steps in (2, 3, 5, 9):
        x = torch.randn(B, steps, I)
        lengths = torch.arange(B) % steps + 1
        got = compiled(x, weights, None, None, lengths)
        want = run_layers("gru", x, weights, None, None, lengths, num_layers=1, bidirectional=False,
                          batch_first=True, dropout=0.0, training=False, allow_tf32=False, backend="torch")
        for g, w in zip(got[:2], want[:2]):
            torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
    assert counter["stats"]["unique_graphs"] <= 2


def test_export_with_dynamic_T():
    """torch.export sees one fused_rnn::recurrence per layer and direction, and the program takes any T."""
    torch.manual_seed(13)
    module = torch.nn.LSTM(I, H, bidirectional=True, batch_first=True)

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList(module._flat_weights)

        def forward(self, x):
            return run_layers("lstm", x, list(self.weights), None, None, None, num_layers=1, bidirectional=True,
                              batch_first=True, dropout=0.0, training=False, allow_tf32=False, backend="auto")

    stack = Stack()
    program = torch.export.export(stack, (torch.randn(B, 4, I),),
                                  dynamic_shapes={"x": {1: torch.export.Dim("T", min=2)}})
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.fused_rnn.recurrence.default) == 2
    for steps in (3, 9):
        x = torch.randn(B, steps, I)
        for got, want in zip(program.module()(x), stack(x)):
            torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])


# --- the real kernels on DEVICE: interpreted on CPU, compiled on a GPU (outputs NaN-poisoned by conftest) --------

def leaves_on(device, tensors):
    """Leaf copies (requires_grad) on ``device`` of a module's weights."""
    return [t.detach().to(device).requires_grad_() for t in tensors]


def needs_kernels(cell):
    """Skip where the cell's kernel module is not in this checkout (yet); the stand-in tests cover the driver."""
    module = driver.kernel_module(cell)
    if isinstance(module, str):
        pytest.skip(module)


@pytest.mark.parametrize("cell", CELLS)
def test_triton_path_matches_torch_nn(cell):
    """run_layers(backend="triton"): 2 layers, bidirectional, time-major, h0 (c0), lengths; forward and grads."""
    needs_kernels(cell)
    compare_with_torch_nn(cell, CONFIGS[1], torch.float32, backend="triton", seed=14, device=DEVICE)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_triton_path_inference_head_only_and_double_backward(cell):
    """No grad (no saved states), store_last_output=False (grads from h_n alone), create_graph=True."""
    needs_kernels(cell)
    torch.manual_seed(15)
    module_type, kwargs = MODULES[cell]
    weights = leaves_on(DEVICE, module_type(I, H, num_layers=2, bidirectional=True, batch_first=True,
                                            **kwargs)._flat_weights)
    x = torch.randn(B, T, I, device=DEVICE, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    args = dict(num_layers=2, bidirectional=True, batch_first=True, dropout=0.0, training=False, allow_tf32=False)

    def stack(backend, **kwargs):
        return run_layers(cell, x, weights, None, None, lengths, backend=backend, **args, **kwargs)

    with torch.no_grad():
        for got, want in zip(stack("triton"), stack("torch")):
            if want is not None:
                torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])
    out, h_n, _ = stack("triton", store_last_output=False)
    assert out is None
    got = torch.autograd.grad(h_n.square().sum(), [x, *weights])
    want = torch.autograd.grad(stack("torch")[1].square().sum(), [x, *weights])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
    # Double backward: the Function's backward differentiates the plain loop.
    results = []
    for backend in ("triton", "torch"):
        dx, = torch.autograd.grad(stack(backend)[0].square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), weights[1]))
    torch.testing.assert_close(*results, **TOLERANCES[torch.float32])


# --- bidirectional Elman layers: both directions in one launch ---------------------------------------------------

def spy_on_elman(monkeypatch):
    """Count the elman kernel module's launches by function name."""
    module = driver.kernel_module("rnn_tanh")
    calls = {}
    for name in ("recurrence_fwd", "recurrence_bwd", "bidirectional_fwd", "bidirectional_bwd"):
        def spy(*args, _name=name, _fn=getattr(module, name), **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _fn(*args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    return calls


# (num_layers, batch_first, with h0, with lengths): each pair of options together at least once.
BIDIRECTIONAL_CONFIGS = [(1, True, True, False), (2, False, False, True), (2, True, False, False),
                         (1, False, True, True), (2, False, True, False), (1, True, False, True)]

# bf16 against torch.nn in fp32 on the same bf16-rounded inputs and weights: xp and out are rounded to bf16
# (2^-9 relative each) and the gradients' products take bf16 operands, over 7 steps and 2 layers.
BF16_TOLERANCE = dict(atol=3e-2, rtol=3e-2)


def round_state_as_the_kernels(monkeypatch, dtype):
    """Make the plain path round the state to ``dtype`` before each W_hh product where the kernels do.

    Their MMA takes bf16/fp16 operands on a GPU (kernels.precision "low"): h is
    rounded there every step, 2^-9 relative for bf16; the interpreter multiplies
    bf16 in fp32 ("ieee"), as the plain path does. Where a relu pre-activation
    lies within that rounding of 0, relu' differs between the two and so do the
    gradients by O(1) (seen with the values of L1-bf-noh0-len: dW_ih 0.142 against
    0.180), so the truth for the kernels' relu gradients takes the same operands.
    """
    if kernels.precision(dtype, allow_tf32=False) != "low":
        return
    linear = torch.nn.functional.linear
    monkeypatch.setattr(stock, "F", types.SimpleNamespace(
        linear=lambda h, w, b=None: linear(h.to(dtype).to(h.dtype), w, b)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("config", BIDIRECTIONAL_CONFIGS, ids=lambda c: "L{}-{}-{}-{}".format(
    c[0], "bf" if c[1] else "tm", "h0" if c[2] else "noh0", "len" if c[3] else "full"))
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu"])
def test_bidirectional_elman_one_launch_matches_torch_nn(cell, config, dtype, monkeypatch):
    """One forward and one backward launch per bidirectional layer, against torch.nn.RNN (PackedSequence) on CPU."""
    needs_kernels(cell)
    calls = spy_on_elman(monkeypatch)
    num_layers, batch_first, with_h0, with_lengths = config
    module_type, kwargs = MODULES[cell]
    torch.manual_seed(16)
    module = module_type(I, H, num_layers=num_layers, bidirectional=True, batch_first=batch_first, **kwargs)
    # The truth runs in fp32 on the values the bf16 run sees.
    module = module.to(dtype).float()
    shape = (B, T, I) if batch_first else (T, B, I)
    x = torch.randn(shape).to(dtype).float().requires_grad_()
    h0 = torch.randn(2 * num_layers, B, H).to(dtype).float().requires_grad_() if with_h0 else None
    lengths = LENGTHS if with_lengths else None
    want = nn_reference(cell, module, x, h0, None, lengths, batch_first)[:2]
    cotangents = [torch.randn_like(w).to(dtype).float() for w in want]
    want_grads = torch.autograd.grad(want, [x, *module._flat_weights, *([h0] if with_h0 else [])], cotangents)

    weights = [w.detach().to(DEVICE, dtype).requires_grad_() for w in module._flat_weights]
    x_low = x.detach().to(DEVICE, dtype).requires_grad_()
    h0_low = h0.detach().to(DEVICE, dtype).requires_grad_() if with_h0 else None
    got = run_layers(cell, x_low, weights, h0_low, None, None if lengths is None else torch.tensor(lengths),
                     num_layers=num_layers, bidirectional=True, batch_first=batch_first, dropout=0.0,
                     training=False, allow_tf32=False, backend="triton")
    assert got[2] is None and got[0].is_contiguous()
    inputs = [x_low, *weights, *([h0_low] if with_h0 else [])]
    got_grads = torch.autograd.grad(got[:2], inputs, [c.to(DEVICE, dtype) for c in cotangents])
    assert calls == {"bidirectional_fwd": num_layers, "bidirectional_bwd": num_layers}
    if cell == "rnn_relu" and dtype == torch.bfloat16:
        # relu' flips where a pre-activation lies within bf16's rounding of xp (2^-9 relative) of 0, and
        # 840 pre-activations always hold some: the gradients' truth is then the plain contract on the same
        # bf16 xp (same GEMM) and fp32 state, which torch.nn checks in fp32 and float64 above; on a GPU
        # with the state rounded to bf16 as the kernels' MMA operand.
        round_state_as_the_kernels(monkeypatch, dtype)
        plain = run_layers(cell, x_low, weights, h0_low, None, None if lengths is None else torch.tensor(lengths),
                           num_layers=num_layers, bidirectional=True, batch_first=batch_first, dropout=0.0,
                           training=False, allow_tf32=False, backend="torch")
        want_grads = [g.float().cpu() for g in torch.autograd.grad(plain[:2], inputs,
                                                                  [c.to(DEVICE, dtype) for c in cotangents])]
    tolerance = TOLERANCES[torch.float32] if dtype == torch.float32 else BF16_TOLERANCE
    for g, w in zip([*got[:2], *got_grads], [*want, *want_grads]):
        assert g.shape == w.shape and g.dtype == dtype and g.device == x_low.device
        torch.testing.assert_close(g.float().cpu(), w, **tolerance)


def test_bidirectional_elman_inference_head_only_and_double_backward(monkeypatch):
    """No grad: one launch, no Function; store_last_output=False; create_graph=True through the plain loop."""
    needs_kernels("rnn_tanh")
    calls = spy_on_elman(monkeypatch)
    torch.manual_seed(17)
    weights = leaves_on(DEVICE, torch.nn.RNN(I, H, num_layers=2, bidirectional=True)._flat_weights)
    x = torch.randn(T, B, I, device=DEVICE, requires_grad=True)
    h0 = torch.randn(4, B, H, device=DEVICE, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    args = dict(num_layers=2, bidirectional=True, batch_first=False, dropout=0.0, training=False, allow_tf32=False)

    def stack(backend, **kwargs):
        return run_layers("rnn_tanh", x, weights, h0, None, lengths, backend=backend, **args, **kwargs)

    with torch.no_grad():
        got = stack("triton")
        assert got[0].grad_fn is None and calls == {"bidirectional_fwd": 2}
        for g, w in zip(got[:2], stack("torch")[:2]):
            torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
    out, h_n, _ = stack("triton", store_last_output=False)
    assert out is None
    got = torch.autograd.grad(h_n.square().sum(), [x, h0, *weights])
    want = torch.autograd.grad(stack("torch")[1].square().sum(), [x, h0, *weights])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
    results = []
    for backend in ("triton", "torch"):
        out, h_n, _ = stack(backend)
        dx, = torch.autograd.grad(out.square().sum() + h_n.sum(), x, create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), [weights[1], weights[7], h0]))
    for g, w in zip(*results):
        torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])
    assert calls["bidirectional_fwd"] == 2 + 2 + 2 and "recurrence_fwd" not in calls


def test_bidirectional_op_gradients_and_no_double_backward(monkeypatch):
    """gradcheck of a 2-layer bidirectional Elman stack through fused_rnn::bidirectional_recurrence (forced).

    On CPU tensors: the op's CPU body (the plain contract) under its registered
    autograd. The kernel path is chosen by hand rather than by backend="triton",
    which refuses float64, and CPU tensors where the interpreter is off; on
    CUDA the op's body would launch the kernels (test_compile_fullgraph_one_op_per_bidirectional_elman_layer).
    """
    module = stand_in_kernels(monkeypatch)
    module.bidirectional_fwd = module.bidirectional_bwd = None   # fuses_directions looks for them
    monkeypatch.setattr(driver, "select_layer_backend", lambda *args, **kwargs: "triton")
    monkeypatch.setattr(driver, "is_compiling", lambda: True)
    torch.manual_seed(18)
    weights = list(torch.nn.RNN(2, 2, num_layers=2, bidirectional=True, batch_first=True,
                                nonlinearity="relu").double()._flat_weights)
    x = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1, 2])
    checked = {1: "w_hh l0", 7: "b_hh l0 reverse", 8: "w_ih l1"}

    def stack(x, h0, *checked_weights):
        tensors = [w.detach() for w in weights]
        for index, w in zip(checked, checked_weights):
            tensors[index] = w
        out, h_n, _ = run_layers("rnn_relu", x, tensors, h0, None, lengths, num_layers=2, bidirectional=True,
                                 batch_first=True, dropout=0.0, training=False, allow_tf32=False, backend="triton")
        names = autograd_nodes(out)
        assert any("bidirectional_recurrence" in n for n in names), names
        assert not any("fused_rnn_recurrence" in n for n in names), names
        return out, h_n

    inputs = (x, h0, *(weights[i].detach().requires_grad_() for i in checked))
    assert torch.autograd.gradcheck(stack, inputs)
    with pytest.raises(RuntimeError, match="double backward .* does not go through "
                                           "fused_rnn::bidirectional_recurrence"):
        torch.autograd.grad(stack(*inputs)[0].sum(), x, create_graph=True)


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu"])
def test_bidirectional_registered_ops(cell):
    """fused_rnn::bidirectional_recurrence off CUDA against the oracle per direction; opcheck on both ops."""
    forward_, reverse_ = (contract_inputs(cell, seed=19 + d) for d in (0, 1))
    xp = torch.cat([forward_[0], reverse_[0]], dim=2)
    w_hh, b_hh, h0 = (torch.stack([a, b]) for a, b in zip(forward_[1:4], reverse_[1:4]))
    lengths = torch.tensor(LENGTHS)
    out, h_n, hs, aux = torch.ops.fused_rnn.bidirectional_recurrence(cell, xp, w_hh, b_hh, h0, lengths, False, True,
                                                                     True)
    for d, inputs in enumerate((forward_, reverse_)):
        want_out, want_h, _ = recurrence_loop(cell, *inputs[:4], None, lengths, d == 1)
        torch.testing.assert_close(out[..., d * H:(d + 1) * H], want_out, **TOLERANCES[torch.float64])
        torch.testing.assert_close(h_n[d], want_h, **TOLERANCES[torch.float64])
        torch.testing.assert_close(hs[d], want_out, **TOLERANCES[torch.float64])
    opcheck(torch.ops.fused_rnn.bidirectional_recurrence.default, (cell, xp, w_hh, b_hh, h0, lengths, False, True,
                                                                   True))
    plain = [t.detach().float() for t in (xp, w_hh)]
    opcheck(torch.ops.fused_rnn.bidirectional_recurrence.default, (cell, *plain, None, None, None, False, False,
                                                                   False))
    saved = [t.detach() for t in (hs, aux, w_hh, b_hh, h0)]
    opcheck(torch.ops.fused_rnn.bidirectional_recurrence_bwd.default,
            (cell, *saved, torch.randn(B, T, 2 * H, dtype=torch.float64), torch.randn(2, B, H, dtype=torch.float64),
             lengths, False))


def test_compile_fullgraph_one_op_per_bidirectional_elman_layer():
    """Compiled with backend="triton": 2 fused_rnn::bidirectional_recurrence for 2 layers, where "torch" has
    4 fused_rnn::recurrence; forward and gradients as eager."""
    needs_kernels("rnn_tanh")
    torch.manual_seed(20)
    weights = leaves_on(DEVICE, torch.nn.RNN(I, H, num_layers=2, bidirectional=True)._flat_weights)
    x = torch.randn(T, B, I, device=DEVICE, requires_grad=True)
    h0 = torch.randn(4, B, H, device=DEVICE, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    counts = {}

    def counting_backend(name):
        def backend(gm, example_inputs):
            targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
            counts[name] = (targets.count(torch.ops.fused_rnn.bidirectional_recurrence.default),
                            targets.count(torch.ops.fused_rnn.recurrence.default))
            return lookup_backend("aot_eager")(gm, example_inputs)
        return backend

    def stack(backend):
        return lambda x, weights, h0, lengths: run_layers(
            "rnn_tanh", x, weights, h0, None, lengths, num_layers=2, bidirectional=True, batch_first=False,
            dropout=0.0, training=False, allow_tf32=False, backend=backend)

    results = {}
    for backend in ("triton", "torch"):
        compiled = torch.compile(stack(backend), fullgraph=True, backend=counting_backend(backend))
        out, h_n, _ = compiled(x, weights, h0, lengths)
        results[backend] = (out, h_n, *torch.autograd.grad((out.square().sum(), h_n.sum()), [x, h0, *weights]))
    assert counts == {"triton": (2, 0), "torch": (0, 4)}
    out, h_n, _ = stack("torch")(x, weights, h0, lengths)
    want = (out, h_n, *torch.autograd.grad((out.square().sum(), h_n.sum()), [x, h0, *weights]))
    for got in results.values():
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOLERANCES[torch.float32])


def test_bidirectional_elman_dropout_draws_torch_nns_masks(monkeypatch):
    """Training with dropout between fused bidirectional layers: one seed gives the plain path's masks, which
    on CPU are torch.nn's (on CUDA torch.nn draws cuDNN's own)."""
    needs_kernels("rnn_relu")
    calls = spy_on_elman(monkeypatch)
    torch.manual_seed(21)
    module = torch.nn.RNN(I, H, num_layers=3, nonlinearity="relu", dropout=0.5, bidirectional=True,
                          batch_first=True).to(DEVICE)
    x = torch.randn(B, T, I, device=DEVICE)
    results = {}
    with torch.no_grad():
        for backend in ("triton", "torch"):
            torch.manual_seed(22)
            results[backend] = run_layers("rnn_relu", x, module._flat_weights, None, None, None, num_layers=3,
                                          bidirectional=True, batch_first=True, dropout=0.5, training=True,
                                          allow_tf32=False, backend=backend)[:2]
        torch.manual_seed(22)
        want, want_h = module(x)
    assert calls == {"bidirectional_fwd": 3}
    references = [results["torch"]] + ([(want, want_h)] if x.device.type == "cpu" else [])
    for reference in references:
        for got, expected in zip(results["triton"], reference):
            torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])
