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


def heads(launches):
    """HAS_HEAD of each recorded layer launch (conftest's layer_launches; None for the backward's)."""
    return [kw.get("HAS_HEAD") for kw in launches]


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
    else:
        assert ours[1] is stock[1], (ours, stock)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_under_cpu_autocast_with_a_float64_fc_raises_as_stock(num_layers, layer_launches):
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
    assert True not in heads(layer_launches)


@pytest.mark.parametrize("fc_w_shape, fc_b_shape, message", [((2, 17), (2,), "fc_w must have shape"),
                                                             ((16, 2), (2,), "fc_w must have shape"),
                                                             ((2, 16), (3,), "fc_b must have shape")])
def test_layer_refuses_a_misshapen_head_before_any_launch(fc_w_shape, fc_b_shape, message, layer_launches):
    """recurrence.layer's head: a ValueError naming the shapes, not a kernel reading fc_w with stride H."""
    from fused_rnn import recurrence
    g = torch.Generator().manual_seed(6)
    H = 16
    x, w_ih, w_hh = (torch.randn(*s, generator=g).to(DEVICE) for s in ((3, 4, 5), (3 * H, 5), (3 * H, H)))
    head = (torch.randn(*fc_w_shape, generator=g).to(DEVICE), torch.randn(*fc_b_shape, generator=g).to(DEVICE))
    with pytest.raises(ValueError, match=message):
        recurrence.layer("gru", x, w_ih, w_hh, None, None, None, None, None, reverse=False, allow_tf32=False,
                         backend="triton", store_out=False, head=head)
    assert heads(layer_launches) == []


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_activation_checkpointing_without_reentry(cell, num_layers):
    """torch.utils.checkpoint(model, x, use_reentrant=False) (torch's recommended mode) unpacks each saved
    tensor once; backward read ctx.saved_tensors twice with a head (the recurrent layer's, then fc's) and
    the second read raised CheckpointError. Gradients as torch.nn's."""
    from torch.utils.checkpoint import checkpoint
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=num_layers, seed=22)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(23)).to(DEVICE)
    y = checkpoint(model, x, use_reentrant=False)
    y_ref = stock_forward(stock_rnn, stock_fc, x)[0]
    torch.testing.assert_close(y, y_ref, **FP32)
    params = list(model.parameters())
    params_ref = list(stock_rnn.parameters()) + list(stock_fc.parameters())
    for got, want in zip(torch.autograd.grad(y.square().sum(), params),
                         torch.autograd.grad(y_ref.square().sum(), params_ref), strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_exported_model_under_activation_checkpointing(cell):
    """torch.export's module (fused_rnn::recurrence with fc's weights, run eagerly with the op's autograd) under
    torch.utils.checkpoint(use_reentrant=False): the op's backward read ctx.saved_tensors before backward read
    them again, and the second read raised CheckpointError. Gradients as torch.nn's."""
    from torch.utils.checkpoint import checkpoint
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=2, backend="auto", seed=24)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(25))
    exported = torch.export.export(model, (x,)).module()
    xr, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = checkpoint(exported, xr, use_reentrant=False)
    y_ref = stock_forward(stock_rnn, stock_fc, x_ref)[0]
    torch.testing.assert_close(y, y_ref, **FP32)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(xr.grad, x_ref.grad, **FP32)


# --- probes that found nothing: what a user of the fused head can do, against torch.nn ------------------------


def hidden_and_cell(cell, hidden):
    return hidden if cell == "lstm" else (hidden, None)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("num_layers, fc_bias", [(1, False), (3, True)])
def test_losses_on_y_h_n_and_c_n_together_match_torch_nn(cell, num_layers, fc_bias, layer_launches):
    """return_hidden=True with a loss on y, h_n (and c_n) at once: the sweep starts from dh_n + dy·fc_W,
    counted once; h0 (and c0) given and trained, ragged lengths, a padded H = 21, B = 5."""
    I, H, O, B, T = 4, 21, 5, 5, 6
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=num_layers, fc_bias=fc_bias, seed=7)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, T, I, generator=g).to(DEVICE)
    states = [torch.randn(num_layers, B, H, generator=g).to(DEVICE) for _ in range(2 if cell == "lstm" else 1)]
    lengths = torch.tensor([6, 2, 5, 1, 6])
    ours_in = [t.clone().requires_grad_() for t in (x, *states)]
    stock_in = [t.clone().requires_grad_() for t in (x, *states)]
    hx = tuple(ours_in[1:]) if cell == "lstm" else ours_in[1]
    y, hidden = model(ours_in[0], hx, lengths=lengths, return_hidden=True)
    y_ref, hidden_ref = stock_forward(stock_rnn, stock_fc, stock_in[0],
                                      tuple(stock_in[1:]) if cell == "lstm" else stock_in[1], lengths)
    assert heads(layer_launches)[num_layers - 1] is True
    torch.testing.assert_close(y, y_ref, **FP32)
    weights = [torch.randn(y.shape, generator=g)] + [torch.randn(num_layers, B, H, generator=g) for _ in states]

    def loss(y, hidden):
        h_n, c_n = hidden_and_cell(cell, hidden)
        return sum((t * w.to(DEVICE)).sum() for t, w in zip((y, h_n, c_n), weights) if t is not None)
    grads = torch.autograd.grad(loss(y, hidden), ours_in + list(model.parameters()))
    grads_ref = torch.autograd.grad(loss(y_ref, hidden_ref),
                                    stock_in + list(stock_rnn.parameters()) + list(stock_fc.parameters()))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("trained", ["fc.weight", "fc.bias"])
def test_only_part_of_fc_trains_with_the_rnn_and_x_frozen(cell, compiled, trained):
    """backward's early return (no recurrent input needs a gradient) and the head's needs_input_grad places
    (10 and 11 in the Function, 12 and 13 in the op): only the trained half of fc gets a gradient, as in
    torch.nn, eagerly on the kernels and compiled (the op, backend "auto")."""
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, backend="auto" if compiled else "triton", seed=9)
    for module in (model, stock_rnn, stock_fc):
        module.requires_grad_(False)
    model.get_parameter(trained).requires_grad_(True)
    stock_fc.get_parameter(trained.removeprefix("fc.")).requires_grad_(True)
    forward = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(10)).to(DEVICE)
    y, hidden = forward(x, return_hidden=True)
    y_ref, hidden_ref = stock_forward(stock_rnn, stock_fc, x)
    (y.square().sum() + hidden_and_cell(cell, hidden)[0].sum()).backward()
    (y_ref.square().sum() + hidden_and_cell(cell, hidden_ref)[0].sum()).backward()
    for name, param in model.named_parameters():
        want = stock_fc.get_parameter(name.removeprefix("fc.")).grad if name.startswith("fc.") else None
        assert (param.grad is None) == (want is None), name
        if want is not None:
            torch.testing.assert_close(param.grad, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("O, fused", [(1, True), (256, True), (257, False)])
def test_output_sizes_at_the_head_limit(cell, O, fused, layer_launches):
    """O = 256 is the largest head the kernels fuse (block 256); 257 pads to 512 and runs fc after the layer.
    y and the gradients of fc and W_hh as torch.nn's either way, at a padded H = 21 and B = 5."""
    I, H, B, T = 3, 21, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, seed=O)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(11)).to(DEVICE)
    y, y_ref = model(x), stock_forward(stock_rnn, stock_fc, x)[0]
    assert heads(layer_launches)[0] is fused
    torch.testing.assert_close(y, y_ref, **FP32)
    params = [model.fc.weight, model.fc.bias, model.rnn.weight_hh_l0]
    params_ref = [stock_fc.weight, stock_fc.bias, stock_rnn.weight_hh_l0]
    grads, grads_ref = torch.autograd.grad(y.tanh().sum(), params), torch.autograd.grad(y_ref.tanh().sum(), params_ref)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_transposed_and_shared_fc_weight(cell, layer_launches):
    """fc.weight a transposed view (not contiguous), shared with another Linear used in the same loss:
    y as torch.nn's, the shared weight's gradient the sum of both uses."""
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, seed=12)
    g = torch.Generator().manual_seed(13)
    weight_t = torch.randn(H, O, generator=g).to(DEVICE)
    model.fc.weight = nn.Parameter(weight_t.T)
    stock_fc.weight = nn.Parameter(weight_t.T.contiguous())
    other, other_ref = nn.Linear(H, O, bias=False), nn.Linear(H, O, bias=False)
    other.weight, other_ref.weight = model.fc.weight, stock_fc.weight
    x, z = torch.randn(B, T, I, generator=g).to(DEVICE), torch.randn(4, H, generator=g).to(DEVICE)
    y, y_ref = model(x), stock_forward(stock_rnn, stock_fc, x)[0]
    assert not model.fc.weight.is_contiguous() and heads(layer_launches)[0] is True
    torch.testing.assert_close(y, y_ref, **FP32)
    (y.sin().sum() + other(z).square().sum()).backward()
    (y_ref.sin().sum() + other_ref(z).square().sum()).backward()
    torch.testing.assert_close(model.fc.weight.grad, stock_fc.weight.grad, **FP32)
    torch.testing.assert_close(model.rnn.weight_ih_l0.grad, stock_rnn.weight_ih_l0.grad, **FP32)


@pytest.mark.parametrize("cell, fused", [("gru", False), ("lstm", True)])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_cpu_autocast_fuses_the_lstm_head_only(cell, fused, num_layers, layer_launches):
    """CPU autocast (bf16): the LSTM's state is autocast's bf16 and fc's too, so the head is fused; the
    GRU's state stays float32 while fc runs in bf16, so fc runs after it. y's and h_n's dtypes as
    torch.nn's, values within bf16's tolerance, gradients of float32 parameters in float32."""
    I, H, O, B, T = 3, 16, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=num_layers, seed=14)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(15)).to(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y, hidden = model(x, return_hidden=True)
        y_ref, hidden_ref = stock_forward(stock_rnn, stock_fc, x)
    assert heads(layer_launches)[num_layers - 1] is fused
    h_n, h_ref = hidden_and_cell(cell, hidden)[0], hidden_and_cell(cell, hidden_ref)[0]
    assert (y.dtype, h_n.dtype) == (y_ref.dtype, h_ref.dtype)
    torch.testing.assert_close(y.float(), y_ref.float(), **BF16)
    y.float().sum().backward()
    y_ref.float().sum().backward()
    assert model.fc.weight.grad.dtype == torch.float32
    torch.testing.assert_close(model.fc.weight.grad, stock_fc.weight.grad, **BF16)
    torch.testing.assert_close(model.rnn.weight_hh_l0.grad, stock_rnn.weight_hh_l0.grad, **BF16)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradient_of_fc_weights_gradient_reaches_the_rnn(cell):
    """create_graph=True on fc.weight's gradient (dyᵀ h_n), then its norm differentiated by every weight:
    the second-order terms through h_n (the recomputed plain loop), as torch.nn's."""
    I, H, O, B, T = 3, 21, 3, 5, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=2, seed=16)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(17)).to(DEVICE)
    results = []
    for forward, fc, params in ((model, model.fc, list(model.parameters())),
                                (lambda t: stock_forward(stock_rnn, stock_fc, t)[0], stock_fc,
                                 list(stock_rnn.parameters()) + list(stock_fc.parameters()))):
        (dfc_w,) = torch.autograd.grad(forward(x).tanh().sum(), [fc.weight], create_graph=True)
        results.append(torch.autograd.grad(dfc_w.square().sum(), params))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_batched_gradients_through_the_head(cell):
    """autograd.grad(..., is_grads_batched=True) (the Jacobian of y by fc.weight and W_hh): the batched dy
    takes the plain-math backward, with the head's products, as torch.nn's."""
    I, H, O, B, T = 3, 16, 2, 3, 4
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, seed=18)
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(19)).to(DEVICE)
    basis = torch.eye(B * O).reshape(B * O, B, O).to(DEVICE)
    jac = torch.autograd.grad(model(x), [model.fc.weight, model.rnn.weight_hh_l0], basis, is_grads_batched=True)
    jac_ref = torch.autograd.grad(stock_forward(stock_rnn, stock_fc, x)[0], [stock_fc.weight, stock_rnn.weight_hh_l0],
                                  basis, is_grads_batched=True)
    for got, want in zip(jac, jac_ref):
        torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_compiled_with_dynamic_shapes_h0_lengths_and_hidden(cell):
    """torch.compile(fullgraph=True, dynamic=True) on CPU ("auto": the op with fc's weights, the plain
    contract): batch and time sizes changing between calls, h0 given, ragged lengths, a loss on y and h_n;
    y and the gradients as torch.nn's."""
    I, H, O, L = 3, 21, 3, 2
    model, stock_rnn, stock_fc = stock_pair(cell, I, H, O, num_layers=L, backend="auto", seed=20)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=True)
    g = torch.Generator().manual_seed(21)
    for B, T in ((5, 6), (17, 3)):
        x = torch.randn(B, T, I, generator=g)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        states = [torch.randn(L, B, H, generator=g) for _ in range(2 if cell == "lstm" else 1)]
        hx = tuple(states) if cell == "lstm" else states[0]
        y, hidden = compiled(x, hx, lengths=lengths, return_hidden=True)
        y_ref, hidden_ref = stock_forward(stock_rnn, stock_fc, x, hx, lengths)
        torch.testing.assert_close(y, y_ref, **FP32)
        params = list(model.parameters())
        params_ref = list(stock_rnn.parameters()) + list(stock_fc.parameters())
        grads = torch.autograd.grad(y.square().sum() + hidden_and_cell(cell, hidden)[0].sin().sum(), params)
        grads_ref = torch.autograd.grad(y_ref.square().sum() + hidden_and_cell(cell, hidden_ref)[0].sin().sum(),
                                        params_ref)
        for got, want in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(got, want, **FP32)


def test_bidirectional_op_under_activation_checkpointing():
    """fused_rnn::bidirectional_recurrence's backward under torch.utils.checkpoint(use_reentrant=False), which
    refuses a second unpack of ctx.saved_tensors (its backward read them to ask whether the states were
    saved, then again): gradients as without checkpointing."""
    from torch.utils.checkpoint import checkpoint

    import fused_rnn.recurrence  # noqa: F401  (registers the op)
    g = torch.Generator().manual_seed(21)
    B, T, H = 4, 5, 6
    xp, w_hh, b_hh, h0 = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
                          for s in ((B, T, 2 * H), (2, H, H), (2, H), (2, B, H)))
    lengths = torch.tensor([5, 2, 4, 1])

    def loss(xp, w_hh, b_hh, h0):
        out, h_n, _, _ = torch.ops.fused_rnn.bidirectional_recurrence("rnn_tanh", xp, w_hh, b_hh, h0, lengths,
                                                                       False, True, True)
        return out.sin().sum() + h_n.square().sum()
    inputs = (xp, w_hh, b_hh, h0)
    grads = torch.autograd.grad(checkpoint(loss, *inputs, use_reentrant=False), inputs)
    want = torch.autograd.grad(loss(*inputs), inputs)
    for got, expected in zip(grads, want):
        torch.testing.assert_close(got, expected)
