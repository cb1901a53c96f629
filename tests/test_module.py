"""fused_rnn.SimpleRNN as a drop-in for the seed's SimpleRNN; the demo; backend errors."""

import pytest
import torch

import seed_model
from fused_rnn import SimpleRNN
from helpers import DEVICE, TOL, run_python

SEED_KEYS = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "fc.weight", "fc.bias"]


def test_same_seed_same_weights():
    torch.manual_seed(123)
    seed = seed_model.SimpleRNN(10, 20, 1)
    torch.manual_seed(123)
    ours = SimpleRNN(10, 20, 1)
    assert list(ours.state_dict()) == list(seed.state_dict()) == SEED_KEYS
    for k, v in seed.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert ours.hidden_size == 20


@pytest.mark.parametrize("B,T,I,H,O", [(32, 5, 10, 20, 1), (3, 17, 4, 33, 6), (1, 1, 1, 1, 1)])
def test_cpu_output_is_bit_identical_to_seed(B, T, I, H, O):
    torch.manual_seed(B + T)
    seed = seed_model.SimpleRNN(I, H, O)
    ours = SimpleRNN(I, H, O)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(B, T, I)
    expected = seed(x)
    got = ours(x)
    assert torch.equal(got, expected)
    got.sum().backward()                                  # stock path trains as the seed does
    expected.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), seed.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_state_dict_loads_both_ways():
    torch.manual_seed(0)
    seed = seed_model.SimpleRNN(10, 20, 1)
    ours = SimpleRNN(10, 20, 1)
    ours.load_state_dict(seed.state_dict())               # strict: same keys, same shapes
    seed2 = seed_model.SimpleRNN(10, 20, 1)
    seed2.load_state_dict(ours.state_dict())
    x = torch.randn(4, 5, 10)
    assert torch.equal(seed2(x), seed(x))


def test_kernel_module_matches_seed_on_device():
    """The module on the kernel (GPU, or the interpreter on CPU) against the seed on CPU."""
    torch.manual_seed(1)
    seed = seed_model.SimpleRNN(10, 20, 1)
    ours = SimpleRNN(10, 20, 1, backend="triton").to(DEVICE)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(32, 5, 10)
    with torch.no_grad():
        got = ours(x.to(DEVICE))
    assert ours.backend_for(x.to(DEVICE)) == "triton"
    torch.testing.assert_close(got.cpu(), seed(x).detach(), **TOL[torch.float32])


def test_module_h0_and_low_precision():
    torch.manual_seed(2)
    seed = seed_model.SimpleRNN(6, 24, 3)
    ours = SimpleRNN(6, 24, 3, backend="triton").to(DEVICE, torch.bfloat16)
    ours.load_state_dict(seed.state_dict())
    x = torch.randn(9, 8, 6)
    h0 = torch.randn(1, 9, 24) * 0.3
    with torch.no_grad():
        got = ours(x.to(DEVICE, torch.bfloat16), h0.to(DEVICE, torch.bfloat16))
        expected, _ = seed.rnn(x, h0)
        expected = seed.fc(expected[:, -1])
    assert got.dtype == torch.bfloat16
    # bf16 weights and inputs vs the fp32 seed: the inputs' rounding dominates.
    torch.testing.assert_close(got.float().cpu(), expected, atol=5e-2, rtol=5e-2)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        SimpleRNN(2, 3, 1, backend="cudnn")


def test_triton_on_cpu_without_interpreter_says_so():
    code = ("import torch, fused_rnn\n"
            "m = fused_rnn.SimpleRNN(3, 4, 1, backend='triton')\n"
            "try:\n    m(torch.randn(2, 3, 3))\n"
            "except RuntimeError as e:\n    print('ERROR', e)\n")
    out = run_python("-c", code, env={"TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "ERROR" in out.stdout and "TRITON_INTERPRET=1" in out.stdout and "before triton is imported" in out.stdout


def test_demo():
    """`python -m fused_rnn`, as the README runs it: a short summary, checked against the seed model."""
    out = run_python("-m", "fused_rnn", env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    shape_line = next(line for line in lines if line.startswith("output: "))
    assert shape_line.startswith("output: torch.Size([32, 1]); first 4 values "), shape_line
    backend = next(line for line in lines if line.startswith("backend: "))
    diff = next(line for line in lines if line.startswith("max |output - seed model's forward| = "))
    assert float(diff.split("=")[1].split()[0]) < 1e-5
    if torch.cuda.is_available():
        assert backend.startswith("backend: fused Triton kernel on "), backend
    else:
        assert backend.startswith("backend: stock nn.RNN + nn.Linear on cpu (") and "no GPU" in backend, backend
        assert diff.endswith("(both ran the same stock math)"), diff   # not called "fused"
        # The seed notebook's model itself, same seed, same order: the values shown.
        torch.manual_seed(0)
        seed = seed_model.SimpleRNN(10, 20, 1)
        want = seed(torch.randn(32, 5, 10))[:4, 0].tolist()
        shown = [float(v) for v in shape_line.split("values ")[1].split(", ")]
        assert shown == pytest.approx(want, abs=1e-4), (shown, want)
    assert "total 661" in out.stdout and "rnn (RNN) 640, fc (Linear) 21" in out.stdout
    assert len(lines) <= 25, out.stdout        # a summary, not the 32 output rows
