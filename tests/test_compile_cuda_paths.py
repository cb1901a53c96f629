"""torch.compile paths that CUDA takes and CPU runs never reach, brought to CPU with test doubles.

Found by tracing the CUDA path on fake CUDA tensors with torch 2.11 (the GPU machines' torch), forward
and backward (/work/notes/fakecuda_repros/); each test names the CUDA behaviour its double stands for.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import fused_rnn
from fused_rnn import recurrence
from helpers import TOL


@pytest.fixture
def elman_ops_save_no_aux(monkeypatch):
    """fused_rnn::recurrence saving what the Elman kernels save: hs and no aux (the layer contract's "aux
    ... or None"; their backward reads the states alone), as on CUDA. Off CUDA the op runs the plain
    twin, which always saves an aux (xp), so CPU runs never met an empty one. The double keeps the plain
    twin's aux aside for its own backward, which reads xp (last in, first out: the tracers' fake
    forwards run before their backwards, and a real forward before its backward). Returns the real
    tensors its backward read back."""
    kept, read_back = [], []
    forward, backward = recurrence.recurrence_torch_op, recurrence.recurrence_bwd_torch_op

    def forward_without_aux(cell, xp, *args):
        out, h_n, c_n, hs, aux = forward(cell, xp, *args)
        if cell.startswith("rnn_") and hs.dim() == 3:
            kept.append(aux)
            aux = xp.new_empty(0, dtype=aux.dtype)      # recurrence._fill_forward's stand-in for None
        return out, h_n, c_n, hs, aux

    def backward_with_kept_aux(cell, hs, aux, *args):
        if aux is None or aux.dim() == 1:    # backward hands the op None for an empty aux (recurrence._present)
            aux = kept.pop()
            if not isinstance(aux, FakeTensor):
                read_back.append(aux)
        return backward(cell, hs, aux, *args)

    monkeypatch.setattr(recurrence, "recurrence_torch_op", forward_without_aux)
    monkeypatch.setattr(recurrence, "recurrence_bwd_torch_op", backward_with_kept_aux)
    return read_back


def elman_models():
    torch.manual_seed(5)
    return {"RNN tanh": (fused_rnn.RNN(4, 20, batch_first=True), {}),
            "SimpleRNN relu, 2 layers, lengths": (fused_rnn.SimpleRNN(4, 20, 2, num_layers=2, nonlinearity="relu"),
                                                  {"lengths": torch.tensor([7, 2, 5])})}


@pytest.mark.parametrize("name", list(elman_models()))
def test_compiled_elman_layer_trains_without_an_aux(elman_ops_save_no_aux, name):
    """Seen on fake CUDA (torch 2.11): training a compiled fused_rnn.RNN, or a SimpleRNN with an Elman
    layer below its head, raised "fused_rnn::recurrence was called with store_saved=False and cannot be
    differentiated": the op's backward took an empty aux for store_saved=False, and the Elman kernels save
    no aux. Loss and gradients against the eager module (the stock path on CPU, same weights)."""
    torch._dynamo.reset()
    model, kwargs = elman_models()[name]
    x = torch.randn(3, 7, 4, requires_grad=True)

    def loss(fn):
        out = fn(x, **kwargs)
        return (out[0] if isinstance(out, tuple) else out).square().sum()

    leaves = [*model.parameters(), x]
    compiled_loss = loss(torch.compile(model, fullgraph=True, backend="aot_eager"))
    got = torch.autograd.grad(compiled_loss, leaves)
    assert elman_ops_save_no_aux, "the compiled backward never met the Elman kernels' empty aux"
    want_loss = loss(model)
    want = torch.autograd.grad(want_loss, leaves)
    torch.testing.assert_close(compiled_loss, want_loss, **TOL[torch.float32])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_recurrence_op_without_saved_states_refuses_a_backward(cell):
    """The guard the fix above moved from aux to hs still refuses what it is for: store_saved=False
    (inference) saves no states, so there is nothing to differentiate."""
    gates = {"rnn_tanh": 1, "gru": 3, "lstm": 4}[cell]
    xp = torch.randn(3, 5, gates * 6, requires_grad=True)
    w_hh = torch.randn(gates * 6, 6)
    out = torch.ops.fused_rnn.recurrence(cell, xp, w_hh, None, None, None, None, False, False, True, False, False)
    with pytest.raises(RuntimeError, match="store_saved=False and cannot be differentiated"):
        out[0].sum().backward()


# SimpleRNN's one fused Elman layer (fused_rnn.rnn_linear) where the kernel declines the call on CUDA: padded
# sizes over AUTO_MAX_BLOCK (H = 300 is over MAX_BLOCK too) and float64. Seen on fake CUDA (torch 2.11):
# compiled with lengths, rnn_linear traced the stock call, which packs them ("Attempted to call function
# marked as skipped ... pack_padded_sequence" under fullgraph); exported (non-strict, torch.export's
# default) or called on fake tensors, it took fused_rnn::rnn_linear, whose body on CUDA is the kernel
# (float64: "KeyError: torch.float64"; H = 300: the kernel recorded for a size it cannot launch).
@pytest.mark.gpu
@pytest.mark.parametrize("hidden, dtype", [(300, torch.float32), (20, torch.float64)])
def test_simple_rnn_declined_by_the_kernel_compiles_and_exports_on_cuda(hidden, dtype):
    torch._dynamo.reset()
    torch.manual_seed(7)
    model = fused_rnn.SimpleRNN(5, hidden, 2).to("cuda", dtype)
    x = torch.randn(3, 7, 5, device="cuda", dtype=dtype)
    lengths = torch.tensor([7, 2, 5], device="cuda")
    with torch.backends.cudnn.flags(enabled=False):     # cuDNN may use TF32; ATen's own loop is fp32 throughout
        want = model(x, lengths=lengths)                # eager: the stock path ("auto" declined)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, lengths=lengths), want, **tol)
    program = torch.export.export(model, (x,), {"lengths": lengths})
    assert not any("rnn_linear" in str(n.target) for n in program.graph.nodes)
    torch.testing.assert_close(program.module()(x, lengths=lengths), want, **tol)
