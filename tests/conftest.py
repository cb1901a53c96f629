"""Test set-up: where the kernel runs, poisoned outputs, and weights with nn.RNN's init.

Without CUDA the Triton kernels run through the interpreter on CPU tensors; it
must be switched on before triton is imported, i.e. here, before any test
module imports fused_rnn's kernels.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fused_rnn.kernels import rnn_linear as kernels  # noqa: E402  (after TRITON_INTERPRET)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[1]

# cuDNN's RNNs use TF32 by default (torch.backends.cudnn.allow_tf32 = True), ~1e-3
# relative error; the comparisons with the stock path below need IEEE fp32 on both sides.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

# Tolerances against a float64 loop run on the same (rounded) inputs and weights.
# fp32: IEEE products; what is left is summation order and exp (~1e-7 per step).
# fp16/bf16: on a GPU h is rounded to the dtype as a tl.dot operand every step
# (2^-11 and 2^-8 relative), and y is rounded once at the end.
TOL = {
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (runs the kernel compiled, not interpreted)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every buffer a kernel launch allocates starts as NaN, so an unwritten lane shows."""
    def nan_empty(*args, **kwargs):
        return torch.empty(*args, **kwargs).fill_(float("nan"))
    monkeypatch.setattr(kernels, "new_empty", nan_empty)


def make_params(I, H, O, *, dtype=torch.float32, device=DEVICE, seed=0, nonlinearity="tanh"):
    """(weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias) with nn.RNN / nn.Linear init."""
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(I, H, batch_first=True, nonlinearity=nonlinearity)
    fc = torch.nn.Linear(H, O)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, fc.weight, fc.bias)
    return tuple(p.detach().to(device=device, dtype=dtype) for p in params)


def run_python(*args, env=None, timeout=600):
    """Run ``python *args`` in the checkout's root with the checkout importable.

    env: variables to set for it, None to unset one (TRITON_INTERPRET, say).
    """
    environ = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=timeout)


def as_float64(*tensors):
    return [t.detach().double() if t is not None else None for t in tensors]


@pytest.fixture
def needs_recurrence():
    """fused_rnn.recurrence, the layer driver the fused modules call: skip the test where it is absent."""
    return pytest.importorskip("fused_rnn.recurrence")
