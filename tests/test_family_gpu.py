"""The family's kernels compiled on a GPU, against torch.nn in float64 on the CPU (marked ``gpu``).

Everything here also runs interpreted on CPU in test_kernel_*.py and
test_rnn_family.py at small sizes; these are the shapes people run (H = 128 on
wgmma, T in the hundreds, ragged lengths, two layers, both directions), where
only a GPU compiles the kernels. The reference is the same torch.nn module in
float64 with the same (rounded) weights and inputs.

Tolerances: fp32 runs 3xTF32 (conftest turns TF32 off), ~1e-6 relative per
step; bf16 rounds h to 8 bits as every step's MMA operand and xp once, so
after 256 steps of a contracting recurrence errors stay at a few 1e-2 (the
same band as tests/helpers.py's TOL for bf16).
"""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fused_rnn

pytestmark = pytest.mark.gpu

CLASSES = {"rnn": (torch.nn.RNN, fused_rnn.RNN), "gru": (torch.nn.GRU, fused_rnn.GRU),
           "lstm": (torch.nn.LSTM, fused_rnn.LSTM)}
B, T, I, H = 37, 256, 64, 128
GPU_TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.bfloat16: dict(atol=4e-2, rtol=4e-2)}


def hidden_size(cell, dtype):
    """H = 128, except fp32 GRU/LSTM: 3xTF32 holds W_hh twice (TF32 part and remainder), 384 KiB for
    the GRU's 3 gate blocks at H = 128, more than a Hopper block's 227 KiB of shared memory
    (kernels.gru.smem_bytes): there the Triton kernels refuse and "auto" takes the stock path."""
    return 64 if dtype == torch.float32 and cell != "rnn" else H


def models(cell, dtype, **options):
    stock_cls, fused_cls = CLASSES[cell]
    torch.manual_seed(0)
    hidden = hidden_size(cell, dtype)
    stock = stock_cls(I, hidden, batch_first=True, **options)
    fused = fused_cls(I, hidden, batch_first=True, backend="triton", **options)
    fused.load_state_dict(stock.state_dict())
    # The reference holds the weights rounded to the run's dtype, in float64.
    stock.load_state_dict({k: v.to(dtype).double() for k, v in stock.state_dict().items()})
    return stock.double(), fused.to("cuda", dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", list(CLASSES))
def test_two_layer_bidirectional_ragged_matches_torch_nn(cell, dtype):
    stock, fused = models(cell, dtype, num_layers=2, bidirectional=True)
    torch.manual_seed(1)
    x = torch.randn(B, T, I).to(dtype)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    x_gpu = x.cuda().requires_grad_()
    assert fused.backend_for(x_gpu) == "triton"
    out, _ = fused(pack_padded_sequence(x_gpu, lengths, batch_first=True, enforce_sorted=False))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    x_ref = x.double().requires_grad_()
    ref, _ = stock(pack_padded_sequence(x_ref, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=T)
    torch.testing.assert_close(out.double().cpu(), ref, **GPU_TOL[dtype])

    cotangent = torch.randn(B, T, 2 * fused.hidden_size, dtype=torch.float64)
    (out.double() * cotangent.cuda()).sum().backward()
    (ref * cotangent).sum().backward()
    scale = x_ref.grad.abs().max().item()
    tol = GPU_TOL[dtype]
    torch.testing.assert_close(x_gpu.grad.double().cpu(), x_ref.grad, atol=tol["atol"] * scale, rtol=tol["rtol"])
    for (name, got), want in zip(fused.named_parameters(), stock.parameters()):
        scale = want.grad.abs().max().item()
        torch.testing.assert_close(got.grad.double().cpu(), want.grad, atol=tol["atol"] * scale, rtol=tol["rtol"],
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("cell", list(CLASSES))
def test_simple_rnn_head_matches_float64_submodules_in_bf16(cell):
    """The generalized seed's fused path (last layer never writes its output) against its own submodules."""
    torch.manual_seed(2)
    model = fused_rnn.SimpleRNN(I, H, 3, cell=cell, num_layers=2, bidirectional=True).to("cuda", torch.bfloat16)
    reference = copy.deepcopy(model).double().cpu()
    reference.backend = reference.rnn.backend = "torch"
    x = torch.randn(B, T, I, device="cuda", dtype=torch.bfloat16)
    assert model.backend_for(x) == "triton"
    with torch.no_grad():
        torch.testing.assert_close(model(x).double().cpu(), reference(x.double().cpu()), **GPU_TOL[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_simple_rnn_fused_head_matches_float64_submodules(cell, dtype, layer_launches):
    """One direction, two layers, ragged lengths: the last layer's kernel runs fc (fused head, O = 5)
    compiled; y and every gradient (fc's too) against the model's own submodules in float64.
    T = 64: the float64 reference on the CPU takes most of these tests' time (up to 218 s at T = 256
    in the H200 run of 2026-11-26), and the head runs once per sequence whatever T is."""
    T = 64
    torch.manual_seed(3)
    hidden = hidden_size(cell, dtype)
    model = fused_rnn.SimpleRNN(I, hidden, 5, cell=cell, num_layers=2, backend="triton").to("cuda", dtype)
    reference = copy.deepcopy(model).double().cpu()
    reference.backend = reference.rnn.backend = "torch"
    x = torch.randn(B, T, I).to(dtype)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    x_gpu = x.cuda().requires_grad_()
    y = model(x_gpu, lengths=lengths)
    assert True in [kw.get("HAS_HEAD") for kw in layer_launches]
    x_ref = x.double().requires_grad_()
    y_ref = reference(x_ref, lengths=lengths)
    tol = GPU_TOL[torch.bfloat16 if dtype == torch.float16 else dtype]
    torch.testing.assert_close(y.double().cpu(), y_ref, **tol)
    dy = torch.randn(B, 5, dtype=torch.float64)
    (y.double() * dy.cuda()).sum().backward()
    (y_ref * dy).sum().backward()
    for (name, got), want in zip([("x", x_gpu), *model.named_parameters()], [x_ref, *reference.parameters()]):
        scale = want.grad.abs().max().item()
        torch.testing.assert_close(got.grad.double().cpu(), want.grad, atol=tol["atol"] * scale, rtol=tol["rtol"],
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrence_op_on_cuda_takes_weights_as_a_model_holds_them(cell):
    """fused_rnn::recurrence called on CUDA by a program traced where "auto" chose the plain path (exported
    on CPU): W_hh, b_hh and the head's fc_w arrive as the model holds them, here transposed views. The
    kernels read fixed strides: results and gradients those of contiguous copies."""
    gates = {"gru": 3, "lstm": 4}[cell]
    hidden, outputs, batch, steps = 64, 5, 19, 33
    g = torch.Generator().manual_seed(4)
    w_hh = torch.randn(hidden, gates * hidden, generator=g).mul(0.1).cuda().t()   # [G·H, H], not contiguous
    fc_w = torch.randn(hidden, outputs, generator=g).cuda().t()                     # [O, H], not contiguous
    b_hh = torch.randn(gates * hidden, 2, generator=g).cuda()[:, 0]                 # [G·H], stride 2
    xp = torch.randn(batch, steps, gates * hidden, generator=g).cuda()
    lengths = torch.randint(1, steps + 1, (batch,), generator=g).cuda()
    results = []
    for contiguous in (False, True):
        weights = [t.contiguous() if contiguous else t for t in (w_hh, b_hh, fc_w)]
        leaves = [t.detach().clone().requires_grad_() if contiguous else t.detach().requires_grad_()
                  for t in (xp, *weights)]
        if not contiguous:   # detach keeps the views' strides: the case is as stated
            assert not leaves[1].is_contiguous() and not leaves[3].is_contiguous()
        y, h_n, _, _, _ = torch.ops.fused_rnn.recurrence(cell, leaves[0], leaves[1], leaves[2], None, None, lengths,
                                                         False, True, False, True, False, leaves[3], None)
        grads = torch.autograd.grad(y.sin().sum() + h_n.square().sum(), leaves)
        results.append((y, h_n, *grads))
    for got, want in zip(*results):
        # (Equal but for the weight-gradient GEMMs' summation order on a strided operand: a stride read
        # wrong gives O(1) differences.)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
