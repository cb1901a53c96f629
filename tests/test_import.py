"""`import fused_rnn` is light and quiet, with or without triton.

Structural checks in a fresh interpreter (which modules the import loads, what
it prints), not timings: the measured cost is in the README. torch._inductor
and torch._dynamo cost ~1 s to import and triton ~0.3 s; fused_rnn loads
triton on the first kernel call and torch.compile loads the other two.
"""

import json

import pytest

from helpers import run_python

HEAVY = ["torch._inductor", "torch._dynamo", "triton"]

# Blocks `import triton` as on a machine without it (sys.modules[name] = None
# makes the import raise ImportError).
NO_TRITON = "import sys; sys.modules['triton'] = None\n"

REPORT = (
    "import sys, json, torch\n"
    "before = {m for m in %r if m in sys.modules}\n"
    "import fused_rnn\n"
    "loaded = [m for m in %r if m in sys.modules and m not in before]\n"
    "print(json.dumps({'loaded': loaded, 'ops': [hasattr(torch.ops.fused_rnn, n) for n in\n"
    "                  ('rnn_linear', 'rnn_linear_bwd_sweep')]}))\n"
) % (HEAVY, HEAVY)


@pytest.mark.parametrize("triton", ["installed", "missing"])
def test_import_is_light_quiet_and_registers_the_ops(triton):
    code = (NO_TRITON if triton == "missing" else "") + REPORT
    out = run_python("-c", code, env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr           # no warning, no log line
    report = json.loads(out.stdout)               # and nothing else on stdout
    assert report["loaded"] == [], f"import fused_rnn loaded {report['loaded']}"
    assert report["ops"] == [True, True]


def test_stock_path_runs_without_triton():
    code = NO_TRITON + (
        "import torch, fused_rnn\n"
        "model = fused_rnn.SimpleRNN(3, 8, 2)\n"
        "x = torch.randn(4, 5, 3)\n"
        "out, _ = model.rnn(x)\n"
        "torch.testing.assert_close(model(x), model.fc(out[:, -1]), atol=0, rtol=0)\n"
        "try:\n"
        "    fused_rnn.rnn_linear(x, *[p.detach() for p in model.parameters()], backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n")
    out = run_python("-c", code, env={"TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr
    assert "triton could not be imported" in out.stdout and "pip install triton" in out.stdout, out.stdout


FAKE_CHECK = """
import torch, fused_rnn
from torch._subclasses.fake_tensor import FakeTensorMode

B, T, I, H, O = 3, 7, 5, 20, 2
SHAPES = ((B, T, I), (H, I), (H, H), (H,), (H,), (O, H), (O,), (B, H))   # x, weights, h0


def op_args(device, dtype, store_hs):
    x, *ws, h0 = [torch.randn(s, device=device, dtype=dtype) for s in SHAPES]
    return (x, *ws, h0, torch.full((B,), T, device=device), False, False, store_hs)


def sweep_args(device, dtype):
    hs, dh_n = torch.rand(B, T, H, device=device), torch.randn(B, H, device=device)
    w_hh, fc_w, dy = [torch.randn(s, device=device, dtype=dtype) for s in ((H, H), (O, H), (B, O))]
    return (hs, w_hh, fc_w, dy, dh_n, torch.full((B,), T, device=device), False, False)


def meta(outputs):
    return [(tuple(t.shape), t.dtype) for t in outputs]


for dtype in (torch.float32, torch.bfloat16):
    for store_hs in (True, False):
        want = meta(torch.ops.fused_rnn.rnn_linear(*op_args("cpu", dtype, store_hs)))
        with FakeTensorMode():
            got = torch.ops.fused_rnn.rnn_linear(*op_args("cuda", dtype, store_hs))
        assert all(t.device.type == "cuda" for t in got)
        assert meta(got) == want, (dtype, store_hs, meta(got), want)
    want = meta(torch.ops.fused_rnn.rnn_linear_bwd_sweep(*sweep_args("cpu", dtype)))
    with FakeTensorMode():
        got = meta(torch.ops.fused_rnn.rnn_linear_bwd_sweep(*sweep_args("cuda", dtype)))
    assert got == want, (dtype, got, want)
print("ok")
"""


def test_ops_fake_on_cuda_tensors_match_the_real_op_on_cpu():
    """The ops' fake (what torch.compile traces on CUDA) gives the outputs' shapes and dtypes.

    Fake CUDA tensors need no GPU, but the kernels must be compiled-mode
    triton (the interpreter's kernels cannot be traced), hence a subprocess
    without TRITON_INTERPRET. The truth is the real op on CPU (the stock math).
    """
    out = run_python("-c", FAKE_CHECK, env={"TRITON_INTERPRET": None})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
