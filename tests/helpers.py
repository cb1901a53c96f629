"""Shared test helpers that are not fixtures: the device, tolerances, weights, the float64 loop, subprocesses.

Importing this module imports no triton: conftest.py switches the Triton
interpreter on before anything imports it.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[1]

# Tolerances against a float64 loop run on the same (rounded) inputs and weights.
# fp32: IEEE products; what is left is summation order and exp (~1e-7 per step).
# fp16/bf16: on a GPU h is rounded to the dtype as a tl.dot operand every step
# (2^-11 and 2^-8 relative), and y is rounded once at the end.
TOL = {
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def load_static_report():
    """benchmarks/static_report.py as a module (it imports triton: call it after conftest.py has run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("static_report", ROOT / "benchmarks" / "static_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_params(I, H, O, *, dtype=torch.float32, device=DEVICE, seed=0, nonlinearity="tanh"):
    """(weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias) with nn.RNN / nn.Linear init."""
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(I, H, batch_first=True, nonlinearity=nonlinearity)
    fc = torch.nn.Linear(H, O)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, fc.weight, fc.bias)
    return tuple(p.detach().to(device=device, dtype=dtype) for p in params)


def as_float64(*tensors):
    return [t.detach().double() if t is not None else None for t in tensors]


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


# The float64 truth for rnn_linear: an explicit Python loop, written from the
# equations and sharing no code with the kernels or with nn.RNN.
def rnn_linear_loop(x, weight_ih, weight_hh, bias_ih, bias_hh, fc_weight, fc_bias, h0=None,
                    lengths=None, nonlinearity="tanh"):
    """y[b] = fc(h_{len_b}[b]) for h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh).

    x: [B, T, I]; h0: [B, H] or None (zeros); lengths: [B] or None (all T).
    Returns (y [B, O], h_n [B, H]); h_n is each sequence's state at its last valid step.
    """
    B, T, _ = x.shape
    H = weight_hh.shape[0]
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = x.new_zeros(B, H) if h0 is None else h0

    def step(x_t, h):
        pre = x_t @ weight_ih.T + h @ weight_hh.T
        if bias_ih is not None:
            pre = pre + bias_ih
        if bias_hh is not None:
            pre = pre + bias_hh
        return act(pre)

    for t in range(T):
        if lengths is None:
            h = step(x[:, t], h)
        else:
            # Only the sequences still running step; the others' states are held
            # and their padding is never read, by the outputs or by any gradient
            # (a torch.where over all rows would send 0 · NaN back through them).
            rows = torch.nonzero(t < lengths.to(x.device)).flatten()
            h = h.index_put((rows,), step(x[rows, t], h[rows]))
    y = h @ fc_weight.T
    if fc_bias is not None:
        y = y + fc_bias
    return y, h


def launch_holds_weights(kw):
    """Whether a recorded recurrence kernel launch (its keyword arguments) holds its weights in registers:
    W_IN_REGISTERS, W_HH_IN_REGISTERS, or 3xTF32 weights split in the kernel (SPLIT_IN_KERNEL)."""
    return bool(kw.get("W_IN_REGISTERS", kw.get("W_HH_IN_REGISTERS")) or kw.get("SPLIT_IN_KERNEL"))


def launch_streams_weights(kw):
    """Whether a recorded launch reads its weights from shared memory every step (the 3xTF32 weight
    split's own launch has no time loop, nor BLOCK_H)."""
    return "BLOCK_H" in kw and not launch_holds_weights(kw)
