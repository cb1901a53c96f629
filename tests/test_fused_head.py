"""The head fused after the GRU's and LSTM's time loop (issue 14: "the fused head on the last layer").

SimpleRNN(cell="gru" | "lstm") with one direction runs its Linear on h_n inside the last layer's
forward kernel (kernels/rnn_linear._fused_head), from the fp32 state still in registers, instead of
a separate F.linear. Truth: the float64 loop oracle (tests/oracles.py) for the kernels, torch.nn with
the same weights for the module; kernel outputs NaN-poisoned (conftest). Tolerances as in
test_kernel_gru.py (fp32 on the interpreter: summation order and exp; bf16 there multiplies in fp32,
rounding the state and y once).
"""

import pytest
import torch
from torch import nn

import fused_rnn
from conftest import DEVICE
from fused_rnn import recurrence
from fused_rnn.kernels import elman as elman_kernels, gru as gru_kernels, lstm as lstm_kernels, rnn_linear
from oracles import GATES, recurrence_loop

KERNELS = {"gru": gru_kernels, "lstm": lstm_kernels}
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def f64(t):
    return None if t is None else t.detach().to("cpu", torch.float64)


def layer_inputs(cell, B, T, H, O, *, dtype, seed, fc_bias=True):
    """xp, w_hh, b_hh, h0, c0, fc_w, fc_b with torch.nn's init scales (U(-1/√H, 1/√H))."""
    g = torch.Generator().manual_seed(seed)
    G, bound = GATES[cell], H ** -0.5

    def uniform(*shape):
        return (torch.rand(*shape, generator=g) * 2 - 1) * bound

    tensors = (torch.randn(B, T, G * H, generator=g), uniform(G * H, H), uniform(G * H),
               torch.randn(B, H, generator=g) * 0.5, torch.randn(B, H, generator=g) * 0.5 if cell == "lstm" else None,
               uniform(O, H), uniform(O) if fc_bias else None)
    return tuple(t.to(DEVICE, dtype) if t is not None else None for t in tensors)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H, O", [(20, 1), (32, 3), (16, 17)])
@pytest.mark.parametrize("reverse, ragged, fc_bias", [(False, False, True), (False, True, True),
                                                      (True, True, False)])
def test_kernel_head_is_fc_of_the_final_state(cell, dtype, H, O, reverse, ragged, fc_bias):
    """y = fc_W h_n + fc_b from the kernel, h_n and c_n unchanged by the head, against the oracle."""
    B, T = 19, 7   # two programs of BLOCK_B = 16, the second partly past B
    xp, w_hh, b_hh, h0, c0, fc_w, fc_b = layer_inputs(cell, B, T, H, O, dtype=dtype, seed=H * O + reverse,
                                                      fc_bias=fc_bias)
    lengths = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(O))
        lengths[0], lengths[-1] = T, 1
    y, h_n, c_n, _, _ = KERNELS[cell].recurrence_fwd(
        cell, xp, w_hh, b_hh, h0, c0, None if lengths is None else lengths.to(DEVICE), reverse=reverse,
        allow_tf32=False, store_out=False, head=(fc_w, fc_b))
    _, h_ref, c_ref = recurrence_loop(cell, f64(xp), f64(w_hh), f64(b_hh), f64(h0), f64(c0), lengths,
                                      reverse=reverse)
    y_ref = h_ref @ f64(fc_w).T + (f64(fc_b) if fc_b is not None else 0)
    assert y.shape == (B, O) and y.dtype == dtype
    torch.testing.assert_close(f64(y), y_ref, **TOL[dtype])
    torch.testing.assert_close(f64(h_n), h_ref, **TOL[dtype])
    if cell == "lstm":
        torch.testing.assert_close(f64(c_n), c_ref, **TOL[dtype])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_kernel_head_with_no_step_is_fc_of_h0(cell):
    """T = 0: no launch (nothing to read), and y is fc of h0, as h_n is h0."""
    xp, w_hh, b_hh, h0, c0, fc_w, fc_b = layer_inputs(cell, 5, 0, 16, 2, dtype=torch.float32, seed=3)
    y, h_n, _, _, _ = KERNELS[cell].recurrence_fwd(cell, xp, w_hh, b_hh, h0, c0, None, reverse=False,
                                                   allow_tf32=False, store_out=False, head=(fc_w, fc_b))
    torch.testing.assert_close(f64(y), f64(h0) @ f64(fc_w).T + f64(fc_b))
    torch.testing.assert_close(h_n, h0)


def test_a_head_is_refused_with_out_and_by_the_elman_layer_kernel():
    xp, w_hh, b_hh, h0, c0, fc_w, fc_b = layer_inputs("gru", 3, 2, 16, 2, dtype=torch.float32, seed=4)
    with pytest.raises(ValueError, match="store_out must be False"):
        gru_kernels.recurrence_fwd("gru", xp, w_hh, b_hh, h0, None, None, reverse=False, allow_tf32=False,
                                   store_out=True, head=(fc_w, fc_b))
    with pytest.raises(ValueError, match="rnn_linear"):
        elman_kernels.recurrence_fwd("rnn_tanh", xp[..., :16], w_hh[:16], b_hh[:16], h0, None, None,
                                     reverse=False, allow_tf32=False, store_out=False, head=(fc_w, fc_b))


def test_head_limits_follow_shared_memory():
    """fuses_head: the kernels take a head where it fits (rnn_linear.head_unsupported_reason); the plain
    path takes any; the Elman layer kernel none (rnn_linear is that layer with its head)."""
    assert recurrence.fuses_head("gru", "triton", torch.bfloat16, 128, 10, True)
    assert recurrence.fuses_head("lstm", "triton", torch.bfloat16, 128, 256, True)
    assert not recurrence.fuses_head("lstm", "triton", torch.bfloat16, 128, 257, True)   # block 512 > 256
    assert not recurrence.fuses_head("rnn_tanh", "triton", torch.float32, 32, 1, True)
    assert recurrence.fuses_head("lstm", "torch", torch.float32, 128, 10_000, True)
    # fp32 GRU with TF32 at H = 128: W_hh's three blocks (192 KiB) and the staged tiles leave no room.
    reason = rnn_linear.head_unsupported_reason(gru_kernels, "gru", torch.float32, 128, 16, True)
    assert reason is not None and "232448" in reason
    for module, cell in ((gru_kernels, "gru"), (lstm_kernels, "lstm")):
        for H, O in ((64, 1), (128, 100)):
            need = module.smem_bytes(torch.bfloat16, H, True, block_o=rnn_linear.block(O))
            assert need == module.smem_bytes(torch.bfloat16, H, True) + 2 * H * rnn_linear.block(O)


def stock_pair(cell, I, H, O, *, num_layers, dtype, seed):
    """(SimpleRNN on the kernels, torch.nn's RNN and Linear with the same weights)."""
    torch.manual_seed(seed)
    model = fused_rnn.SimpleRNN(I, H, O, cell=cell, num_layers=num_layers, backend="triton").to(DEVICE, dtype)
    stock_rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](I, H, num_layers=num_layers, batch_first=True)
    stock_fc = nn.Linear(H, O)
    stock_rnn.load_state_dict(model.rnn.state_dict())
    stock_fc.load_state_dict(model.fc.state_dict())
    return model, stock_rnn.to(DEVICE, dtype), stock_fc.to(DEVICE, dtype)


def stock_forward(stock_rnn, stock_fc, x, lengths):
    """The user model: fc on each sequence's last valid output."""
    out, _ = stock_rnn(x)
    last = torch.tensor([x.shape[1] - 1] * x.shape[0]) if lengths is None else lengths - 1
    return stock_fc(out[torch.arange(x.shape[0]), last])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("ragged", [False, True])
def test_module_fuses_the_head_and_matches_torch_nn(cell, num_layers, ragged, layer_launches):
    """The last layer's launch carries the head; y and every gradient (fc's included) as torch.nn's."""
    I, H, O, B, T = 5, 20, 3, 19, 6
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=num_layers, dtype=torch.float32,
                                            seed=num_layers)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(B, T, I, generator=g).to(DEVICE)
    lengths = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
    x_stock = x.clone().requires_grad_()
    x.requires_grad_()
    y = model(x, lengths=lengths)
    heads = [kw["HAS_HEAD"] for kw in layer_launches if "HAS_HEAD" in kw]
    assert heads == [False] * (num_layers - 1) + [True]
    y_ref = stock_forward(stock_rnn, stock_fc, x_stock, lengths)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    dy = torch.randn(B, O, generator=g).to(DEVICE)
    grads = torch.autograd.grad(y, [x, *model.rnn.parameters(), *model.fc.parameters()], dy)
    grads_ref = torch.autograd.grad(y_ref, [x_stock, *stock_rnn.parameters(), *stock_fc.parameters()], dy)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_module_head_in_bf16(cell):
    I, H, O, B, T = 6, 32, 4, 9, 5
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=1, dtype=torch.bfloat16, seed=5)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(2)).to(DEVICE, torch.bfloat16)
    with torch.no_grad():
        y = model(x)
        # The reference in fp32 from the same bf16 weights: bf16 rounds each of stock's steps, the
        # kernel its state and y once.
        y_ref = stock_forward(stock_rnn.float(), stock_fc.float(), x.float(), None)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref, **TOL[torch.bfloat16])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_head_gradients_when_only_fc_trains_or_only_h_n_is_used(cell):
    """A frozen recurrent layer (fc alone trains) and a loss on h_n alone (fc gets no gradient), as torch.nn."""
    I, H, O, B, T = 4, 16, 2, 7, 5
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=1, dtype=torch.float32, seed=8)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    model.rnn.requires_grad_(False)
    stock_rnn.requires_grad_(False)
    y = model(x)
    grads = torch.autograd.grad(y.square().sum(), list(model.fc.parameters()))
    y_ref = stock_forward(stock_rnn, stock_fc, x, None)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(stock_fc.parameters()))
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)

    model.rnn.requires_grad_(True)
    y, hidden = model(x, return_hidden=True)
    h_n = hidden[0] if cell == "lstm" else hidden
    w_hh = model.rnn.weight_hh_l0
    dw_hh, dfc_w = torch.autograd.grad(h_n.sum(), [w_hh, model.fc.weight], allow_unused=True)
    assert dfc_w is None and dw_hh is not None and torch.isfinite(dw_hh).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_head_double_backward_matches_torch_nn(cell):
    """create_graph=True through the fused head: the gradient of a gradient norm, as torch.nn's."""
    I, H, O, B, T = 3, 16, 2, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=1, dtype=torch.float32, seed=9)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    results = []
    for forward, fc in ((lambda t: model(t), model.fc), (lambda t: stock_forward(stock_rnn, stock_fc, t, None),
                                                         stock_fc)):
        xr = x.clone().requires_grad_()
        (dx,) = torch.autograd.grad(forward(xr).sin().sum(), [xr], create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), [fc.weight]))
    torch.testing.assert_close(results[0], results[1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_head_with_non_finite_inputs_behaves_as_stock(cell):
    """An infinite input and a NaN in fc's weight reach y as they do through torch.nn."""
    I, H, O, B, T = 3, 16, 3, 6, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=1, dtype=torch.float32, seed=10)
    with torch.no_grad():
        model.fc.weight[1, 3] = stock_fc.weight[1, 3] = float("nan")
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    x[2, 1, 0] = float("inf")
    x[4, 3, 2] = -float("inf")
    with torch.no_grad():
        y, y_ref = model(x), stock_forward(stock_rnn, stock_fc, x, None)
    assert torch.isnan(y_ref).any() and torch.isfinite(y_ref).any()   # the case has teeth
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4, equal_nan=True)


def test_heads_the_kernels_do_not_take_run_fc_after_the_layer(layer_launches):
    """O = 300 pads to 512 outputs, past what the head holds: the layer runs without it, fc after."""
    model, stock_rnn, stock_fc = stock_pair("gru", 3, 16, 300, num_layers=1, dtype=torch.float32, seed=12)
    x = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    with torch.no_grad():
        y, y_ref = model(x), stock_forward(stock_rnn, stock_fc, x, None)
    assert [kw["HAS_HEAD"] for kw in layer_launches] == [False]
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)


def test_fc_in_another_dtype_than_the_layer_is_not_fused(layer_launches):
    """fc in float64 after a float32 GRU: F.linear refuses the mix in the user model, and so does ours
    (the kernel would have computed it silently in the layer's dtype)."""
    model = fused_rnn.SimpleRNN(3, 16, 2, cell="gru", backend="triton").to(DEVICE)
    model.fc.double()
    x = torch.randn(4, 3, 3).to(DEVICE)
    with pytest.raises(RuntimeError, match="dtype"):
        model(x)
    assert [kw["HAS_HEAD"] for kw in layer_launches] == [False]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_registered_op_with_a_head(cell):
    """fused_rnn::recurrence with fc_w, fc_b (off CUDA: the plain contract, fc on h_n) against the oracle,
    its gradients against autograd on the float64 oracle, and opcheck (fakes, schema, autograd)."""
    B, T, H, O = 5, 4, 6, 3
    g = torch.Generator().manual_seed(13)
    G = GATES[cell]
    xp, w_hh, b_hh, h0 = (torch.randn(*s, generator=g, dtype=torch.float64) * 0.5
                          for s in ((B, T, G * H), (G * H, H), (G * H,), (B, H)))
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64) if cell == "lstm" else None
    fc_w, fc_b = torch.randn(O, H, generator=g, dtype=torch.float64), torch.randn(O, generator=g, dtype=torch.float64)
    lengths = torch.tensor([4, 1, 3, 2, 4])
    inputs = [t.requires_grad_() for t in (xp, w_hh, b_hh, h0, fc_w, fc_b)]
    y, h_n, _, _, _ = torch.ops.fused_rnn.recurrence(cell, xp, w_hh, b_hh, h0, c0, lengths, False, False, False,
                                                     True, False, fc_w, fc_b)
    _, h_ref, _ = recurrence_loop(cell, xp, w_hh, b_hh, h0, c0, lengths, False)
    y_ref = h_ref @ fc_w.T + fc_b
    torch.testing.assert_close(y, y_ref, atol=1e-11, rtol=1e-9)
    torch.testing.assert_close(h_n, h_ref, atol=1e-11, rtol=1e-9)
    dy, dh = torch.randn(B, O, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((y * dy).sum() + (h_n * dh).sum(), inputs)
    grads_ref = torch.autograd.grad((y_ref * dy).sum() + (h_ref * dh).sum(), inputs)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    opcheck_args = (cell, xp, w_hh, b_hh, h0, c0, lengths, False, False, False, True, False, fc_w, fc_b)
    torch.library.opcheck(torch.ops.fused_rnn.recurrence.default, opcheck_args)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_compile_fullgraph_with_the_head_matches_eager(cell):
    """torch.compile(fullgraph=True) of the two-layer model: one fused_rnn::recurrence per layer, the last
    with fc's weights (no separate linear on h_n); y and fc's gradients as the stock model's."""
    torch.manual_seed(14)
    model = fused_rnn.SimpleRNN(3, 8, 2, cell=cell, num_layers=2)
    x = torch.randn(4, 5, 3)
    graphs = []

    def count(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    compiled = torch.compile(model, fullgraph=True, backend=count)
    y = compiled(x)
    ops = [n for gm in graphs for n in gm.graph.nodes if n.target is torch.ops.fused_rnn.recurrence.default]
    fc_weights = [op.args[12] if len(op.args) > 12 else op.kwargs.get("fc_w") for op in ops]
    assert len(ops) == 2 and fc_weights[0] is None and fc_weights[1] is not None, [op.format_node() for op in ops]
    y_ref = model.fc(model.rnn(x)[0][:, -1])   # "auto" on CPU eager: the submodules
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    grads = torch.autograd.grad(y.sum(), list(model.fc.parameters()))
    grads_ref = torch.autograd.grad(y_ref.sum(), list(model.fc.parameters()))
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_frozen_layer_under_a_training_head_saves_no_states(cell, layer_launches):
    """A linear probe (rnn frozen, x without grad, fc trains): one inference launch (no saved states, no
    backward sweep), fc on h_n; fc's gradients as torch.nn's."""
    model, stock_rnn, stock_fc = stock_pair(cell, 4, 16, 3, num_layers=1, dtype=torch.float32, seed=15)
    model.rnn.requires_grad_(False)
    stock_rnn.requires_grad_(False)
    x = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    y = model(x)
    grads = torch.autograd.grad(y.square().sum(), list(model.fc.parameters()))
    assert [(kw.get("STORE_SAVED"), kw.get("HAS_HEAD")) for kw in layer_launches] == [(False, False)]
    y_ref = stock_forward(stock_rnn, stock_fc, x, None)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    grads_ref = torch.autograd.grad(y_ref.square().sum(), list(stock_fc.parameters()))
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
